"""The GitOps loop with real git repositories: a bare remote, the daemon's clone, an author's
clone. Pushes are picked up, rewritten history is refused, late CI runs are refused, and a
stop signal is honoured with a grace period."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.alert_receiver import AlertReceiver
from tests.support.cli import clean_environment, reconcile
from tests.support.git_repos import GIT_ENV, Repos, git
from tests.support.waiting import wait_until


@pytest.fixture
def repos(tmp_path):
    return Repos(tmp_path)


def start_daemon(cwd: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=clean_environment(GIT_ENV),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def test_a_pushed_task_runs_within_a_few_poll_intervals(repos, tmp_path):
    daemon = start_daemon(repos.daemon, tmp_path / "daemon.log")
    try:
        wait_until(lambda: "a" in repos.ledger_lines(), timeout=30, message="task a")
        repos.task("b")
        repos.push("add b")
        wait_until(lambda: "b" in repos.ledger_lines(), timeout=30, message="pushed task b")
    finally:
        assert stop(daemon) == 0
    assert repos.ledger_lines() == ["a", "b"]


def test_a_force_push_back_in_history_is_refused_and_runs_nothing(repos, tmp_path):
    log = tmp_path / "daemon.log"
    daemon = start_daemon(repos.daemon, log)
    try:
        wait_until(lambda: "a" in repos.ledger_lines(), timeout=30, message="task a")
        repos.task("b")
        repos.push("add b")
        wait_until(lambda: "b" in repos.ledger_lines(), timeout=30, message="task b")
        git(repos.author, "reset", "-q", "--hard", "HEAD~1")  # rewrite: drop b, add c
        repos.task("c")
        repos.push("add c instead", "--force")
        wait_until(lambda: "refusing" in log.read_text(), timeout=30, message="the refusal")
    finally:
        assert stop(daemon) == 0
    assert "c" not in repos.ledger_lines()
    assert "not a fast-forward" in log.read_text()


def test_a_late_once_for_an_older_commit_exits_3(repos, tmp_path):
    state = f"sqlite:///{tmp_path / 'state.db'}"
    repos.task("b")
    repos.push("add b")
    git(repos.daemon, "pull", "-q", "origin", "main")
    reconcile("--once", "--state", state, cwd=repos.daemon, check_code=0)
    late = tmp_path / "late"
    git(tmp_path, "clone", "-q", str(repos.remote), str(late))
    git(late, "checkout", "-q", "HEAD~1")
    result = reconcile("--once", "--state", state, cwd=late, check_code=3)
    assert "does not descend" in result.err and "Traceback" not in result.err
    assert repos.ledger_lines().count("a") == 1


def test_sigterm_lets_a_run_finish_within_the_grace_period_else_records_unknown(repos, tmp_path):
    repos.write(
        "inventory/tasks/ops/slow.yaml",
        f'name: slow\nmachines: [box]\ncommand: echo started >> "{repos.ledger}"; sleep 60; true\n',
    )
    repos.push("slow")
    git(repos.daemon, "pull", "-q", "origin", "main")
    daemon = start_daemon(repos.daemon, tmp_path / "daemon.log", "--grace", "1s")
    wait_until(lambda: "started" in repos.ledger_lines(), timeout=30, message="slow started")
    assert stop(daemon) == 0
    listed = reconcile("queue", "list", "--format", "json", cwd=repos.daemon, check_code=0).json()
    assert {r["task"]: r["status"] for r in listed}["ops/slow"] == "unknown"


def test_watch_files_runs_a_changed_task_without_waiting_for_the_poll(repos, tmp_path):
    (repos.daemon / "inventory" / "reconciler.yaml").write_text("poll_interval: 1h\n")
    daemon = start_daemon(repos.daemon, tmp_path / "daemon.log", "--watch-files")
    try:
        wait_until(lambda: "a" in repos.ledger_lines(), timeout=30, message="task a")
        (repos.daemon / "inventory" / "tasks" / "ops" / "w.yaml").write_text(
            f'name: w\nmachines: [box]\ncommand: echo w >> "{repos.ledger}"\n'
        )
        wait_until(lambda: "w" in repos.ledger_lines(), timeout=30, message="task w")
    finally:
        assert stop(daemon) == 0


def test_a_refused_force_push_alerts_the_teams_once(repos, tmp_path):
    receiver = AlertReceiver()
    try:
        repos.write("inventory/teams/ops.yaml", f"name: ops\nalerts: [{receiver.url()}]\n")
        repos.push("alerts")
        git(repos.daemon, "pull", "-q", "origin", "main")
        log = tmp_path / "daemon.log"
        daemon = start_daemon(repos.daemon, log)
        try:
            wait_until(lambda: "a" in repos.ledger_lines(), timeout=30, message="task a")
            git(repos.author, "reset", "-q", "--hard", "HEAD~1")
            repos.task("c")
            repos.push("rewritten", "--force")
            wait_until(
                lambda: any("refused" in b.get("title", "") for b in receiver.delivered()),
                timeout=30,
                message="the refusal alert",
            )
            wait_until(
                lambda: log.read_text().count("refusing") >= 2,
                timeout=30,
                message="a second poll refusing again",
            )
        finally:
            assert stop(daemon) == 0
        refusals = [b for b in receiver.delivered() if "refused" in b.get("title", "")]
        assert len(refusals) == 1 and "not a fast-forward" in refusals[0]["message"]
        assert "c" not in repos.ledger_lines()
    finally:
        receiver.close()
