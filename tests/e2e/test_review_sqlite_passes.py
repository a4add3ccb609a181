"""Hostile review of SQLite passes draining side by side (issue 12.3, commit a15734a): several
`reconcile --once` processes on one SQLite store, driven through the CLI as an operator would.
Each test marked xfail(strict) shows a break that holds today; the others pin what held."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.cli import clean_environment, reaped, spawn
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until


def _latest(project, task: str) -> tuple | None:
    rows = store_rows(
        project.state,
        "SELECT status, attempt, owner, id FROM runs WHERE task = ? ORDER BY id DESC",
        task,
        while_starting=True,
    )
    return rows[0] if rows else None


def _status(project, task: str) -> str | None:
    row = _latest(project, task)
    return row[0] if row else None


def _statuses(report: dict) -> dict[str, str]:
    return {run["task"]: run["status"] for run in report["runs"]}


def _first_pass_holding_one_slot(p, go, extra: str) -> None:
    """Machines and tasks for a first pass run with --concurrency 1: `long` occupies its one
    slot until `go` exists, so its other run (`extra`, on another machine) stays pending for
    whichever process looks next."""
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: otherbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: idlebox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/low.yaml",
        "tasks:\n"
        "  - name: long\n    machines: [slowbox]\n    priority: 5\n"
        f"    command: while [ ! -f '{go}' ]; do sleep 0.05; done\n"
        "  - name: theirs\n    machines: [otherbox]\n    priority: 5\n" + extra,
    )


def _urgent_commit(p) -> None:
    p.write(
        "tasks/ops/urgent.yaml",
        "tasks:\n"
        "  - name: urgent\n    machines: [idlebox]\n    priority: 1\n"
        f"    command: {p.record('urgent')}\n",
    )


def test_a_second_once_reports_only_its_own_runs_and_exits_by_them(project):
    p = project
    go = p.root / "go"
    _first_pass_holding_one_slot(p, go, "    command: exit 3\n")
    first = spawn("--once", "-q", "--concurrency", "1", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: _status(p, "ops/long") == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        assert first.poll() is None, first.communicate()
        _urgent_commit(p)
        second = p.run("--once", "-q", "--format", "json", timeout=60)
        go.touch()
        first_out, _ = first.communicate(timeout=60)
    second_report = _statuses(second.json())
    # The first pass's failing run is the first pass's to report (it does: "wherever it ran").
    assert _statuses(json.loads(first_out)).get("ops/theirs") == "failed"
    assert second_report == {"ops/urgent": "succeeded"}, second_report
    assert second.code == 0, second.out


def test_a_second_once_does_not_wait_for_another_pass_retry_back_off(project):
    p = project
    go = p.root / "go"
    _first_pass_holding_one_slot(p, go, "    retry: {count: 1, delay: 10m}\n    command: exit 3\n")
    first = spawn("--once", "-q", "--concurrency", "1", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: _status(p, "ops/long") == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        assert first.poll() is None, first.communicate()
        _urgent_commit(p)
        with reaped(spawn("--once", "-q", "--format", "json", cwd=p.root)) as second:
            wait_until(
                lambda: second.poll() is not None,
                timeout=30,
                message="the second pass to end (its own run took well under a second)",
            )
        go.touch()
        theirs = _latest(p, "ops/theirs")
        p.run("queue", "cancel", str(theirs[3]), code=0)
        first.communicate(timeout=60)
    assert p.ledger_lines() == ["urgent"]


def _free_pid(low: int = 40, high: int = 4000) -> int:
    """A pid no process of this (outer) pid namespace has right now."""
    return next(pid for pid in range(low, high) if not os.path.exists(f"/proc/{pid}"))


def _spawn_in_own_pid_namespace(p, *args: str):
    """`reconcile ARGS` as a second container on the same host would run it: same hostname
    (docker --network host, a Kubernetes hostNetwork pod), its own pid namespace. Its pid
    there is one that no process of ours has, as a container's small pids usually are not."""
    target = _free_pid()
    forks = " ".join(["/bin/true;"] * (target - 2))  # sh is pid 1, the n-th fork pid n+1
    python = f"{sys.executable} -m reconciler {' '.join(args)}"
    return subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", f"{forks} {python}"],
        cwd=p.root,
        env=clean_environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _can_unshare_pid() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs unshare --pid (root)")
def test_a_live_pass_of_another_container_on_the_same_host_keeps_its_run(project):
    p = project
    go = p.root / "go"
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: idlebox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/long.yaml",
        "name: long\nmachines: [slowbox]\n"
        f"command: while [ ! -f '{go}' ]; do sleep 0.05; done; {p.record('long')}\n",
    )
    first = _spawn_in_own_pid_namespace(p, "--once", "-q", "--format", "json")
    with reaped(first):
        wait_until(
            lambda: (
                _latest(p, "ops/long") is not None
                and _latest(p, "ops/long")[0] == "running"
                or first.poll() is not None
            ),
            timeout=60,
            message="the first pass (in its own pid namespace) running its long run",
        )
        assert first.poll() is None, first.communicate()
        _urgent_commit(p)
        second = p.run("--once", "-q", "--format", "json", timeout=60)
        after_second = _latest(p, "ops/long")
        go.touch()
        first_out, first_err = first.communicate(timeout=60)
    assert after_second[0] == "running", (after_second, second.out)
    assert "ops/long" not in _statuses(second.json())
    assert _statuses(json.loads(first_out)).get("ops/long") == "succeeded", first_err


def test_kill_9_of_one_pass_leaves_the_other_pass_report_and_exit_code_its_own(project):
    p = project
    go_first, go_second = p.root / "go-first", p.root / "go-second"
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: otherbox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/first.yaml",
        "tasks:\n"
        "  - name: along\n    machines: [slowbox]\n"
        f"    command: while [ ! -f '{go_first}' ]; do sleep 0.05; done; {p.record('along')}\n"
        "  - name: anext\n    machines: [slowbox]\n    after: [along]\n"
        f"    command: {p.record('anext')}\n",
    )
    first = spawn("--once", "-q", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: (_latest(p, "ops/along") or ("",))[0] == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        p.write(
            "tasks/ops/second.yaml",
            "tasks:\n  - name: blong\n    machines: [otherbox]\n"
            f"    command: while [ ! -f '{go_second}' ]; do sleep 0.05; done; {p.record('blong')}\n",
        )
        with reaped(spawn("--once", "-q", "--format", "json", cwd=p.root)) as second:
            wait_until(
                lambda: (
                    (_latest(p, "ops/blong") or ("",))[0] == "running" or second.poll() is not None
                ),
                timeout=60,
                message="the second pass running its own long run",
            )
            first.send_signal(signal.SIGKILL)
            first.communicate()
            # The second pass sweeps the dead pass's run (its process is gone): at once.
            wait_until(
                lambda: _latest(p, "ops/along")[0] != "running",
                timeout=30,
                message="the killed pass's run to be resolved",
            )
            go_first.touch()
            go_second.touch()
            out, err = second.communicate(timeout=60)
    # Nothing was lost or doubled: the killed run is `unknown` (not re-run), its dependent
    # is blocked, the second pass's own run succeeded once.
    assert _latest(p, "ops/along")[0] == "unknown"
    assert _latest(p, "ops/anext")[0] == "blocked"
    assert p.ledger_lines() == ["blong"]
    # The second pass's report and exit code are its own commit's.
    assert _statuses(json.loads(out)) == {"ops/blong": "succeeded"}, out
    assert second.returncode == 0, err


def _lease_expired(p, task: str, seconds: float) -> bool:
    """Whether `task`'s latest run has not been heartbeated for `seconds` by SQLite's clock."""
    rows = store_rows(
        p.state,
        "SELECT COALESCE(heartbeat_at, started_at) "
        "< strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', ?) FROM runs "
        "WHERE task = ? ORDER BY id DESC LIMIT 1",
        f"-{seconds:.0f} seconds",
        task,
    )
    return bool(rows and rows[0][0])


def test_a_live_but_stopped_pass_keeps_its_running_run(project):
    """An operator presses Ctrl-Z on a `reconcile --once` (or the VM pauses): the process is
    alive, its process id is on this host, so the SQLite store can tell it is not dead; its
    heartbeats stop, though. A second `--once` must not take its running run away."""
    p = project
    go = p.root / "go"
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: idlebox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/long.yaml",
        "name: long\nmachines: [slowbox]\n"
        f"command: while [ ! -f '{go}' ]; do sleep 0.05; done; {p.record('long')}\n",
    )
    first = spawn("--once", "-q", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: (_latest(p, "ops/long") or ("",))[0] == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        first.send_signal(signal.SIGSTOP)
        try:
            # The stopped pass beats no more: its lease runs out after 60 s. Aged here by
            # hand, as if those 61 s had gone by (waiting them out was a minute of the suite).
            store_rows(
                p.state,
                "UPDATE runs SET heartbeat_at = ?1, started_at = ?1 "
                "WHERE task = ?2 AND status = 'running'",
                (datetime.now(UTC) - timedelta(seconds=61)).isoformat(timespec="microseconds"),
                "ops/long",
            )
            assert _lease_expired(p, "ops/long", 60)
            _urgent_commit(p)
            second = p.run("--once", "-q", "--format", "json", timeout=60)
            after_second = _latest(p, "ops/long")
        finally:
            first.send_signal(signal.SIGCONT)
        go.touch()
        first_out, first_err = first.communicate(timeout=60)
    assert after_second[0] == "running", (after_second, second.out)
    assert second.code == 0, second.err
    assert _statuses(json.loads(first_out)).get("ops/long") == "succeeded", first_err
    assert sorted(p.ledger_lines()) == ["long", "urgent"]


def test_an_after_chain_onto_another_pass_retry_runs_within_the_pass(project):
    p = project
    flag = p.root / "failed-once"
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: otherbox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/first.yaml",
        "name: y\nmachines: [slowbox]\nretry: {count: 1, delay: 4s}\n"
        f"command: test -f '{flag}' || {{ touch '{flag}'; exit 1; }}; {p.record('y')}\n",
    )
    first = spawn("--once", "-q", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: (
                (_latest(p, "ops/y") or ("", 0))[0:2] == ("pending", 2) or first.poll() is not None
            ),
            timeout=60,
            message="the first pass waiting out its run's retry back-off",
        )
        p.write(
            "tasks/ops/second.yaml",
            f"name: x\nmachines: [otherbox]\nafter: [y]\ncommand: {p.record('x')}\n",
        )
        second = p.run("--once", "-q", "--format", "json", timeout=60)
        first.communicate(timeout=60)
    # The old behaviour (one pass after the other) ran x in the second pass; side by side,
    # the second pass must wait for the retry its own run depends on, or say it left x undone.
    assert _statuses(second.json()) == {"ops/x": "succeeded"}, second.out
    assert second.code == 0, second.err
    assert p.ledger_lines() == ["y", "x"]


def test_a_once_with_nothing_to_plan_does_not_claim_all_is_done_while_another_pass_drains(
    project,
):
    """Before side-by-side drains, a second `--once` waited for the first and drained what
    was left, so "every task is in its desired state" was true when it was printed. Now it
    returns at once: a tired operator reruns `reconcile --once` to make sure, and is told all
    is done while the queue still holds work."""
    p = project
    go = p.root / "go"
    # `theirs` waits for `long`: no pass can start it before `long` ends.
    _first_pass_holding_one_slot(p, go, f"    after: [long]\n    command: {p.record('theirs')}\n")
    first = spawn("--once", "-q", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: _status(p, "ops/long") == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        assert _status(p, "ops/theirs") == "pending"
        again = p.run("--once", timeout=60)
        go.touch()
        first.communicate(timeout=60)
    assert again.code == 0, again.err
    assert "every task is in its desired state" not in again.out, again.out
    assert "of other passes are still queued or running" in again.out, again.out


def test_a_second_once_ends_beside_a_pass_whose_only_run_waits_for_a_retry(project):
    """Nothing runs anywhere: the first pass's only run waits out a ten-minute back-off. A
    second pass with an urgent run of its own must neither wait for that back-off nor report
    the other pass's run (issue 12.3: "whatever lower-priority runs are waiting for retry")."""
    p = project
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: flakybox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: idlebox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/low.yaml",
        "name: flaky\nmachines: [flakybox]\npriority: 5\nretry: {count: 1, delay: 10m}\n"
        "command: exit 1\n",
    )
    first = spawn("--once", "-q", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: (
                (_latest(p, "ops/flaky") or ("", 0))[0:2] == ("pending", 2)
                or first.poll() is not None
            ),
            timeout=60,
            message="the first pass waiting out its run's retry back-off",
        )
        _urgent_commit(p)
        with reaped(spawn("--once", "-q", "--format", "json", cwd=p.root)) as second:
            wait_until(
                lambda: second.poll() is not None,
                timeout=30,
                message="the second pass to end (its own run took well under a second)",
            )
            out, err = second.communicate()
        flaky = _latest(p, "ops/flaky")
        p.run("queue", "cancel", str(flaky[3]), code=0)
        first.communicate(timeout=60)
    assert second.returncode == 0, err
    assert _statuses(json.loads(out)) == {"ops/urgent": "succeeded"}, out
    assert p.ledger_lines() == ["urgent"]


def test_stopping_one_pass_does_not_abandon_another_pass_run(project):
    """Two CI jobs each run `reconcile --once` for their commit; the second job is cancelled
    (SIGTERM) and its grace period ends. Its own runs end `unknown`, but a run of the first
    pass is the first pass's: it must not be killed for a job that has nothing to do with
    it. (Since passes record their planner, the second pass never picks `theirs` up: the
    first pass, alive, runs it when its one slot frees.)"""
    p = project
    go, go_theirs, go_mine = p.root / "go", p.root / "go-theirs", p.root / "go-mine"
    _first_pass_holding_one_slot(
        p,
        go,
        f"    command: while [ ! -f '{go_theirs}' ]; do sleep 0.05; done; {p.record('theirs')}\n",
    )
    first = spawn("--once", "-q", "--concurrency", "1", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: _status(p, "ops/long") == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        p.write(
            "tasks/ops/urgent.yaml",
            "name: mine\nmachines: [idlebox]\npriority: 1\n"
            f"command: while [ ! -f '{go_mine}' ]; do sleep 0.05; done; {p.record('mine')}\n",
        )
        second = spawn("--once", "-q", "--grace", "1s", "--format", "json", cwd=p.root)
        with reaped(second):
            wait_until(
                lambda: _status(p, "ops/mine") == "running" or second.poll() is not None,
                timeout=60,
                message="the second pass running its own run",
            )
            theirs_before_stop = _status(p, "ops/theirs")
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=60)
        theirs_after_stop = _status(p, "ops/theirs")
        go_theirs.touch()
        go.touch()
        first_out, first_err = first.communicate(timeout=60)
    assert theirs_before_stop == "pending", theirs_before_stop
    assert theirs_after_stop == "pending", theirs_after_stop
    assert _status(p, "ops/mine") == "unknown"
    assert _statuses(json.loads(first_out)).get("ops/theirs") == "succeeded", first_err
    assert "theirs" in p.ledger_lines()


def test_a_second_once_ends_when_its_own_runs_end(project):
    p = project
    go, go_theirs = p.root / "go", p.root / "go-theirs"
    _first_pass_holding_one_slot(
        p,
        go,
        f"    command: while [ ! -f '{go_theirs}' ]; do sleep 0.05; done; {p.record('theirs')}\n",
    )
    first = spawn("--once", "-q", "--concurrency", "1", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: _status(p, "ops/long") == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        _urgent_commit(p)
        with reaped(spawn("--once", "-q", "--format", "json", cwd=p.root)) as second:
            try:
                wait_until(
                    lambda: second.poll() is not None,
                    timeout=30,
                    message="the second pass to end after its own quick run",
                )
            finally:
                go_theirs.touch()
                go.touch()
            out, err = second.communicate(timeout=60)
        first.communicate(timeout=60)
    assert second.returncode == 0, err
    assert sorted(p.ledger_lines()) == ["theirs", "urgent"]
