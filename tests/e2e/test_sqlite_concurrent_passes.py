"""Two `reconcile --once` processes on one SQLite store drain side by side (issue 12.3): the
second one does not wait behind the first one's drain. The pass lock covers recovery and
planning only; `max_parallel` holds across both processes because it is checked inside the
claim transaction; neither process recovers a run the other one still executes. Start delays
and run intervals are read from the state store's own timestamps."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.cli import reaped, spawn
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

PLAN_TO_START_SECONDS = 2.0  # from its planning to its start: one round, "a second or two"
# From the second process's spawn: Python start-up and loading the inventory come first, which
# take seconds on a loaded test machine; a pass waiting behind the first one never starts.
SPAWN_TO_START_SECONDS = 10.0
# Claims stamp `started_at` from the claimer's clock read just before its write transaction:
# two processes' stamps may cross by the time one waits for the other's write.
CLOCK_TOLERANCE = timedelta(milliseconds=100)


def _latest(project, task: str) -> tuple | None:
    rows = store_rows(
        project.state,
        "SELECT status, attempt, started_at, finished_at, id, created_at FROM runs "
        "WHERE task = ? ORDER BY id DESC",
        task,
        while_starting=True,
    )
    return rows[0] if rows else None


def _intervals(project, machine: str) -> list[tuple[datetime, datetime, str]]:
    rows = store_rows(
        project.state,
        "SELECT started_at, finished_at, task FROM runs "
        "WHERE machine = ? AND started_at IS NOT NULL ORDER BY started_at",
        machine,
        while_starting=True,
    )
    return [(datetime.fromisoformat(s), datetime.fromisoformat(f), t) for s, f, t in rows]


def _statuses(report: dict) -> dict[str, str]:
    return {run["task"]: run["status"] for run in report["runs"]}


def test_a_second_once_runs_urgent_work_beside_a_draining_pass(project):
    p = project
    go = p.root / "go"
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: flakybox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: idlebox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: sharedbox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/low.yaml",
        "tasks:\n"
        "  - name: long\n    machines: [slowbox]\n    priority: 5\n"
        f"    command: while [ ! -f '{go}' ]; do sleep 0.05; done\n"
        "  - name: flaky\n    machines: [flakybox]\n    priority: 5\n"
        "    retry: {count: 1, delay: 10m}\n    command: exit 1\n"
        + "".join(
            f"  - name: busy{i}\n    machines: [sharedbox]\n    priority: 5\n    command: sleep 1\n"
            for i in range(3)
        ),
    )
    first = spawn("--once", "-q", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: (
                (_latest(p, "ops/flaky") or ("",))[0:2] == ("pending", 2)
                and (_latest(p, "ops/long") or ("",))[0] == "running"
                and (_latest(p, "ops/busy0") or ("",))[0] == "running"
                or first.poll() is not None
            ),
            timeout=60,
            message="a retry back-off, a long run and the shared machine busy",
        )
        assert first.poll() is None, first.communicate()
        p.write(
            "tasks/ops/urgent.yaml",
            "tasks:\n"
            f"  - name: urgent\n    machines: [idlebox]\n    priority: 1\n"
            f"    command: {p.record('urgent')}\n"
            f"  - name: squeeze\n    machines: [sharedbox]\n    priority: 1\n"
            "    command: sleep 1\n",
        )
        second_started = datetime.now(UTC)
        second = spawn("--once", "-q", "--format", "json", cwd=p.root)
        with reaped(second):
            wait_until(
                lambda: second.poll() is not None,
                timeout=30,
                message="the second pass to end while the first one drains",
            )
            out, err = second.communicate()
        assert second.returncode == 0, err
        still_draining = first.poll() is None
        urgent = _latest(p, "ops/urgent")
        long_run = _latest(p, "ops/long")

        go.touch()
        flaky = _latest(p, "ops/flaky")
        p.run("queue", "cancel", str(flaky[4]), code=0)  # the first pass waits on its retry
        first_out, first_err = first.communicate(timeout=60)
    started = datetime.fromisoformat(urgent[2])
    delay = (started - second_started).total_seconds()
    after_plan = (started - datetime.fromisoformat(urgent[5])).total_seconds()
    print(
        f"priority-1 start: {delay:.2f}s after its pass was spawned, {after_plan:.2f}s after its planning"
    )
    assert after_plan < PLAN_TO_START_SECONDS, after_plan
    assert delay < SPAWN_TO_START_SECONDS, delay
    assert still_draining, "the first pass ended before the second: nothing was shown"
    # The second pass left the first one's live run alone, and reports its own runs.
    assert long_run[0:2] == ("running", 1), long_run
    second_report = json.loads(out)
    assert _statuses(second_report).get("ops/urgent") == "succeeded", second_report
    assert _statuses(second_report).get("ops/squeeze") == "succeeded", second_report
    assert "ops/long" not in _statuses(second_report)
    # The first pass reports every run it enqueued, however it ended and wherever it ran.
    assert first.returncode == 0, first_err
    first_report = _statuses(json.loads(first_out))
    assert first_report["ops/long"] == "succeeded"
    assert first_report["ops/flaky"] == "cancelled"
    assert all(first_report[f"ops/busy{i}"] == "succeeded" for i in range(3)), first_report
    assert "ops/urgent" not in first_report
    assert p.ledger_lines() == ["urgent"]
    # max_parallel: 1 on the shared machine held across both processes.
    shared = _intervals(p, "sharedbox")
    assert [t for _, _, t in shared if t == "ops/squeeze"] == ["ops/squeeze"]
    for (_, finished, earlier), (started, _, later) in zip(shared, shared[1:]):
        assert started + CLOCK_TOLERANCE >= finished, (earlier, later, shared)


@pytest.mark.parametrize(
    ("point", "left", "status", "executed"),
    [
        # Inside the claim-and-dispatch transaction, before its commit: the claim dies with it.
        ("after_claim", "pending", "succeeded", 1),
        ("after_dispatch", "running", "unknown", 0),
        ("before_result", "running", "unknown", 1),
    ],
)
def test_a_pass_killed_at_a_failpoint_is_recovered_at_once_by_the_next(
    project, point, left, status, executed
):
    """Recovery no longer takes every running run for a dead pass's: it judges the holder.
    A holder killed at any point of the run protocol is gone, so the next pass recovers its
    run at once (not after the lease) and nothing is lost or run twice."""
    p = project
    p.task("once", f"command: {p.record('ran')}\n")
    crashed = p.run("--once", env={"RECONCILER_FAILPOINTS": f"{point}=crash"})
    assert crashed.code == -signal.SIGKILL, crashed.err
    assert _latest(p, "ops/once")[0] == left
    after = p.run("--once", "--format", "json", code=0 if status == "succeeded" else 1, timeout=30)
    assert _statuses(after.json()) == {"ops/once": status}
    assert p.ledger_lines().count("ran") == executed
    assert p.run("--once", "--format", "json", code=0).json()["runs"] == []
    assert p.ledger_lines().count("ran") == executed
