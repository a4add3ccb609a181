"""`reconcile diff BASE [HEAD]` as a user runs it: a real git repository, real vault files.

The golden cases of tests/cases/diff/ are committed as two commits (base, then head) and
`reconcile diff HEAD~1 HEAD` must print their expected.txt, expected.json and expected.md,
once the two real commit ids are replaced by the placeholders the unit test renders with.
Vaults are encrypted here to an identity generated for the test; the diff names keys only.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from reconciler.adapters.vault import age, team_vault
from tests.support.cli import reconcile
from tests.support.diff_cases import BASE_COMMIT, CASES, HEAD_COMMIT, case_dirs, vault_plaintexts

FORMATS = {"text": "expected.txt", "json": "expected.json", "markdown": "expected.md"}


# --------------------------------------------------------------------------- a repository


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity and no signing; returns stdout."""
    return subprocess.run(
        [
            "git",
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class Repo:
    """A git repository whose inventory/ is replaced commit by commit."""

    def __init__(self, root: Path):
        self.root = root
        self.inventory = root / "inventory"
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q")

    def commit(
        self,
        source: Path | None,
        message: str,
        vaults: dict[str, bytes] | None = None,
        extra: dict[str, str] | None = None,
    ) -> str:
        """Make inventory/ a copy of `source` (plus vault files and extra files), commit it
        and return the commit id."""
        shutil.rmtree(self.inventory, ignore_errors=True)
        if source is not None:
            shutil.copytree(source, self.inventory)
        for team, data in (vaults or {}).items():
            path = self.inventory / "vaults" / f"{team}.age"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for relative, text in (extra or {}).items():
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        # Forget the index: a copied file of the same size and mtime as the one it replaces
        # would otherwise look unchanged to git's stat check.
        git(self.root, "rm", "-r", "-q", "--cached", "--ignore-unmatch", ".")
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    def diff(self, *args: str, code: int | None = 0, env: dict | None = None):
        return reconcile("diff", *args, cwd=self.root, check_code=code, env=env)


@pytest.fixture
def identity(tmp_path: Path) -> tuple[Path, age.X25519Identity]:
    key = age.generate_x25519()
    path = tmp_path / "key.txt"
    path.write_text(key.to_bech32() + "\n")
    return path, key


def encrypted_vaults(case: Path, key: age.X25519Identity) -> tuple[dict, dict]:
    """Each side's vault files; a vault whose plaintext did not change keeps its bytes."""
    plain = vault_plaintexts(case)
    recipients = [key.recipient()]
    encrypt = lambda secrets: age.encrypt(team_vault.encode(secrets), recipients, armor=True)  # noqa: E731
    base = {team: encrypt(secrets) for team, secrets in plain["base"].items()}
    head = {
        team: base[team] if plain["base"].get(team) == secrets else encrypt(secrets)
        for team, secrets in plain["head"].items()
    }
    return base, head


def normalise(text: str, base: str, head: str) -> str:
    """The real commit ids replaced by the unit test's placeholders, and the roles a change
    requires (read from git by the command, which the pure golden files cannot know) left
    out: `test_diff_names_the_roles_a_change_requires` checks those."""
    for real, fake in ((base, BASE_COMMIT), (head, HEAD_COMMIT)):
        text = text.replace(real, fake).replace(real[:7], fake[:7])
    text = re.sub(r',\n  "requires": \[[^\]]*\]', "", text)
    return re.sub(
        r"\n\n(Signing this change takes|\*\*Roles this change requires)[^\n]*"
        r"(\n(  |- )[^\n]*)*",
        "",
        text,
    )


# --------------------------------------------------------------------------- golden cases


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_diff_between_two_commits_prints_the_golden_files(case: Path, tmp_path, identity):
    key_file, key = identity
    base_vaults, head_vaults = encrypted_vaults(case, key)
    repo = Repo(tmp_path / "repo")
    base = repo.commit(case / "base", "base", base_vaults)
    head = repo.commit(case / "head", "head", head_vaults)
    for fmt, golden in FORMATS.items():
        result = repo.diff("HEAD~1", "HEAD", "--format", fmt, "--identity", str(key_file))
        assert normalise(result.out, base, head) == (case / golden).read_text(), fmt
        assert result.err == ""


@pytest.mark.parametrize(
    "case, needed",
    [
        ("role-changed", "admin of team"),
        ("command-changed", "admin or operator of team"),
    ],
)
def test_diff_names_the_roles_a_change_requires(case, needed, tmp_path, identity):
    key_file, key = identity
    base_vaults, head_vaults = encrypted_vaults(CASES / case, key)
    repo = Repo(tmp_path / "repo")
    repo.commit(CASES / case / "base", "base", base_vaults)
    repo.commit(CASES / case / "head", "head", head_vaults)
    data = json.loads(repo.diff("HEAD~1", "HEAD", "--format", "json").out)
    assert any(needed in line for line in data["requires"]), data["requires"]
    markdown = repo.diff("HEAD~1", "HEAD", "--format", "markdown").out
    assert "**Roles this change requires**" in markdown


def test_without_an_identity_a_changed_vault_is_only_changed(tmp_path, identity):
    case = next(c for c in case_dirs() if c.name == "vault-key-changed")
    base_vaults, head_vaults = encrypted_vaults(case, identity[1])
    repo = Repo(tmp_path / "repo")
    repo.commit(case / "base", "base", base_vaults)
    repo.commit(case / "head", "head", head_vaults)
    data = repo.diff("HEAD~1", "--format", "json").json()  # HEAD is the default
    assert data["vaults"]["changed"] == ["ops", "web"]
    assert [f["keys"] for f in data["vaults"]["files"]] == [None, None]
    assert "pass --identity" in repo.diff("HEAD~1").out


def test_an_identity_that_is_no_recipient_names_no_keys_and_still_exits_0(tmp_path, identity):
    case = next(c for c in case_dirs() if c.name == "vault-key-changed")
    base_vaults, head_vaults = encrypted_vaults(case, identity[1])
    repo = Repo(tmp_path / "repo")
    repo.commit(case / "base", "base", base_vaults)
    repo.commit(case / "head", "head", head_vaults)
    other = tmp_path / "other.txt"
    other.write_text(age.generate_x25519().to_bech32() + "\n")
    out = repo.diff("HEAD~1", "HEAD", "--identity", str(other)).out
    assert "none of your identities can decrypt it" in out


# --------------------------------------------------------------------------- errors


def _small_repo(tmp_path: Path) -> Repo:
    case = next(c for c in case_dirs() if c.name == "command-changed")
    repo = Repo(tmp_path / "repo")
    repo.commit(case / "base", "base")
    repo.commit(case / "head", "head")
    return repo


def test_unknown_revision_is_exit_3_naming_it(tmp_path):
    result = _small_repo(tmp_path).diff("no-such-branch", code=3)
    assert "unknown revision 'no-such-branch'" in result.err and result.out == ""
    assert "Traceback" not in result.err


def test_outside_a_git_repository_is_exit_3(tmp_path):
    (tmp_path / "inventory").mkdir()
    result = reconcile("diff", "HEAD~1", cwd=tmp_path, check_code=3)
    assert "not inside a git repository" in result.err


def test_invalid_inventory_at_a_revision_is_exit_2_located_at_that_revision(tmp_path):
    repo = _small_repo(tmp_path)
    (repo.inventory / "tasks" / "ops" / "deploy.yaml").write_text("name: deploy\npriority: 9\n")
    git(repo.root, "commit", "-q", "-am", "broken")
    result = repo.diff("HEAD~1", "HEAD", code=2)
    lines = result.err.splitlines()
    assert lines and all(
        line.startswith("error: HEAD:inventory/tasks/ops/deploy.yaml:") for line in lines
    ), result.err
    assert "/tmp" not in result.err and "reconcile-diff-" not in result.err


def test_a_committed_symlink_is_refused_as_in_a_working_tree_and_never_followed(tmp_path):
    repo = _small_repo(tmp_path)
    (repo.inventory / "tasks" / "ops" / "stolen.yaml").symlink_to("/etc/passwd")
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-qm", "symlink")
    result = repo.diff("HEAD~1", code=2)
    assert "HEAD:inventory/tasks/ops/stolen.yaml: symbolic links are not allowed" in result.err
    assert "root:" not in result.err + result.out


def test_uncommitted_changes_are_not_part_of_the_diff(tmp_path):
    repo = _small_repo(tmp_path)
    (repo.inventory / "tasks" / "ops" / "new.yaml").write_text(
        "name: new\nmachines: [web-1]\ncommand: echo new\n"
    )
    assert repo.diff("HEAD", "HEAD", "--format", "json").json()["tasks"]["added"] == []


def test_an_inventory_created_in_head_shows_everything_added(tmp_path):
    case = next(c for c in case_dirs() if c.name == "removed")
    repo = Repo(tmp_path / "repo")
    repo.commit(None, "empty", extra={"README.md": "hello\n"})
    repo.commit(case / "head", "inventory")
    result = repo.diff("HEAD~1", "--format", "json")
    assert result.json()["tasks"]["added"] == ["ops/keep"]
    assert "does not exist" in result.err


def test_inventory_option_names_a_folder_elsewhere_in_the_repository(tmp_path):
    case = next(c for c in case_dirs() if c.name == "removed")
    repo = Repo(tmp_path / "repo")
    shutil.copytree(case / "base", repo.root / "deploy" / "inv")
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-qm", "base")
    (repo.root / "deploy" / "inv" / "tasks" / "ops" / "cleanup.yaml").unlink()
    git(repo.root, "commit", "-qam", "head")
    result = reconcile(
        "diff",
        "HEAD~1",
        "--inventory",
        "inv",
        "--format",
        "json",
        cwd=repo.root / "deploy",
        check_code=0,
    )
    assert result.json()["tasks"]["removed"] == ["ops/cleanup"]


# --------------------------------------------------------------------------- --state


def test_state_says_which_changed_tasks_already_ran_and_diff_creates_no_store(tmp_path):
    repo = Repo(tmp_path / "repo")
    team = "name: ops\n"
    machine = "{name: box, team: ops, transport: local}\n"
    task = "name: hello\nmachines: [box]\ncommand: echo {}\n"

    def files(word):
        return {
            "inventory/teams/ops.yaml": team,
            "inventory/machines/box.yaml": machine,
            "inventory/tasks/ops/hello.yaml": task.format(word),
        }

    repo.commit(None, "base", extra=files("one"))
    repo.commit(None, "head", extra=files("two"))
    state = tmp_path / "state.db"
    url = f"sqlite:///{state}"
    never = repo.diff("HEAD~1", "--format", "json", "--state", url).json()
    assert never["runs"][0]["ran"] is None and not state.exists()
    reconcile("--once", "--state", url, cwd=repo.root, check_code=0)
    ran = repo.diff("HEAD~1", "--format", "json", "--state", url).json()
    assert ran["runs"][0]["ran"]["status"] == "succeeded"
    assert ran["tasks"]["changed"][0]["ran"][0]["machine"] == "box"
    text = repo.diff("HEAD~1", env={"RECONCILE_STATE": url}).out
    assert "ALREADY RAN" in text and "succeeded (run 1)" in text
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_markdown_of_no_change_is_one_line(tmp_path):
    repo = _small_repo(tmp_path)
    out = repo.diff("HEAD", "HEAD", "--format", "markdown").out
    assert out.count("\n") == 1 and "no changes to the desired state" in out
    assert yaml.safe_load(repo.diff("HEAD", "--format", "json").out)["tasks"]["changed"] == []
