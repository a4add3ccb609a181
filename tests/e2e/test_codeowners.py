"""`reconcile codeowners` read by real CODEOWNERS matchers (issue 19).

The file must name paths from the git repository's root whatever the working directory and
`--inventory`, and give every file the owners the signing rules (`git.verify`) require, for
every layout `validate` accepts: a team file holding two teams, a team file named unlike its
team, a task outside `tasks/<team>/` with `team:`, nested task folders; files that do not
exist yet get a fallback owner. Two matchers judge it: the PyPI package `codeowners` (a port of
hmarr/codeowners, GitHub's matching rules; in the `[test]` extra) and the npm package
`@snyk/github-codeowners` (its `audit --unloved` lists the files nobody owns; `.ci/run`
installs it). The signing rules' own answer is `reconcile diff --format json` (`requires`).
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.cli import reconcile
from tests.support.integration import missing, require_binary

ROOT = Path(__file__).resolve().parents[2]
SNYK = ROOT / ".ci" / "npm" / "node_modules" / ".bin" / "github-codeowners"
INVENTORY = "eco/proj/inventory"

FILES = {
    "README.md": "# a project\n",
    "scripts/prod/check.sh": "exit 0\n",
    f"{INVENTORY}/.gitattributes": "vaults/*.age -diff\n",
    f"{INVENTORY}/reconciler.yaml": 'paths: {"scripts/prod/**": prod}\n',
    # Two teams in one file, named after neither.
    f"{INVENTORY}/teams/people.yaml": """\
        teams:
          - name: prod
            members:
              - {name: alice, role: admin}
              - {name: bob, role: operator}
              - {name: vic, role: viewer}
          - name: dev
            members: [{name: carol, role: admin}, {name: dan, role: operator}]
        """,
    # A team file named unlike its team.
    f"{INVENTORY}/teams/operations.yaml": """\
        name: ops
        members: [{name: erin, role: admin}, {name: frank, role: operator}]
        """,
    f"{INVENTORY}/machines/all.yaml": """\
        machines:
          - {name: p1, team: prod, transport: local, user: nobody}
          - {name: d1, team: dev, transport: local, user: nobody}
        """,
    f"{INVENTORY}/machines/o1.yaml": "{name: o1, team: ops, transport: local, user: nobody}\n",
    # A task outside tasks/<team>/, naming its team.
    f"{INVENTORY}/tasks/web.yaml": "{name: web, team: dev, machines: [d1], command: 'true'}\n",
    f"{INVENTORY}/tasks/prod/x.yaml": "{name: x, machines: [p1], command: 'true'}\n",
    f"{INVENTORY}/tasks/ops/nested/deep.yaml": "{name: deep, machines: [o1], command: 'true'}\n",
}
ADMINS = {"@alice", "@carol", "@erin"}
OPERATORS = ADMINS | {"@bob", "@dan", "@frank"}
# Hand-written: who the signing rules let change each path (CODEOWNERS: any one of them).
EXPECTED = {
    "README.md": ADMINS,
    "scripts/prod/check.sh": {"@alice", "@bob"},
    ".github/CODEOWNERS": ADMINS,
    f"{INVENTORY}/.gitattributes": ADMINS,
    f"{INVENTORY}/reconciler.yaml": ADMINS,
    f"{INVENTORY}/teams/people.yaml": {"@alice", "@carol"},
    f"{INVENTORY}/teams/operations.yaml": {"@erin"},
    f"{INVENTORY}/machines/all.yaml": {"@alice", "@bob", "@carol", "@dan"},
    f"{INVENTORY}/machines/o1.yaml": {"@erin", "@frank"},
    f"{INVENTORY}/tasks/web.yaml": {"@carol", "@dan"},
    f"{INVENTORY}/tasks/prod/x.yaml": {"@alice", "@bob"},
    f"{INVENTORY}/tasks/ops/nested/deep.yaml": {"@erin", "@frank"},
    f"{INVENTORY}/vaults/prod.age": {"@alice"},
    f"{INVENTORY}/vaults/ops.age": {"@erin"},
    # Files that do not exist yet: the fallback rules.
    f"{INVENTORY}/teams/new.yaml": ADMINS,
    f"{INVENTORY}/machines/new.yaml": OPERATORS,
    f"{INVENTORY}/tasks/new.yaml": OPERATORS,
    f"{INVENTORY}/tasks/dev/new.yaml": {"@carol", "@dan"},
    f"{INVENTORY}/vaults/gone.age": ADMINS,
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "inventory")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo", FILES)
    reconcile("--inventory", INVENTORY, "validate", cwd=root, check_code=0)
    return root


def matcher(text: str):
    try:
        from codeowners import CodeOwners
    except ImportError:
        missing("the PyPI package 'codeowners' is not installed (pip install -e '.[test]')")
    rules = CodeOwners(text)
    return lambda path: {owner for _kind, owner in rules.of(path)}


def test_paths_are_from_the_repository_root_whatever_the_working_directory(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runs = {
        "root": reconcile("--inventory", INVENTORY, "codeowners", cwd=repo, check_code=0),
        "inventory, --inventory .": reconcile(
            "--inventory", ".", "codeowners", cwd=repo / INVENTORY, check_code=0
        ),
        "a sub-folder": reconcile(
            "--inventory", "proj/inventory", "codeowners", cwd=repo / "eco", check_code=0
        ),
        "another folder": reconcile(
            "--inventory", str(repo / INVENTORY), "codeowners", cwd=elsewhere, check_code=0
        ),
        "a nested task folder": reconcile(
            "--inventory", "../../..", "codeowners", cwd=repo / INVENTORY / "tasks/ops/nested"
        ),
    }
    texts = {where: run.out for where, run in runs.items()}
    assert len(set(texts.values())) == 1, texts
    text = texts["root"]
    assert f"/{INVENTORY}/teams/people.yaml " in text
    paths = [line.split()[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert all(p == "*" or p.startswith(("/scripts/", f"/{INVENTORY}/")) for p in paths), paths


def test_every_path_is_owned_as_the_signing_rules_say(repo):
    text = reconcile("--inventory", INVENTORY, "codeowners", cwd=repo, check_code=0).out
    owners = matcher(text)
    wrong = {p: owners(p) for p, want in EXPECTED.items() if owners(p) != want}
    assert wrong == {}, text
    assert "@vic" not in text  # a viewer signs nothing


def test_the_owners_are_the_signers_reconcile_diff_asks_for(repo):
    """The signing rules' own answer for a change touching every file (`reconcile diff`),
    against the matcher's owners of each file: the same people, for every path."""
    (repo / ".github").mkdir()
    reconcile("--inventory", INVENTORY, "codeowners", "-o", ".github/CODEOWNERS", cwd=repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "codeowners")
    base = git(repo, "rev-parse", "HEAD").strip()
    owners = matcher((repo / ".github/CODEOWNERS").read_text())
    for relative in git(repo, "ls-files").split():
        with open(repo / relative, "a") as handle:
            handle.write("\n# changed\n")
    git(repo, "commit", "-q", "-a", "-m", "every file")
    out = reconcile("--inventory", INVENTORY, "diff", base, "HEAD", "--format", "json", cwd=repo)
    needed = _signers(json.loads(out.out)["requires"])
    assert set(needed) == set(git(repo, "ls-files").split())
    assert {p: owners(p) for p in needed} == needed


def _signers(requires: list[str]) -> dict[str, set[str]]:
    """Path -> every member holding a role one of its requirements asks for."""
    members = {
        "prod": {"admin": {"@alice"}, "operator": {"@bob"}},
        "dev": {"admin": {"@carol"}, "operator": {"@dan"}},
        "ops": {"admin": {"@erin"}, "operator": {"@frank"}},
    }
    found: dict[str, set[str]] = {}
    for line in requires:
        roles, team, path = re.fullmatch(r"(.+) of (any team|team \S+) \((.+)\)", line).groups()
        teams = list(members) if team == "any team" else [team.removeprefix("team ")]
        who = {m for t in teams for r in roles.split(" or ") for m in members[t][r]}
        found.setdefault(path, set()).update(who)
    return found


def test_no_file_is_unloved_for_snyk_github_codeowners(repo):
    tool = require_binary("github-codeowners", str(SNYK))
    (repo / ".github").mkdir()
    reconcile("--inventory", INVENTORY, "codeowners", "-o", ".github/CODEOWNERS", cwd=repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "codeowners")
    unloved = subprocess.run(
        [tool, "audit", "--only-git", "--unloved"], cwd=repo, capture_output=True, text=True
    )
    assert unloved.returncode == 0 and unloved.stdout.strip() == "", unloved
    every = subprocess.run(
        [tool, "who", "--output", "jsonl", *EXPECTED], cwd=repo, capture_output=True, text=True
    )
    assert every.returncode == 0, every.stderr
    found = {
        record["path"]: set(record["owners"])
        for record in map(json.loads, every.stdout.splitlines())
    }
    assert found == EXPECTED


def test_an_inventory_at_the_repository_root_and_odd_file_names(tmp_path):
    files = {
        "reconciler.yaml": "{}\n",
        "teams/my team.yaml": "name: prod\nmembers: [{name: alice, role: admin}]\n",
        "teams/dev[1].yaml": "name: dev\nmembers: [{name: carol, role: admin}]\n",
        "machines/box #1.yaml": "{name: box, team: prod, transport: local, user: nobody}\n",
        "tasks/d\u00e9ploy*.yaml": "{name: x, team: prod, machines: [box], command: 'true'}\n",
    }
    root = make_repo(tmp_path / "repo", files)
    result = reconcile("codeowners", cwd=root / "teams", env={"RECONCILE_INVENTORY": ".."})
    assert result.code == 0, result.err
    owners = matcher(result.out)
    assert owners("teams/my team.yaml") == {"@alice"}
    assert owners("teams/dev[1].yaml") == {"@carol"}
    assert owners("teams/dev1.yaml") == {"@alice", "@carol"}  # no character class
    assert owners("machines/box #1.yaml") == {"@alice"}
    assert owners("tasks/d\u00e9ploy*.yaml") == {"@alice"}
    assert owners("tasks/d\u00e9ploy-other.yaml") == {"@alice", "@carol"}  # `*` is literal


def test_outside_a_git_repository_paths_start_at_the_folder_holding_it(project):
    project.write("teams/ops.yaml", "name: ops\nmembers: [{name: alice, role: operator}]\n")
    result = project.run("codeowners", code=0)
    owners = matcher(result.out)
    assert owners("inventory/tasks/ops/t.yaml") == {"@alice"}
    assert owners("inventory/teams/ops.yaml") == set()  # no one is an admin: said, not hidden
    assert "is in no git repository" in result.err
    assert "no member is admin of team ops, which inventory/" in result.err
    assert "no member is admin of any team, which inventory/reconciler.yaml needs" in result.err
