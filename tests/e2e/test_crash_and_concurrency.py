"""Crash safety and concurrent passes on one SQLite store, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.support.cli import spawn
from tests.support.waiting import wait_until


def _start_and_wait_for(project, marker: str, *args: str):
    proc = spawn("--once", *args, cwd=project.root)
    wait_until(
        lambda: marker in project.ledger_lines() or proc.poll() is not None,
        timeout=30,
        message=f"'{marker}' in the ledger",
    )
    assert proc.poll() is None, proc.communicate()
    return proc


def _kill_group_of(pid_text: str) -> None:
    try:
        os.killpg(int(pid_text), signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _sleeper(project, name: str, extra: str = "") -> None:
    # Records its shell pid (= its process group: each run has its own session), then a marker.
    project.task(
        name,
        extra + f'command: echo $$ >> "{project.ledger}"; {project.record("started")}; sleep 60\n',
    )


def test_kill_9_mid_run_leaves_it_unknown_and_never_runs_it_twice(project):
    _sleeper(project, "slow")
    proc = _start_and_wait_for(project, "started")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _kill_group_of(project.ledger_lines()[0])

    second = project.run("--once", "--format", "json", code=1)
    runs = second.json()["runs"]
    assert [(r["task"], r["status"]) for r in runs] == [("ops/slow", "unknown")]
    third = project.run("--once", "--format", "json", code=0)
    assert third.json()["runs"] == []
    assert project.ledger_lines().count("started") == 1


def test_kill_9_mid_run_reruns_an_idempotent_task(project):
    done = project.root / "done"
    project.task(
        "idem",
        "idempotent: true\n"
        f'command: echo $$ >> "{project.ledger}"; {project.record("started")}; '
        f'if [ ! -f "{done}" ]; then touch "{done}"; sleep 60; fi\n',
    )
    proc = _start_and_wait_for(project, "started")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    orphan = int(project.ledger_lines()[0])
    assert _alive(orphan)  # the command outlived its reconciler

    second = project.run("--once", "--format", "json", code=1)
    statuses = sorted((r["status"], r["reason"]) for r in second.json()["runs"])
    assert statuses == [("succeeded", "retry"), ("unknown", "new")]
    assert project.ledger_lines().count("started") == 2
    assert not _alive(orphan)  # stopped before the re-run, so the two never overlapped


def test_two_passes_at_once_never_run_a_task_twice(project):
    names = [f"t{i}" for i in range(8)]
    for name in names:
        project.task(name, f"command: {project.record(name)}\n")
    procs = [spawn("--once", "-q", cwd=project.root) for _ in range(2)]
    codes = [p.wait(timeout=60) for p in procs]
    assert codes == [0, 0], [p.communicate() for p in procs]
    assert sorted(project.ledger_lines()) == sorted(names)


# Holds the pass lock as a pass does while it recovers and plans (a pass no longer holds it
# while it drains: a second pass runs beside a draining one).
PLANNER = """
import sys
from reconciler.adapters.store.factory import open_store
store = open_store(sys.argv[1])
with store.pass_lock(timeout=10):
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes stdin
"""


def test_second_pass_gives_up_after_lock_timeout_with_exit_3(project):
    project.state.parent.mkdir(parents=True)
    planner = subprocess.Popen(
        [sys.executable, "-c", PLANNER, str(project.state)],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert planner.stdout.readline().strip() == "locked"
        result = project.run("--once", "--lock-timeout", "1s", code=3)
        assert "lock" in result.err and "Traceback" not in result.err
    finally:
        planner.communicate(timeout=10)


def test_the_pass_after_a_crash_stops_a_setsid_daemon_its_run_started(project):
    """The next pass reaps the command a killed pass left running, and with it a daemon the
    command started in a session of its own (found by the attempt's cookie)."""
    pids = project.root / "pids"
    project.task(
        "spawner",
        f"command: setsid sh -c 'echo $$ > \"{pids}\"; exec sleep 1000' "
        f"</dev/null >/dev/null 2>&1 & {project.record('started')}; sleep 1000\n",
    )
    proc = _start_and_wait_for(project, "started")
    wait_until(lambda: pids.exists() and pids.read_text().strip(), timeout=30)
    daemon = int(pids.read_text())
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        runs = project.run("--once", "--format", "json", code=1).json()["runs"]
        assert [(r["task"], r["status"]) for r in runs] == [("ops/spawner", "unknown")]
        assert not _alive(daemon), "the crashed run's daemon still runs after the next pass"
    finally:
        if _alive(daemon):
            os.kill(daemon, signal.SIGKILL)
