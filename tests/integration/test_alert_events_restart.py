"""Issue 15 §5: the new alert events are remembered in the store like the others, so a
restarted reconciler (a new store object and new sinks on the same SQLite file) does not send
them again (`missed`, `drift` and `succeeded` across processes: tests/e2e/test_more_alert_events.py,
where every `--once` is one). Real apprise to a real HTTP receiver; nothing sleeps."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.core.compile import compile_inventory
from reconciler.core.state import Run, RunStatus
from reconciler.inventory.loader import load_inventory
from reconciler.pipeline.events import Event, Kind
from reconciler.pipeline.metrics import Metrics
from reconciler.pipeline.sinks import build_sinks
from tests.support.alert_receiver import AlertReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

STARTED_AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def receiver():
    made = AlertReceiver()
    yield made
    made.close()


@pytest.fixture
def world(tmp_path, receiver):
    inventory = tmp_path / "inventory"
    for relative, text in {
        "teams/ops.yaml": f"name: ops\nalerts: [{receiver.url()}]\n",
        "machines/box.yaml": "name: box\nteam: ops\ntransport: local\n",
        "tasks/ops/slow.yaml": "name: slow\nmachines: [box]\ncommand: 'true'\nalert_after: 1s\n",
    }.items():
        path = inventory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    loaded, _ = load_inventory(inventory)
    return loaded, compile_inventory(loaded), f"sqlite:///{tmp_path / 'state.db'}"


def a_process(world):
    """Sinks of one reconciler process on the shared store file."""
    inventory, desired, url = world
    store = open_store(url)
    sinks = build_sinks(store, inventory, desired, None, None, commit="c0ffee", metrics=Metrics())
    return store, sinks


def test_an_overdue_run_alerts_once_even_when_a_restarted_process_starts_it_again(world, receiver):
    _, desired, _ = world
    version = desired.tasks["ops/slow"].version_for("box")
    run = Run(41, "ops/slow", "box", version, 3, RunStatus.RUNNING, started_at=STARTED_AT)
    for attempt in (1, 2):  # the second process: a restart that starts the run's next attempt
        store, sinks = a_process(world)
        try:
            sinks(Event(Kind.STARTED, replace(run, attempt=attempt)))
            timer = sinks.alerts._overdue
            wait_until(lambda t=timer: not t.runs, timeout=10, message="the overdue timer")
            assert sinks.close(10)  # joins the timer: its alert is recorded or refused by now
        finally:
            store.close()
    assert [b["title"] for b in receiver.delivered()] == ["reconciler: ops/slow overdue on box"]


def test_a_run_that_ends_in_time_is_not_overdue(world, receiver):
    _, desired, _ = world
    version = desired.tasks["ops/slow"].version_for("box")
    run = Run(42, "ops/slow", "box", version, 3, RunStatus.RUNNING, started_at=STARTED_AT)
    store, sinks = a_process(world)
    try:
        sinks(Event(Kind.STARTED, run))
        sinks(Event(Kind.FINISHED, replace(run, status=RunStatus.SUCCEEDED, exit_code=0)))
        assert not sinks.alerts._overdue.runs
        assert sinks.close(10)
    finally:
        store.close()
    assert receiver.requests == []
