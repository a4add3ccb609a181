"""Attacks on `git.verify` by people who can push but lack the role a change needs (issue 11).

Each test builds a real git repository, signs commits with real `ssh-keygen` keys (git's SSH
signatures), runs `reconcile --once` as a subprocess and proves that nothing ran: every task
of these repositories runs on a local machine and its command creates a marker file.
"""

from __future__ import annotations

import subprocess

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


# ------------------------------------------------------------------ 1. trust settings


def test_unsigned_commit_that_turns_verify_off_runs_nothing(repo):
    repo.settings(verify="none")
    repo.task("prod", "evil")
    repo.commit(None, "verify off")
    err = repo.once(3)
    assert "is not signed" in err and "Traceback" not in err
    assert not repo.marker("evil").exists()


def test_verify_off_takes_effect_only_after_an_admin_signed_it(repo):
    repo.settings(verify="none")
    repo.commit("alice", "verify off, signed by an admin")
    repo.once(0)
    repo.task("prod", "later")
    repo.commit(None, "unsigned, after verify was turned off")
    repo.once(0)
    assert repo.marker("later").exists()


def test_verify_flag_overrides_a_repository_that_turned_verify_off(repo):
    repo.settings(verify="none")
    repo.commit("alice", "verify off")
    repo.once(0)
    repo.task("prod", "evil")
    repo.commit(None)
    assert "is not signed" in repo.once(3, "--verify", "range")
    assert not repo.marker("evil").exists()


def test_outsider_commit_pointing_state_at_a_new_store_runs_nothing(tmp_path):
    repo = TrustRepo(tmp_path, state_in_settings=True)
    repo.start()
    repo.settings(state="new.db")
    repo.team("evil", admins=["mallory"])
    repo.write("inventory/machines/evilbox.yaml", "name: evilbox\nteam: evil\ntransport: local\n")
    repo.task("evil", "evil", machine="evilbox")
    repo.commit("mallory", "a store of my own")
    err = repo.once(3)  # a host that takes the store from the commit: refused outright
    assert "must be named by the host" in err and "Traceback" not in err
    assert not repo.marker("evil").exists()
    # A host that names its store judges the commit against it: mallory holds no role.
    err = repo.once(3, env={"RECONCILE_STATE": f"sqlite:///{tmp_path / 'state.db'}"})
    assert "Traceback" not in err and not repo.marker("evil").exists()


def test_state_setting_of_the_commit_is_refused_when_verify_is_on(tmp_path):
    repo = TrustRepo(tmp_path, state_in_settings=True)
    repo.commit("alice", "initial")
    err = repo.once(3, "--trust-anchor", repo.fingerprint("alice"))
    assert (
        "git.verify is in force" in err
        and "state store must be named by the host" in err
        and f"RECONCILE_STATE={repo.state_url}" in err
        and "Traceback" not in err
    ), err
    assert not repo.marker("hello").exists()
    repo.once(0, "--trust-anchor", repo.fingerprint("alice"), env=repo.host_env())
    assert repo.marker("hello").exists()


def test_commit_pointing_state_at_a_store_the_pusher_filled_runs_nothing(tmp_path):
    from tests.support.postgres import fresh_database

    repo = TrustRepo(tmp_path, state_in_settings=True)
    repo.start()
    with fresh_database() as attacker_store:
        # Unsigned: verify off, and the store is the attacker's own PostgreSQL database.
        repo.write(
            "inventory/reconciler.yaml",
            f"state: {attacker_store}\ngit: {{verify: none}}\n"
            "local_machines: {allow_shared_user: true}\n",
        )
        own = repo.commit(None, "verify off, my own store")
        # He fills that store by a pass of his own copy, verify off: its last commit is his.
        copy = tmp_path / "copy"
        subprocess.run(["git", "clone", "-q", str(repo.work), str(copy)], check=True)
        reconcile("--once", "--verify", "none", cwd=copy, check_code=0)
        repo.task("prod", "evil")
        repo.commit(None, "a prod task")
        err = repo.once(3)
        assert "must be named by the host" in err and "Traceback" not in err, err
        assert not repo.marker("evil").exists()
        assert own  # the store's last commit: his own, which turned verify off


def test_a_store_that_never_reconciled_needs_an_anchor_from_outside(tmp_path):
    repo = TrustRepo(tmp_path)
    repo.commit("alice", "initial")
    err = repo.once(3)
    assert "--trust-anchor" in err and "RECONCILE_TRUST_ANCHOR" in err
    assert not repo.marker("hello").exists()


def test_anchor_key_must_have_signed_the_first_commit(tmp_path):
    repo = TrustRepo(tmp_path)
    repo.commit("bob", "initial, by an operator")
    assert "trust anchor" in repo.once(3, "--trust-anchor", repo.fingerprint("alice"))
    assert not repo.marker("hello").exists()


def test_anchor_commit_judges_everything_after_it(tmp_path):
    repo = TrustRepo(tmp_path)
    anchor = repo.commit("alice", "initial")
    repo.task("prod", "evil")
    repo.commit("dan", "a dev operator adds a prod task")
    err = repo.once(3, "--trust-anchor", anchor)
    assert "admin or operator of team prod" in err
    assert not repo.marker("evil").exists()


def test_a_stale_store_is_not_reused_after_the_state_moved_away(tmp_path):
    repo = TrustRepo(tmp_path, state_in_settings=True)
    repo.start()
    repo.settings(state="second.db")
    repo.team("prod", admins=["alice"], operators=[], viewers=[])  # bob loses his role
    repo.commit("alice", "move the store, drop bob")
    second = repo.git("rev-parse", "HEAD")
    repo.once(0, "--trust-anchor", second, env=repo.host_env())
    repo.settings(state="state.db")  # back to the first store, whose last commit trusted bob
    repo.task("prod", "evil")
    repo.commit("bob")
    err = repo.once(3)
    assert "state" in err and "Traceback" not in err
    assert not repo.marker("evil").exists()


# ------------------------------------------------------------------ 2./3. the whole difference


def test_merge_restoring_an_old_team_file_is_judged_against_the_last_reconciled(tmp_path):
    repo = TrustRepo(tmp_path)
    repo.team("prod", admins=["alice", "mallory"], operators=["bob"])
    old = repo.start()
    repo.team("prod", admins=["alice"], operators=["bob", "mallory"])  # mallory demoted
    current = repo.commit("alice", "demote mallory")
    repo.once(0)
    # mallory merges with the old commit as first parent: its team file makes her admin again.
    repo.git("checkout", "-q", old)
    repo.task("prod", "evil")
    repo.git("add", "-A")
    tree = repo.git("write-tree")
    merge = repo.git(
        *repo.signing("mallory"), "commit-tree", tree, "-p", old, "-p", current, "-S", "-m", "merge"
    )
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--ff-only", merge)
    err = repo.once(3)
    assert "admin of team prod" in err and "teams/prod.yaml" in err
    assert not repo.marker("evil").exists()


def test_head_mode_judges_everything_since_the_last_reconciled_commit(tmp_path):
    repo = TrustRepo(tmp_path, verify="head")
    repo.start()
    repo.task("prod", "evil")
    repo.commit(None, "unsigned prod task")
    repo.task("dev", "fine")
    repo.commit("dan", "signed by a dev operator on top")
    err = repo.once(3)
    assert "admin or operator of team prod" in err
    assert not repo.marker("evil").exists() and not repo.marker("fine").exists()


# ------------------------------------------------------------------ 4. byte-exact paths


@pytest.mark.parametrize("file", ["déploy.yaml", 'a"b.yaml', "tab\there.yaml"])
def test_unusual_file_names_need_the_same_role(repo, file):
    repo.task("prod", "evil", file=file)
    repo.commit("dan", "a dev operator adds a prod task under an unusual name")
    err = repo.once(3)
    assert "admin or operator of team prod" in err
    assert not repo.marker("evil").exists()


# ------------------------------------------------------------------ 5. files outside the inventory


def _with_check_script(repo: TrustRepo, paths: str = "") -> None:
    repo.write("scripts/prod/check.sh", "exit 1\n")
    repo.write(
        "inventory/tasks/prod/hello.yaml",
        f"name: hello\nmachines: [box]\ncheck: sh scripts/prod/check.sh\n"
        f"command: touch {repo.marker('hello')}\n",
    )
    if paths:
        repo.settings(extra=paths)
    repo.commit("alice", "a checked task")
    repo.once(0)


def test_viewer_cannot_change_a_script_that_a_prod_check_runs(repo):
    _with_check_script(repo)
    repo.write("scripts/prod/check.sh", f"touch {repo.marker('evil')}\nexit 0\n")
    repo.commit("valerie", "a viewer edits a script")
    err = repo.once(3)
    assert "admin of any team (scripts/prod/check.sh)" in err
    assert not repo.marker("evil").exists()


def test_paths_setting_gives_a_folder_to_a_team(repo):
    _with_check_script(repo, 'paths: {"scripts/prod/**": prod}\n')
    repo.write("scripts/prod/check.sh", "exit 0\n")
    repo.commit("dan", "a dev operator edits prod's script")
    assert "admin or operator of team prod (scripts/prod/check.sh)" in repo.once(3)
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.write("scripts/prod/check.sh", "exit 0\n")
    repo.commit("bob", "prod's operator may")
    repo.once(0)


def test_diff_and_codeowners_show_the_path_rules(repo):
    base = repo.git("rev-parse", "HEAD")
    repo.write("scripts/prod/check.sh", "exit 0\n")
    repo.settings(extra='paths: {"scripts/prod/**": prod}\n')
    repo.commit("alice")
    out = reconcile("diff", base, cwd=repo.work, check_code=0).out
    assert "admin of any team (scripts/prod/check.sh)" in out
    owners = reconcile("codeowners", cwd=repo.work, check_code=0).out
    assert "/scripts/prod/** @alice @bob" in owners
    rules = [line for line in owners.splitlines() if not line.startswith("#")]
    assert rules[0] == "* @alice @dana"  # everything else: an admin of any team


# ------------------------------------------------------------------ 6. the working tree is not read


def test_git_ignored_task_file_does_not_run_under_verify(repo):
    exclude = repo.work / ".git" / "info" / "exclude"
    exclude.write_text("inventory/tasks/prod/evil.yaml\n")
    repo.task("prod", "evil")
    repo.once(0)
    assert not repo.marker("evil").exists()


def test_skip_worktree_edit_does_not_run_under_verify(repo):
    repo.git("update-index", "--skip-worktree", "inventory/tasks/prod/hello.yaml")
    repo.write(
        "inventory/tasks/prod/hello.yaml",
        f"name: hello\nmachines: [box]\ncommand: touch {repo.marker('evil')}\n",
    )
    repo.once(0)
    assert not repo.marker("evil").exists()


def test_skip_worktree_script_edit_does_not_run_under_verify(repo):
    _with_check_script(repo)
    repo.git("update-index", "--skip-worktree", "scripts/prod/check.sh")
    repo.write("scripts/prod/check.sh", f"touch {repo.marker('evil')}\nexit 0\n")
    repo.once(0)
    assert not repo.marker("evil").exists()


# ------------------------------------------------------------------ 14. hostile trees


def test_diff_of_a_tree_with_a_dotdot_entry_is_a_located_error(repo):
    blob = repo.git("hash-object", "-w", "--stdin", input="name: x\n")
    evil = repo.git("mktree", input=f"100644 blob {blob}\t..\n")
    inventory = repo.git("rev-parse", "HEAD:inventory")
    listing = repo.git("ls-tree", inventory) + f"\n040000 tree {evil}\tteams2\n"
    new_inventory = repo.git("mktree", input=listing)
    top = repo.git("mktree", input=f"040000 tree {new_inventory}\tinventory\n")
    commit = repo.git("commit-tree", top, "-p", "HEAD", "-m", "hostile")
    result = reconcile("diff", "HEAD", commit, cwd=repo.work)
    assert result.code == 2, result.err
    assert f"{commit}:inventory/teams2/.." in result.err and "Traceback" not in result.err
    assert not (repo.work / "inventory" / "teams2").exists()


# ------------------------------------------------------------------ the daemon judges alike


def test_daemon_refuses_an_unsigned_push_that_turns_verify_off_and_ignores_local_files(tmp_path):
    import signal
    import sys

    from tests.support.cli import clean_environment
    from tests.support.waiting import wait_until

    repo = TrustRepo(tmp_path)
    repo.settings(extra="poll_interval: 1s\n")
    repo.commit("alice", "initial")
    remote, daemon_dir = tmp_path / "remote.git", tmp_path / "daemon"
    repo.git("init", "-q", "--bare", "-b", "main", str(remote))
    repo.git("remote", "add", "origin", str(remote))
    repo.git("push", "-q", "origin", "main")
    repo.git("clone", "-q", str(remote), str(daemon_dir))
    # Someone with a shell on the host drops an ignored task file into the daemon's checkout.
    (daemon_dir / ".git" / "info" / "exclude").write_text("inventory/tasks/prod/local.yaml\n")
    (daemon_dir / "inventory/tasks/prod/local.yaml").write_text(
        f"name: local\nmachines: [box]\ncommand: touch {repo.marker('local')}\n"
    )
    log = tmp_path / "daemon.log"
    env = clean_environment(
        {
            "RECONCILE_TRUST_ANCHOR": repo.fingerprint("alice"),
            "RECONCILE_STATE": f"sqlite:///{tmp_path / 'state.db'}",
        }
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler"],
        cwd=daemon_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        wait_until(lambda: repo.marker("hello").exists(), timeout=60, message="task hello")
        repo.settings(verify="none", extra="poll_interval: 1s\n")
        repo.task("prod", "evil")
        repo.commit(None, "verify off, unsigned")
        repo.git("push", "-q", "origin", "main")
        wait_until(
            lambda: "is not signed" in log.read_text(),
            timeout=60,
            message="the refusal of the unsigned commit",
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert not repo.marker("evil").exists() and not repo.marker("local").exists()


# ------------------------------------------------------------------ checkouts that stay refused


def test_shallow_clone_without_the_last_reconciled_commit_is_refused(repo):
    for name in ("one", "two"):
        repo.task("prod", name)
        repo.commit("alice", name)
    shallow = repo.root / "shallow"
    repo.git("clone", "-q", "--depth", "1", f"file://{repo.work}", str(shallow))
    result = reconcile("--once", "--state", f"sqlite:///{repo.root / 'state.db'}", cwd=shallow)
    assert result.code == 3 and "fetch-depth: 0" in result.err, result.err
    assert not repo.marker("one").exists() and not repo.marker("two").exists()


def test_detached_head_at_an_unsigned_commit_is_refused(repo):
    repo.task("prod", "evil")
    repo.commit(None, "unsigned")
    repo.git("checkout", "-q", "--detach", "HEAD")
    assert "is not signed" in repo.once(3)
    assert not repo.marker("evil").exists()


def test_untracked_file_in_the_inventory_is_refused_under_verify(repo):
    repo.task("prod", "evil")  # written, never committed
    assert "uncommitted changes" in repo.once(3)
    assert not repo.marker("evil").exists()


# ------------------------------------------------------------------ a worker runs the verified commit


def test_worker_runs_the_verified_commit_not_a_skip_worktree_edit(tmp_path):
    import signal

    from tests.support.cli import spawn
    from tests.support.postgres import fresh_database
    from tests.support.waiting import wait_until

    repo = TrustRepo(tmp_path)
    repo.write("scripts/prod/run.sh", f'echo verified >> "{repo.root / "ledger"}"\nexit 1\n')
    repo.write(
        "inventory/tasks/prod/runner.yaml",
        "name: runner\nmachines: [box]\ncommand: sh scripts/prod/run.sh\nretry: {count: 0}\n",
    )
    repo.commit("alice", "initial")
    ledger = repo.root / "ledger"
    with fresh_database() as url:
        reconcile(
            "--once",
            "--state",
            url,
            "--trust-anchor",
            repo.fingerprint("alice"),
            cwd=repo.work,
            check_code=1,
        )  # runner failed, on purpose
        assert ledger.read_text().split() == ["verified"]
        # The worker's host edits the script behind git's back, then the run is retried.
        repo.git("update-index", "--skip-worktree", "scripts/prod/run.sh")
        repo.write("scripts/prod/run.sh", f'echo edited >> "{ledger}"\n')
        runs = reconcile(
            "queue", "list", "--format", "json", "--state", url, cwd=repo.work, check_code=0
        ).json()
        runs = runs["runs"] if isinstance(runs, dict) else runs
        failed = [r["id"] for r in runs if r["task"].endswith("runner")]
        reconcile("queue", "retry", str(failed[0]), "--state", url, cwd=repo.work, check_code=0)
        assert record_plan(repo.work / "inventory", url), (
            "nothing was enqueued"
        )  # as a planner on another host
        worker = spawn("worker", "--state", url, cwd=repo.work)
        try:
            wait_until(
                lambda: len(ledger.read_text().split()) >= 2 or worker.poll() is not None,
                timeout=60,
                message="the retried run",
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert ledger.read_text().split() == ["verified", "verified"], err


def test_worker_and_accept_history_refuse_a_state_setting_under_verify(tmp_path):
    repo = TrustRepo(tmp_path, state_in_settings=True)
    repo.start()
    for command in (("worker",), ("accept-history", "HEAD", "--reason", "rewrite")):
        err = reconcile(*command, cwd=repo.work, timeout=60, check_code=3).err
        assert "state store must be named by the host" in err and "Traceback" not in err, err
    # Given by the host, the same store is used.
    out = reconcile(
        "accept-history",
        "HEAD",
        "--reason",
        "nothing to accept",
        cwd=repo.work,
        env=repo.host_env(),
        check_code=0,
    ).out
    assert "nothing to accept" in out


def test_daemon_refuses_a_state_setting_under_verify_and_runs_nothing(tmp_path):
    import signal
    import sys

    from tests.support.cli import clean_environment
    from tests.support.waiting import wait_until

    repo = TrustRepo(tmp_path, state_in_settings=True)
    repo.commit("alice", "initial")
    log = tmp_path / "daemon.log"
    env = clean_environment({"RECONCILE_TRUST_ANCHOR": repo.fingerprint("alice")})
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler"],
        cwd=repo.work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        wait_until(
            lambda: "state store must be named by the host" in log.read_text(),
            timeout=60,
            message="the refusal of the state: setting",
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert not repo.marker("hello").exists() and "Traceback" not in log.read_text()
