"""Planners (migration 5): every pending run records the pass that enqueued it, so a pass
claims only its own runs and those of dead planners (issue 12.3 review). Every backend."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from reconciler.adapters.store.common import pid_namespace, process_start
from reconciler.core.plan import Plan
from reconciler.core.state import RunStatus
from tests.support.store_contract import enqueue

HERE = socket.gethostname()
ELSEWHERE = "another-host:4242:abcdef:4026531836:123"  # a pass on another host: judged by beats


def _owner(pid: int, token: str = "aaaaaa") -> str:
    return f"{HERE}:{pid}:{token}:{pid_namespace()}:{process_start(pid)}"


def _plan(store, now, planner, *machines):
    plan = Plan(enqueue=tuple(enqueue(machine=m) for m in machines))
    return store.record_plan(plan, "c0ffee", now, planner)


@pytest.fixture
def live_process():
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield process
    process.stdin.close()
    process.wait()


def test_pending_planners_names_other_planners_and_judges_them(store, now, live_process):
    me = _owner(1, "cccccc")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live, dead, other_host, silent, unknown, mine = (
        _plan(store, now, planner, machine)[0]
        for planner, machine in [
            (_owner(live_process.pid), "a"),
            (_owner(gone.pid, "bbbbbb"), "b"),
            (ELSEWHERE, "c"),
            ("another-host:7:dddddd:1:9", "d"),
            (None, "e"),
            (me, "f"),
        ]
    )
    store.beat_drain(ELSEWHERE)
    planners = store.pending_planners(me)
    assert planners == {
        live.id: (_owner(live_process.pid), True),
        dead.id: (_owner(gone.pid, "bbbbbb"), False),
        other_host.id: (ELSEWHERE, True),
        silent.id: ("another-host:7:dddddd:1:9", False),  # no drain beat: gone
        unknown.id: (None, False),  # enqueued before planners were recorded
    }
    assert mine.id not in planners


def test_a_planner_elsewhere_is_dead_once_its_drain_beat_is_older_than_the_lease(
    store, raw, backend, now
):
    [run] = _plan(store, now, ELSEWHERE, "a")
    store.beat_drain(ELSEWHERE)
    assert store.pending_planners("me")[run.id] == (ELSEWHERE, True)
    ago = {
        "sqlite": "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '-61 seconds')",
        "postgresql": "now() - interval '61 seconds'",
    }[backend]
    raw.execute(f"UPDATE drains SET beat_at = {ago}")
    assert store.pending_planners("me")[run.id] == (ELSEWHERE, False)


def test_a_process_with_the_planner_pid_but_another_start_time_is_not_the_planner(
    store, now, live_process
):
    impostor = f"{HERE}:{live_process.pid}:aaaaaa:{pid_namespace()}:1"  # started at tick 1
    [run] = _plan(store, now, impostor, "a")
    assert store.pending_planners("me")[run.id] == (impostor, False)


def test_take_over_is_a_compare_and_set_on_the_dead_planner(store, now):
    first, second = _plan(store, now, "dead-planner", "a", "b")
    assert store.take_over({first.id: "dead-planner"}, "adopter-1") == [first.id]
    # Another adopter that judged the same planner dead loses: the run is adopter-1's now.
    assert store.take_over({first.id: "dead-planner", second.id: "dead-planner"}, "adopter-2") == [
        second.id
    ]
    assert store.pending_planners("adopter-1") == {second.id: ("adopter-2", False)}
    assert store.take_over({}, "adopter-1") == []


def test_a_retried_run_keeps_its_planner_and_a_claimed_one_is_not_pending(store, now, later):
    [run] = _plan(store, now, "planner-1", "a")
    claimed = store.claim(run.id, "worker", now)
    assert store.pending_planners("someone") == {}
    store.requeue(claimed.id, claimed.epoch, later(minutes=1), now, exit_code=1)
    assert store.pending_planners("someone") == {run.id: ("planner-1", False)}
    assert store.pending_planners("planner-1") == {}


def test_a_store_without_planners_upgrades_in_place_and_its_pending_runs_are_adoptable(
    open_handle, raw, backend, now
):
    store = open_handle()
    [old] = _plan(store, now, None, "a")
    store.close()
    raw.execute("DROP TABLE drains")
    raw.execute("ALTER TABLE runs DROP COLUMN planner")
    raw.execute("DELETE FROM schema_migrations WHERE version = 5")
    upgraded = open_handle()
    assert upgraded.pending_planners("me") == {old.id: (None, False)}
    assert upgraded.take_over({old.id: None}, "me") == [old.id]
    assert upgraded.get_run(old.id).status is RunStatus.PENDING
    assert [row[0] for row in raw.execute("SELECT planner FROM runs")] == ["me"]
