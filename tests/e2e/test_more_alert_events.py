"""More alert events (issue 15 §5): `drift`, `overdue`, `missed` and the opt-in `succeeded`,
through the CLI (`reconcile --once`, the daemon for `overdue`) to a real HTTP receiver via
apprise (`json://`). Each event is sent once and not again at the next pass (the store
remembers it); nothing sleeps: waits are on what the receiver got, with deadlines."""

from __future__ import annotations

import signal
import sqlite3

import pytest

from tests.support.alert_receiver import AlertReceiver
from tests.support.cli import reaped, spawn
from tests.support.waiting import wait_until


@pytest.fixture
def receiver():
    made = AlertReceiver()
    yield made
    made.close()


def _team(project, receiver, extra: str = "") -> None:
    """Team `ops` with one target for every (non-opt-in) event, at /all."""
    project.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url('/all')}]\n{extra}")


def _titles(receiver, event: str, path: str = "/all") -> list[str]:
    return [
        r["body"]["title"]
        for r in receiver.requests
        if r["path"] == path and r["body"]["title"].split(" ")[2:3] == [event]
    ]


def _passes_finished(project) -> int:
    if not project.state.exists():
        return 0
    with sqlite3.connect(project.state) as db:
        return db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'pass.end'").fetchone()[0]


# --- drift ---------------------------------------------------------------------------------------


def test_drift_alerts_once_when_a_failed_check_is_set_right_and_again_after_convergence(
    project, receiver
):
    p = project
    _team(p, receiver)
    marker = p.root / "configured"
    p.task("conf", f'check: test -f "{marker}"\ncommand: touch "{marker}"\n')

    p.run("--once", code=0)  # a new task's first run: its check fails because it is new
    p.run("--once", code=0)  # converged: skipped
    assert _titles(receiver, "drift") == []

    marker.unlink()  # someone changed the machine
    p.run("--once", code=0)
    assert _titles(receiver, "drift") == ["reconciler: ops/conf drift on box"]
    body = receiver.delivered()[-1]["message"]
    assert "exit code: 0" in body and "alert id:" in body
    p.run("--once", code=0)  # converged again: skipped, nothing sent
    assert len(_titles(receiver, "drift")) == 1

    marker.unlink()  # drifts again after convergence: a new episode
    p.run("--once", code=0)
    assert len(_titles(receiver, "drift")) == 2


def test_a_check_that_never_holds_alerts_drift_once_not_at_every_pass(project, receiver):
    p = project
    _team(p, receiver)
    p.task("broken", "check: 'false'\ncommand: 'true'\n")
    for _ in range(4):
        p.run("--once", code=0)
    assert _titles(receiver, "drift") == ["reconciler: ops/broken drift on box"]


# --- succeeded (opt-in) -------------------------------------------------------------------------


def test_succeeded_goes_only_to_a_target_that_lists_it(project, receiver):
    p = project
    p.write(
        "teams/ops.yaml",
        f"""\
        name: ops
        alerts:
          - {receiver.url("/all")}
          - url: {receiver.url("/ok")}
            on: [succeeded]
        """,
    )
    p.task("deploy", f"command: {p.record('deploy')}\n")
    p.task("broken", "command: exit 3\n")
    p.run("--once", code=1)
    p.run("--once", code=0)  # nothing new runs; nothing is sent twice
    assert _titles(receiver, "succeeded", "/ok") == ["reconciler: ops/deploy succeeded on box"]
    assert _titles(receiver, "succeeded", "/all") == []
    assert _titles(receiver, "failed", "/all") == ["reconciler: ops/broken failed on box"]
    assert _titles(receiver, "failed", "/ok") == []


# --- missed -------------------------------------------------------------------------------------


def test_a_slot_a_freeze_holds_past_grace_alerts_missed_once(project, receiver):
    p = project
    _team(p, receiver, 'suspend: {reason: "INC-7 storage migration"}\n')
    p.task("backup", f"command: {p.record('backup')}\nschedule: '* * * * *'\ngrace: 0s\n")

    first = p.run("--once", "--format", "json", code=0).json()
    assert [r["status"] for r in first["runs"]] == ["pending"]
    p.run("--once", code=0)  # still held: the same slot, not sent again
    assert _titles(receiver, "missed") == ["reconciler: ops/backup missed on box"]
    body = receiver.delivered()[-1]["message"]
    assert "slot: " in body and "(grace 0s)" in body and "INC-7 storage migration" in body
    assert p.ledger_lines() == []


def test_a_held_slot_within_its_grace_is_not_missed(project, receiver):
    p = project
    _team(p, receiver, 'suspend: {reason: "INC-8"}\n')
    p.task("backup", f"command: {p.record('backup')}\nschedule: '* * * * *'\n")  # grace 10m
    p.run("--once", code=0)
    assert _titles(receiver, "missed") == []


def test_a_slot_a_deny_window_holds_past_grace_alerts_missed(project, receiver):
    p = project
    # A window that always covers the pass: it opens every minute and lasts a minute.
    _team(p, receiver, "windows:\n  - {deny: '* * * * *', duration: 1m}\n")
    p.task("report", f"command: {p.record('report')}\nschedule: '0 * * * *'\ngrace: 0s\n")
    p.run("--once", code=0)
    p.run("--once", code=0)
    assert _titles(receiver, "missed") == ["reconciler: ops/report missed on box"]
    assert p.ledger_lines() == []


# --- overdue (the daemon) -----------------------------------------------------------------------


def test_a_run_still_running_after_alert_after_alerts_overdue_once(project, receiver):
    p = project
    _team(p, receiver)
    p.write("reconciler.yaml", "poll_interval: 1s\n")
    release = p.root / "release"
    p.task(
        "slow",
        f"""\
        command: 'while [ ! -f "{release}" ]; do sleep 0.05; done; {p.record("slow")}'
        alert_after: 1s
        """,
    )
    with reaped(spawn("-q", cwd=p.root)) as proc:
        wait_until(lambda: _titles(receiver, "overdue"), timeout=30, message="overdue alert")
        release.touch()
        wait_until(lambda: p.ledger_lines() == ["slow"], timeout=30, message="the run's end")
        ended = _passes_finished(p)
        wait_until(lambda: _passes_finished(p) >= ended + 2, timeout=30, message="two passes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert _titles(receiver, "overdue") == ["reconciler: ops/slow overdue on box"]
    body = [r["body"]["message"] for r in receiver.requests if "overdue" in r["body"]["title"]]
    assert "still running after alert_after (1s)" in body[0]


def test_a_run_that_ends_before_alert_after_is_not_overdue(project, receiver):
    p = project
    _team(p, receiver, "defaults: {alert_after: 1h}\n")
    p.task("quick", f"command: {p.record('quick')}\n")
    p.run("--once", code=0)
    assert p.ledger_lines() == ["quick"]
    assert _titles(receiver, "overdue") == []


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("alert_after", "soon", "alert_after must be a duration"),
        ("alert_after", "0s", "alert_after must be at least 1s"),
        ("grace", "ten minutes", "grace must be a duration"),
    ],
)
def test_alert_after_and_grace_must_be_durations(project, field, value, message):
    p = project
    p.task("x", f"command: 'true'\nschedule: '0 3 * * *'\n{field}: {value}\n")
    result = p.run("validate", code=2)
    out = result.err + result.out
    assert "inventory/tasks/ops/x.yaml:5:" in out and message in out
    assert "Traceback" not in result.err


def test_grace_without_a_schedule_is_a_located_warning(project):
    project.task("x", "command: 'true'\ngrace: 5m\n")
    result = project.run("validate", code=0)
    assert "grace has no effect without a schedule" in result.err + result.out


def test_a_team_default_alert_after_must_be_a_duration(project):
    project.write("teams/ops.yaml", "name: ops\ndefaults:\n  alert_after: later\n")
    result = project.run("validate", code=2)
    out = result.err + result.out
    assert "inventory/teams/ops.yaml:3:" in out and "defaults.alert_after must be a duration" in out


def test_an_unknown_event_is_a_located_error_with_a_suggestion(project, receiver):
    project.write(
        "teams/ops.yaml",
        f"name: ops\nalerts:\n  - url: {receiver.url()}\n    on: [drfit]\n",
    )
    result = project.run("validate", code=2)
    out = result.err + result.out
    assert "inventory/teams/ops.yaml:4:" in out and "did you mean 'drift'" in out
