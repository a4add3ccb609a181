"""A second attack review of `git.verify` (issue 11 items 1-6, issue 12 item 10): what a team
member with push access but no role tries next. Real git, real ssh-keygen signatures, the CLI
as a subprocess; every test failed on the code before its fix."""

from __future__ import annotations

import subprocess
from datetime import UTC

import pytest

from tests.support.cli import reconcile
from tests.support.planning import record_plan
from tests.support.trust_repo import TrustRepo

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path):
    repo = TrustRepo(tmp_path)
    repo.start()
    return repo


def _tree_with_duplicate(repo: TrustRepo, base: str, name: str, link_target: str) -> str:
    """A tree (written with `hash-object --literally`, as a pusher can) holding the entries of
    tree `base` plus two named `name`: a symlink to `link_target` and a folder with `pwned`."""
    blob = repo.git("hash-object", "-w", "--stdin", input="owned\n")
    link = repo.git("hash-object", "-w", "--stdin", input=link_target)
    folder = repo.git("mktree", input=f"100644 blob {blob}\tpwned\n")
    lines = repo.git("ls-tree", base).splitlines()
    lines += [f"120000 blob {link}\t{name}", f"040000 tree {folder}\t{name}"]

    def order(line: str) -> str:  # git's order: a folder sorts as if its name ended in "/"
        meta, entry = line.split("\t")
        return entry + ("/" if meta.startswith("040000") else "")

    raw = b""
    for line in sorted(lines, key=order):
        meta, entry = line.split("\t")
        mode, _kind, sha = meta.split()
        raw += f"{int(mode, 8):o} {entry}".encode() + b"\0" + bytes.fromhex(sha)
    return (
        subprocess.run(
            ["git", "hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
            cwd=repo.work,
            input=raw,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )


def test_unsigned_tree_with_a_symlink_and_a_folder_of_one_name_writes_nothing_outside(repo):
    outside = repo.root / "outside"
    outside.mkdir()
    tree = _tree_with_duplicate(repo, "HEAD^{tree}", "evil", str(outside))
    commit = repo.git("commit-tree", tree, "-p", "HEAD", "-m", "crafted tree, unsigned")
    repo.git("update-ref", "refs/heads/main", commit)
    err = repo.once(2)
    assert "evil" in err and "Traceback" not in err
    assert list(outside.iterdir()) == []


def test_diff_of_a_tree_with_a_symlink_and_a_folder_of_one_name_writes_nothing_outside(repo):
    outside = repo.root / "outside"
    outside.mkdir()
    # the same trick inside the inventory folder, which `diff` exports
    inventory = _tree_with_duplicate(repo, "HEAD:inventory", "evil", str(outside))
    top = repo.git("mktree", input=f"040000 tree {inventory}\tinventory\n")
    commit = repo.git("commit-tree", top, "-p", "HEAD", "-m", "crafted tree")
    result = reconcile("diff", "HEAD", commit, cwd=repo.work, check_code=2)
    assert "Traceback" not in result.err
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------ the trust anchor


def test_anchor_given_as_a_short_commit_id_cannot_be_shadowed_by_a_pushed_tag(tmp_path):
    repo = TrustRepo(tmp_path)
    first = repo.commit("alice", "initial")
    repo.task("prod", "evil")
    evil = repo.commit(None, "unsigned prod task")
    repo.git("tag", first[:12], evil)  # a tag named like the admin's short commit id
    err = repo.once(2, "--trust-anchor", first[:12])
    assert "full commit id" in err and "Traceback" not in err
    assert not repo.marker("evil").exists()


def test_anchor_key_file_inside_the_repository_is_refused(tmp_path):
    repo = TrustRepo(tmp_path)
    repo.team("evil", admins=["mallory"])
    repo.write("keys/admin.pub", repo.public("mallory") + "\n")  # the commit names its anchor
    repo.write("inventory/machines/evilbox.yaml", "name: evilbox\nteam: evil\ntransport: local\n")
    repo.task("evil", "evil", machine="evilbox")
    repo.commit("mallory", "initial, with its own anchor key file")
    err = repo.once(2, "--trust-anchor", "keys/admin.pub")
    assert "inside the repository" in err and "Traceback" not in err
    assert not repo.marker("evil").exists()


# ------------------------------------------------------------------ a worker and git.verify


def test_worker_started_before_verify_was_turned_on_runs_no_unverified_script(tmp_path):
    import signal

    from tests.support.cli import spawn
    from tests.support.postgres import fresh_database
    from tests.support.waiting import wait_until

    repo = TrustRepo(tmp_path, verify="none")
    ledger = repo.root / "ledger"
    repo.write("scripts/prod/run.sh", f'echo verified >> "{ledger}"\nexit 1\n')
    repo.write(
        "inventory/tasks/prod/runner.yaml",
        "name: runner\nmachines: [box]\ncommand: sh scripts/prod/run.sh\nretry: {count: 0}\n",
    )
    repo.commit("alice", "initial, verify off")
    with fresh_database() as url:

        def retry_runner() -> None:
            runs = reconcile(
                "queue", "list", "--format", "json", "--state", url, cwd=repo.work, check_code=0
            ).json()
            runs = runs["runs"] if isinstance(runs, dict) else runs
            last = max(r["id"] for r in runs if r["task"].endswith("runner"))
            reconcile("queue", "retry", str(last), "--state", url, cwd=repo.work, check_code=0)
            assert record_plan(repo.work / "inventory", url), "nothing was enqueued"

        reconcile("--once", "--state", url, cwd=repo.work, check_code=1)  # runner fails
        worker = spawn("worker", "--state", url, cwd=repo.work)  # follows the working tree
        try:
            retry_runner()  # proves the worker is up (and following the working tree)
            wait_until(
                lambda: len(ledger.read_text().split()) >= 2 or worker.poll() is not None,
                timeout=60,
                message="the worker to run the first retry",
            )
            repo.settings(verify="range")
            repo.commit("alice", "verify on, signed by an admin")
            reconcile("--once", "--state", url, cwd=repo.work, check_code=0)
            repo.write("scripts/prod/run.sh", f'echo unverified >> "{ledger}"\n')
            repo.commit(None, "unsigned script change")
            reconcile("--once", "--state", url, cwd=repo.work, check_code=3)  # refused
            retry_runner()
            wait_until(
                lambda: len(ledger.read_text().split()) >= 3 or worker.poll() is not None,
                timeout=30,
                message="the worker to run the retry or to stop",
            )
        except AssertionError:
            pass  # the worker ran nothing and stayed up: judged below
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert ledger.read_text().split() == ["verified", "verified"], err
    assert worker.returncode == 3 and "git.verify" in err, err


# ------------------------------------------------------------------ merges


def test_merge_that_restores_a_superseded_version_answers_for_it_itself(repo):
    repo.write(
        "inventory/tasks/prod/hello.yaml",
        f"name: hello\nmachines: [box]\ncommand: touch {repo.marker('old')}\n",
    )
    old = repo.commit("bob", "prod operator: a first version")
    repo.write(
        "inventory/tasks/prod/hello.yaml",
        f"name: hello\nmachines: [box]\ncommand: touch {repo.marker('fixed')}\n",
    )
    fixed = repo.commit("bob", "prod operator: the fix")
    merge = repo.git(
        *repo.signing("dan"),
        "commit-tree",
        "-S",
        f"{old}^{{tree}}",
        "-p",
        fixed,
        "-p",
        old,
        "-m",
        "dev operator: merge that takes the superseded version",
    )
    repo.git("reset", "-q", "--hard", merge)
    err = repo.once(3)
    assert "admin or operator of team prod" in err and "Traceback" not in err
    assert not repo.marker("old").exists()


# ------------------------------------------------------------------ the state location


def test_state_setting_naming_a_store_file_the_commit_itself_holds_is_refused(tmp_path):
    from datetime import datetime

    from reconciler.adapters.store.factory import open_store

    repo = TrustRepo(tmp_path, state_in_settings=True)  # the host relies on `state:`
    repo.start()
    # Commit 1 (unsigned): turn verify off, name a store inside the repository, add a prod task.
    repo.write(
        "inventory/reconciler.yaml",
        "state: sqlite:///forged/state.db\n"
        "git: {verify: none}\nlocal_machines: {allow_shared_user: true}\n",
    )
    repo.task("prod", "evil")
    first = repo.commit(None, "verify off, my own store")
    # Commit 2 (unsigned): that store, forged to say commit 1 was the last one reconciled.
    forged = open_store(f"sqlite:///{repo.work / 'forged' / 'state.db'}", create=True)
    forged.record_commit(first, datetime.now(UTC))
    forged.close()
    repo.commit(None, "the forged store")
    err = repo.once(3)
    assert "forged/state.db" in err and "Traceback" not in err
    assert not repo.marker("evil").exists()


def test_a_stale_store_from_before_verify_was_on_is_not_reused(tmp_path):
    repo = TrustRepo(tmp_path, verify="none", state_in_settings=True)
    repo.commit(None, "initial, verify off")
    repo.once(0)  # the first store's last commit: verify off
    repo.settings(verify="range", state="second.db")
    second = repo.commit("alice", "verify on, in a new store")
    repo.once(0, "--trust-anchor", second, env=repo.host_env())
    repo.settings(verify="range", state="state.db")  # back to the store whose L had verify off
    repo.task("prod", "evil")
    repo.commit(None, "unsigned")
    err = repo.once(3)
    assert "state" in err and "Traceback" not in err
    assert not repo.marker("evil").exists()


# ------------------------------------------------------------------ submodules


def test_gitlink_by_a_dev_operator_is_refused_for_its_role_not_an_internal_error(repo):
    head = repo.git("rev-parse", "HEAD")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{head},inventory/tasks/dev/sub")
    repo.git(*repo.signing("dan"), "commit", "-S", "-q", "-m", "a gitlink")
    (repo.work / "inventory" / "tasks" / "dev" / "sub").mkdir(parents=True)  # as a clone leaves it
    err = repo.once(3)
    assert "admin of any team (inventory/tasks/dev/sub)" in err, err
    assert "internal error" not in err and "Traceback" not in err
