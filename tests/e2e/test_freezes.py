"""Freezes (issue 15 §2): `suspend:` on a team, a machine or a task holds the runs it covers
pending at every priority, with its reason, until it ends or a commit lifts it. Every test
runs real passes through the CLI on the default SQLite store and the local transport."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

from tests.support.cli import reaped, spawn
from tests.support.waiting import wait_until

INCIDENT = 'suspend: {reason: "INC-123 database failover"}\n'


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _audit(project, action: str) -> list[dict]:
    with sqlite3.connect(project.state) as db:
        rows = db.execute(
            "SELECT detail FROM audit_log WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [json.loads(detail) for (detail,) in rows]


def test_a_frozen_team_holds_every_run_even_priority_1_and_says_why(project):
    p = project
    p.write("teams/ops.yaml", "name: ops\n" + INCIDENT)
    p.task("urgent", f"command: {p.record('urgent')}\npriority: 1\n")
    p.task("routine", f"command: {p.record('routine')}\n")

    plan = p.run("plan", code=0).out
    assert plan.count("held by freeze on team ops (INC-123 database failover) until lifted") == 2

    once = p.run("--once", "--format", "json", code=0).json()
    assert p.ledger_lines() == []
    held = {r["task"]: (r["status"], r["held"]) for r in once["runs"]}
    reason = "freeze on team ops (INC-123 database failover) until lifted"
    assert held == {"ops/urgent": ("pending", reason), "ops/routine": ("pending", reason)}
    text = p.run("--once", code=0).out
    assert "held by freeze on team ops (INC-123 database failover)" in text

    status = p.run("status", "--format", "json", code=0).json()
    assert [(h["task"], h["reason"]) for h in status["held"]] == [
        ("ops/urgent", reason),
        ("ops/routine", reason),
    ]
    assert f"held by {reason}" in p.run("status", code=0).out


def test_lifting_the_freeze_in_a_commit_lets_the_held_runs_go_on(project):
    p = project
    p.write("teams/ops.yaml", "name: ops\n" + INCIDENT)
    p.task("deploy", f"command: {p.record('deploy')}\n")
    p.run("--once", code=0)
    assert p.ledger_lines() == []
    p.write("teams/ops.yaml", "name: ops\n")  # the incident is over
    p.run("--once", code=0)
    assert p.ledger_lines() == ["deploy"]
    assert p.run_count() == 1, "the held run itself ran: no second run was enqueued"


def test_allow_priority_1_lets_urgent_work_through_a_machine_freeze(project):
    p = project
    p.write(
        "machines/box.yaml",
        "name: box\nteam: ops\ntransport: local\nmax_parallel: 4\n"
        "suspend: {reason: disk replacement, allow_priority_1: true}\n",
    )
    p.task("hotfix", f"command: {p.record('hotfix')}\npriority: 1\n")
    p.task("routine", f"command: {p.record('routine')}\npriority: 2\n")
    runs = p.run("--once", "--format", "json", code=0).json()["runs"]
    assert p.ledger_lines() == ["hotfix"]
    assert {r["task"]: r["held"] for r in runs} == {
        "ops/hotfix": None,
        "ops/routine": "freeze on machine box (disk replacement) until lifted",
    }


def test_a_task_freeze_holds_only_that_task(project):
    p = project
    p.task("migrate", f"command: {p.record('migrate')}\nsuspend: {{reason: wait for QA}}\n")
    p.task("report", f"command: {p.record('report')}\n")
    p.run("--once", code=0)
    assert p.ledger_lines() == ["report"]
    assert "held by freeze on task ops/migrate (wait for QA)" in p.run("status", code=0).out


def test_a_freeze_ends_by_itself_at_until_and_the_daemon_starts_the_run_then(project):
    """No commit lifts it: the daemon's first pass after `until` starts the held run (the
    daemon looks again every poll interval, as it does for a deny window's end)."""
    p = project
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    p.write("reconciler.yaml", "poll_interval: 1s\n")
    p.write("teams/ops.yaml", f'name: ops\nsuspend: {{reason: "night", until: {_iso(until)}}}\n')
    p.task("deploy", f"command: {p.record('deploy')}\n")
    with reaped(spawn(cwd=p.root)) as daemon:
        wait_until(lambda: p.ledger_lines() == ["deploy"], timeout=30, message="the run")
        daemon.terminate()
        daemon.communicate(timeout=30)
    run = p.run("queue", "list", "--format", "json", code=0).json()[0]
    started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
    assert started >= until, (started, until)


def test_a_freeze_that_ended_holds_nothing_and_validate_warns_about_it(project):
    p = project
    p.write(
        "teams/ops.yaml", 'name: ops\nsuspend: {reason: "old", until: "2020-01-01T00:00+01:00"}\n'
    )
    p.task("deploy", f"command: {p.record('deploy')}\n")
    check = p.run("validate", code=0)
    assert "teams/ops.yaml:2:" in check.err
    assert "the freeze of team 'ops' ended at 2019-12-31T23:00:00Z" in check.err
    p.run("validate", "--strict", code=2)
    p.run("--once", code=0)
    assert p.ledger_lines() == ["deploy"]


def test_a_freeze_without_a_zone_or_a_reason_is_refused_with_its_location(project):
    p = project
    p.write("teams/ops.yaml", "name: ops\nsuspend: {reason: night, until: 2030-01-01T00:00}\n")
    p.task("deploy", f"command: {p.record('deploy')}\n")
    bad = p.run("--once", code=2)
    assert "teams/ops.yaml:2:" in bad.err and "suspend.until" in bad.err
    assert "Traceback" not in bad.err
    p.write("teams/ops.yaml", "name: ops\nsuspend: {until: 2030-01-01T00:00Z}\n")
    bad = p.run("validate", code=2)
    assert "teams/ops.yaml:2:" in bad.err and "reason" in bad.err
    p.write("teams/ops.yaml", "name: ops\nsuspend: {reason: night, allow_priority_1: maybe}\n")
    assert "teams/ops.yaml:2:" in p.run("validate", code=2).err
    assert p.ledger_lines() == [] and p.run_count() == 0, "nothing ran, nothing was enqueued"


def test_each_pass_start_in_the_audit_log_lists_the_freezes_in_force(project):
    p = project
    p.task("deploy", f"command: {p.record('deploy')}\n")
    p.run("--once", code=0)
    p.write("teams/ops.yaml", "name: ops\n" + INCIDENT)
    p.run("--once", code=0)
    p.write("teams/ops.yaml", "name: ops\n")
    p.run("--once", code=0)
    starts = [entry.get("frozen") for entry in _audit(p, "pass.start")]
    frozen = [
        {
            "scope": "team ops",
            "reason": "INC-123 database failover",
            "until": None,
            "allow_priority_1": False,
        }
    ]
    assert starts == [None, frozen, None]
    assert p.run("audit", "verify", code=0)
