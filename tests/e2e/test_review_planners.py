"""Hostile review of run planners (commits 1cb8595, d5b965b, 0a7c5d3, 85af67b): a pass claims
its own runs and those of dead planners, adopting them at planning and waiting for them,
retries included (docs/commands.md, `--once`: "waiting out their delays"). Driven through the
CLI; each test was a break the review found, kept so it stays fixed."""

from __future__ import annotations

import signal

from tests.support.cli import reaped, spawn
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

# Long enough for the killed pass to die inside its back-off: the kill follows the attempt's
# `pending` row within a poll. The wait is spread over [d, 3d] by the run's id (run 1: 0.84 of
# the way), so each test waits out about 8 s of it, not the 40 s a 15 s delay cost.
RETRY_DELAY_SECONDS = 3


def _latest(project, task: str) -> tuple | None:
    rows = store_rows(
        project.state,
        "SELECT status, attempt, planner, id FROM runs WHERE task = ? ORDER BY id DESC",
        task,
        while_starting=True,
    )
    return rows[0] if rows else None


def _kill_pass_inside_its_retry_back_off(p) -> None:
    p.task(
        "flaky",
        f"retry: {{count: 1, delay: {RETRY_DELAY_SECONDS}s}}\ncommand: {p.record('flaky')}; exit 3\n",
    )
    first = spawn("--once", "-q", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: (
                (_latest(p, "ops/flaky") or ("", 0))[:2] == ("pending", 2)
                or first.poll() is not None
            ),
            timeout=30,
            message="the first pass waiting out the retry back-off of its failed attempt",
        )
        assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)


def test_a_dead_pass_retry_back_off_is_adopted_and_waited_out(project):
    p = project
    _kill_pass_inside_its_retry_back_off(p)
    assert p.ledger_lines() == ["flaky"]
    second = p.run("--once", "--format", "json", timeout=RETRY_DELAY_SECONDS + 60)
    report = second.json()
    # The only pass alive is this one: nothing is "elsewhere"; the dead pass's retry is adopted,
    # waited out, run and reported as this pass's failure.
    assert report["elsewhere"] == 0, second.out
    assert {run["task"]: run["status"] for run in report["runs"]} == {"ops/flaky": "failed"}
    assert second.code == 1, second.out
    assert p.ledger_lines() == ["flaky", "flaky"]


def test_once_beside_only_a_dead_pass_does_not_blame_other_passes(project):
    p = project
    _kill_pass_inside_its_retry_back_off(p)
    second = p.run("--once", timeout=RETRY_DELAY_SECONDS + 60)
    assert "other passes" not in second.out + second.err, second.out
