"""Issue 15 §5 alert events, the pure parts: `drift` and `succeeded` from a run's end, the
opt-in rule of `on:`, the once-per-run and once-per-slot keys, and `missed_slots`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.core import alerts
from reconciler.core.missed import missed_slots
from reconciler.core.model import (
    AlertTarget,
    DesiredState,
    Freeze,
    Machine,
    RetryPolicy,
    Strategy,
    TaskSpec,
    Team,
)
from reconciler.core.state import Run, RunStatus

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def run(status=RunStatus.SUCCEEDED, **fields) -> Run:
    base = dict(id=7, task="ops/conf", machine="box", version="v1", priority=3, status=status)
    return Run(**{**base, **fields})


def spec(**fields) -> TaskSpec:
    base = dict(
        id="ops/backup",
        team="ops",
        name="backup",
        run="true",
        check=None,
        env=(),
        priority=3,
        timeout=600,
        retry=RetryPolicy(),
        schedule="0 * * * *",
        after=(),
        strategy=Strategy.ALL,
        targets=("box",),
        versions={"box": "v1"},
    )
    return TaskSpec(**{**base, **fields})


def desired(task: TaskSpec, team: Team | None = None) -> DesiredState:
    return DesiredState(
        {task.id: task}, {"box": Machine("box", "ops", "local")}, {"ops": team or Team("ops")}
    )


def events(kind, r, checked=True):
    return [a.event for a in alerts.decide_all(kind, r, checked=checked)]


def test_a_failed_check_set_right_on_a_converged_target_is_drift():
    assert events("finished", run(reason="drift")) == ["drift", "succeeded"]


def test_a_first_run_a_skipped_run_or_a_task_without_check_is_no_drift():
    assert events("finished", run(reason="new")) == ["succeeded"]
    assert events("finished", run(reason="changed")) == ["succeeded"]
    assert events("finished", run(reason="schedule")) == ["succeeded"]  # a slot's work
    assert events("finished", run(reason="drift"), checked=False) == ["succeeded"]
    assert events("finished", run(RunStatus.SKIPPED, reason="drift")) == []
    # adopted after a lost connection: what it kept may be the check's exit
    assert events("recovered", run(reason="drift")) == ["succeeded"]
    assert alerts.converged("finished", run(RunStatus.SKIPPED), True)
    assert not alerts.converged("finished", run(RunStatus.SKIPPED), False)


def test_succeeded_is_once_per_run_drift_once_per_version():
    first, second = run(id=7, reason="drift"), run(id=8, reason="drift")
    drift = [alerts.decide_all("finished", r, checked=True)[0].key for r in (first, second)]
    assert drift[0] == drift[1]
    ok = [alerts.decide_all("finished", r)[-1].key for r in (first, second)]
    assert ok[0] != ok[1]


def test_succeeded_is_opt_in_and_every_other_event_goes_to_a_target_without_on():
    everything = AlertTarget("json://all")
    asks = AlertTarget("json://ok", ("succeeded",))
    for event in alerts.EVENTS:
        assert alerts.wants(everything, event) is (event != "succeeded")
    assert alerts.wants(asks, "succeeded") and not alerts.wants(asks, "failed")
    assert alerts.OPT_IN == {"succeeded"}
    assert set(alerts.SEVERITY) == set(alerts.EVENTS)


def test_overdue_is_once_per_run_and_says_how_long():
    alert = alerts.overdue(run(RunStatus.RUNNING, started_at=NOW), 90)
    assert alert.title == "reconciler: ops/conf overdue on box"
    assert "still running after alert_after (1m30s)" in alert.body
    assert alert.key != alerts.overdue(run(RunStatus.RUNNING, id=8), 90).key


def pending(**fields) -> Run:
    base = dict(
        id=3,
        task="ops/backup",
        machine="box",
        version="v1",
        priority=3,
        status=RunStatus.PENDING,
        reason="schedule",
        slot="2026-12-06T11:00:00Z",
        created_at=datetime(2026, 12, 6, 11, 0, 1, tzinfo=UTC),
    )
    return Run(**{**base, **fields})


def test_a_scheduled_run_pending_past_its_grace_missed_its_slot():
    d = desired(spec(grace=600))
    assert missed_slots(d, [pending()], datetime(2026, 12, 6, 11, 9, 59, tzinfo=UTC)) == ()
    (slot,) = missed_slots(d, [pending()], datetime(2026, 12, 6, 11, 10, tzinfo=UTC))
    assert (slot.task, slot.machine, slot.slot, slot.run) == (
        "ops/backup",
        "box",
        pending().slot,
        3,
    )
    assert slot.deadline == datetime(2026, 12, 6, 11, 10, tzinfo=UTC)
    alert = alerts.missed(slot)
    assert alert.event == "missed" and alert.run_id is None
    assert alert.key == alerts.missed(slot).key  # the same slot: the same key at every pass


def test_a_first_run_counts_its_grace_from_when_it_was_enqueued():
    d = desired(spec(grace=600))
    first = pending(reason="new", created_at=NOW)  # a task added at noon; its slot 11:00
    assert missed_slots(d, [first], NOW + timedelta(minutes=9)) == ()
    assert len(missed_slots(d, [first], NOW + timedelta(minutes=10))) == 1


def test_started_cancelled_or_unscheduled_runs_miss_nothing():
    late = NOW + timedelta(hours=5)
    d = desired(spec(grace=0))
    assert missed_slots(d, [pending(started_at=NOW)], late) == ()  # waits out a retry
    assert missed_slots(d, [pending(attempt=2)], late) == ()
    assert missed_slots(d, [pending(version="old")], late) == ()  # the plan cancels it
    assert missed_slots(d, [pending(slot=None)], late) == ()
    assert missed_slots(desired(spec(schedule=None)), [pending()], late) == ()
    assert missed_slots(d, [pending(status=RunStatus.RUNNING)], late) == ()


def test_a_missed_slot_says_what_holds_it():
    team = Team("ops", suspend=Freeze("INC-9 failover"))
    (slot,) = missed_slots(desired(spec(), team), [pending()], NOW)
    assert "INC-9 failover" in slot.held
    assert "held: " in alerts.missed(slot).body


def test_the_team_schema_accepts_exactly_the_alert_events():
    import json
    from pathlib import Path

    import reconciler.inventory

    schema = Path(reconciler.inventory.__file__).parent / "schemas" / "team.schema.json"
    found = []

    def walk(node):
        if isinstance(node, dict):
            on = node.get("on")
            if isinstance(on, dict) and "items" in on:
                found.append(on["items"]["enum"])
            for value in node.values():
                walk(value)

    walk(json.loads(schema.read_text()))
    assert found == [list(alerts.EVENTS)]
