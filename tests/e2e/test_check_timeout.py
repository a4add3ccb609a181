"""A task's `timeout` bounds its whole run, check and command together; a check that does not
answer in time fails the run and the command never runs (issue 12.9). Local transport."""

from __future__ import annotations

from datetime import datetime


def _seconds(run: dict) -> float:
    start, end = (
        datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at")
    )
    return (end - start).total_seconds()


def test_a_check_that_hangs_past_the_timeout_fails_the_run_and_the_command_never_runs(project):
    project.task("guarded", f"timeout: 1\ncheck: sleep 30\ncommand: {project.record('ran')}\n")
    data = project.run("--once", "--format", "json", code=1).json()
    [run] = data["runs"]
    assert run["status"] == "failed", run
    assert "check" in run["error"] and "timed out after 1s" in run["error"], run["error"]
    assert project.ledger_lines() == []


def test_timeout_bounds_check_and_command_together(project):
    # The check takes 4 s and says "not in the desired state"; the command would take 30 s.
    # With a 5 s timeout the command gets what is left (about 1 s), not 5 s of its own.
    project.task(
        "slow", f"timeout: 5\ncheck: sleep 4; exit 1\ncommand: {project.record('ran')}; sleep 30\n"
    )
    data = project.run("--once", "--format", "json", code=1).json()
    [run] = data["runs"]
    assert run["status"] == "failed" and "timed out after 5s" in run["error"], run
    assert project.ledger_lines() == ["ran"]
    assert _seconds(run) < 8, run  # 5 s budget + process starts and kill; at least 9 s before
