"""The lease half of the run protocol, and races between processes, against every backend.

A claimed run holds a lease: `claim`, `mark_dispatched` and `heartbeat` renew it with the
database's clock, and `sweep` resolves runs whose lease expired (a dead or frozen worker).
Leases are aged with SQL (`raw`), never by sleeping. Races use real processes started
together on a "go" line, and threads released by a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from reconciler.adapters.store import postgres as pg_store
from reconciler.adapters.store import sqlite as sqlite_store
from reconciler.adapters.store.base import LEASE_SECONDS, LeaseLost
from reconciler.adapters.store.common import UNKNOWN_ERROR
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason, Run, RunStatus
from tests.support.store_contract import race


def enqueue(machine="m1", task="prod/web", version="v1") -> Enqueue:
    return Enqueue(task, machine, version, 3, Reason.NEW)


def claimed(store, now, machine="m1", owner="w1") -> Run:
    """A run freshly claimed by `owner`."""
    [run] = store.record_plan(Plan(enqueue=(enqueue(machine),)), "c0ffee", now)
    return store.claim(run.id, owner, now)


# --- heartbeat ----------------------------------------------------------------------------------


def test_heartbeat_renews_an_aged_lease_so_sweep_keeps_the_run(store, raw, now):
    run = claimed(store, now)
    raw.age_heartbeat(run.id, seconds=3600)
    assert store.heartbeat(run.id, run.epoch) is None
    assert store.sweep(60, now) == []
    assert store.get_run(run.id).status is RunStatus.RUNNING


def test_heartbeat_with_a_stale_epoch_raises_lease_lost(store, now):
    first = claimed(store, now)
    store.requeue(first.id, first.epoch, now, now)
    second = store.claim(first.id, "w2", now)
    with pytest.raises(
        LeaseLost,
        match=f"run {first.id} is no longer held at epoch "
        f"{first.epoch}: it is running at epoch {second.epoch}",
    ):
        store.heartbeat(first.id, first.epoch)
    store.heartbeat(second.id, second.epoch)  # the new holder's lease is its own


def test_heartbeat_of_a_run_that_is_not_running_raises_lease_lost(store, now):
    [pending] = store.record_plan(Plan(enqueue=(enqueue("m2"),)), None, now)
    with pytest.raises(LeaseLost, match="it is pending"):
        store.heartbeat(pending.id, pending.epoch)
    with pytest.raises(LeaseLost, match="does not exist"):
        store.heartbeat(424242, 1)


def test_mark_dispatched_renews_the_lease(store, raw, now):
    run = claimed(store, now)
    raw.age_heartbeat(run.id, seconds=3600)
    store.mark_dispatched(run.id, run.epoch, now)
    assert store.sweep(60, now) == []


# --- sweep --------------------------------------------------------------------------------------


def test_sweep_leaves_runs_with_a_live_lease_alone(store, now):
    run = claimed(store, now)
    store.mark_dispatched(run.id, run.epoch, now)
    claimed(store, now, machine="m2")
    assert store.sweep(LEASE_SECONDS, now) == []
    assert [r.status for r in store.running()] == [RunStatus.RUNNING] * 2


def test_sweep_returns_an_expired_undispatched_run_to_pending(store, raw, now, later):
    dead = claimed(store, now, owner="dead")
    raw.age_heartbeat(dead.id, seconds=120)
    [back] = store.sweep(60, later(minutes=5))
    assert (back.id, back.status, back.owner, back.dispatched, back.finished_at) == (
        dead.id,
        RunStatus.PENDING,
        None,
        False,
        None,
    )
    assert (back.attempt, back.epoch) == (dead.attempt, dead.epoch)  # nothing ran: same attempt
    alive = store.claim(dead.id, "alive", now)
    assert alive.epoch == dead.epoch + 1
    with pytest.raises(LeaseLost):  # the dead worker wakes up: it may not dispatch
        store.mark_dispatched(dead.id, dead.epoch, now)
    assert store.get_run(dead.id) == alive


def test_sweep_marks_an_expired_dispatched_run_unknown_and_refuses_its_late_result(
    store, raw, now, later
):
    frozen = claimed(store, now, owner="frozen")
    store.mark_dispatched(frozen.id, frozen.epoch, now)
    raw.age_heartbeat(frozen.id, seconds=120)
    [lost] = store.sweep(60, later(minutes=5))
    assert (lost.status, lost.finished_at, lost.error) == (
        RunStatus.UNKNOWN,
        later(minutes=5),
        UNKNOWN_ERROR,
    )
    for late_write in (
        lambda: store.finish(frozen.id, frozen.epoch, RunStatus.SUCCEEDED, now),
        lambda: store.requeue(frozen.id, frozen.epoch, now, now),
        lambda: store.heartbeat(frozen.id, frozen.epoch),
    ):
        with pytest.raises(LeaseLost, match="it is unknown"):
            late_write()
    assert store.get_run(frozen.id) == lost  # one final status


def test_sweep_compares_the_lease_with_the_heartbeat_age(store, raw, now):
    run = claimed(store, now)
    raw.age_heartbeat(run.id, seconds=30)
    assert store.sweep(60, now) == []
    assert [r.id for r in store.sweep(10, now)] == [run.id]


def test_sweep_counts_a_missing_heartbeat_from_the_claim(store, raw, now):
    old = claimed(store, now, machine="old")
    recent = claimed(store, now, machine="recent")
    raw.age_claim_without_heartbeat(old.id, seconds=7200)
    raw.age_claim_without_heartbeat(recent.id, seconds=10)
    assert [(r.id, r.status) for r in store.sweep(60, now)] == [(old.id, RunStatus.PENDING)]
    assert store.get_run(recent.id).status is RunStatus.RUNNING


def test_sweep_returns_changed_runs_by_id_and_leaves_other_statuses_alone(store, raw, now):
    runs = [claimed(store, now, machine=m) for m in "abc"]
    store.mark_dispatched(runs[1].id, runs[1].epoch, now)
    [pending] = store.record_plan(Plan(enqueue=(enqueue("p"),)), None, now)
    done = claimed(store, now, machine="d")
    done = store.finish(done.id, done.epoch, RunStatus.SUCCEEDED, now)
    raw.expire_all_leases()
    assert [(r.id, r.status) for r in store.sweep(60, now)] == [
        (runs[0].id, RunStatus.PENDING),
        (runs[1].id, RunStatus.UNKNOWN),
        (runs[2].id, RunStatus.PENDING),
    ]
    assert (store.get_run(pending.id), store.get_run(done.id)) == (pending, done)
    assert store.sweep(60, now) == []


# --- races between processes and threads ----------------------------------------------------------

CLAIMER = """
import sys
from datetime import datetime, timezone
from reconciler.core.state import RunStatus
from reconciler.adapters.store.factory import open_store
store = open_store(sys.argv[1])
ids = [int(i) for i in sys.argv[2].split(",")]
print("ready", flush=True)
sys.stdin.readline()
now = datetime.now(timezone.utc)
for run_id in ids:
    run = store.claim(run_id, sys.argv[3], now)
    if run is not None:
        store.mark_dispatched(run.id, run.epoch, now)
        store.finish(run.id, run.epoch, RunStatus.SUCCEEDED, now, output=sys.argv[3])
        print(run.id, flush=True)
store.close()
"""

RECORDER = """
import sys
from datetime import datetime, timezone
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason
from reconciler.adapters.store.factory import open_store
store = open_store(sys.argv[1])
plan = Plan(enqueue=tuple(Enqueue("prod/web", f"m{i}", "v1", 3, Reason.NEW)
                          for i in range(int(sys.argv[2]))))
print("ready", flush=True)
sys.stdin.readline()
for run in store.record_plan(plan, "c0ffee", datetime.now(timezone.utc)):
    print(run.id, flush=True)
store.close()
"""

OPENER = """
import sys
from reconciler.adapters.store.factory import open_store
print("ready", flush=True)
sys.stdin.readline()
open_store(sys.argv[1]).close()
print("opened", flush=True)
"""


def test_concurrent_claims_from_processes_claim_each_run_once(store, store_url, now):
    ids = [
        r.id
        for r in store.record_plan(
            Plan(enqueue=tuple(enqueue(f"m{i}") for i in range(200))), None, now
        )
    ]
    # Half walk the ids forwards, half backwards: every run is contended from both ends.
    orders = [ids, ids[::-1]] * 2
    outputs = race(
        CLAIMER,
        [[store_url, ",".join(map(str, order)), f"worker{n}"] for n, order in enumerate(orders)],
    )
    claims = sorted(int(i) for out in outputs for i in out)
    assert claims == ids  # each run claimed exactly once, none lost
    assert store.counts()["succeeded"] == 200
    assert {store.get_run(i).output for i in ids} <= {f"worker{n}" for n in range(4)}


def test_two_processes_recording_the_same_plan_insert_each_run_once(store, store_url):
    outputs = race(RECORDER, [[store_url, "300"], [store_url, "300"]])
    inserted = sorted(int(i) for out in outputs for i in out)
    assert len(inserted) == len(set(inserted)) == 300
    assert len(store.pending()) == 300


def test_two_threads_recording_the_same_plan_insert_each_run_once(store, open_handle, now):
    plan = Plan(enqueue=tuple(enqueue(f"m{i}") for i in range(300)))
    handles = [open_handle(), open_handle()]
    start = threading.Barrier(len(handles))
    inserted: list[list[Run]] = []

    def planner(handle):
        start.wait()
        inserted.append(handle.record_plan(plan, "c0ffee", now))

    threads = [threading.Thread(target=planner, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [run.id for runs in inserted for run in runs]
    assert len(ids) == len(set(ids)) == 300
    assert sorted((r.task, r.machine) for r in store.pending()) == sorted(
        (e.task, e.machine) for e in plan.enqueue
    )


# --- migrations -----------------------------------------------------------------------------------

MIGRATIONS: dict[str, Callable] = {
    "sqlite": sqlite_store._sql_file,
    "postgresql": pg_store._sql_file,
}


def _recorded(raw) -> list[tuple]:
    return [
        tuple(row)
        for row in raw.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    ]


def test_migrations_are_recorded_and_reopening_is_idempotent(store, open_handle, raw, backend, now):
    expected = [(m.version, m.name) for m in MIGRATIONS[backend]()[0]]
    assert [v for v, _ in expected] == sorted({v for v, _ in expected})  # numbered, unique
    assert _recorded(raw) == expected
    [run] = store.record_plan(Plan(enqueue=(enqueue(),)), None, now)
    store.close()
    again = open_handle()
    assert again.get_run(run.id) == run
    assert _recorded(raw) == expected


def test_processes_opening_a_fresh_store_at_once_migrate_it_once(store_url, raw, backend):
    outputs = race(OPENER, [[store_url]] * 4)  # nothing has opened this store before
    assert outputs == [["opened"]] * 4
    expected = [(m.version, m.name) for m in MIGRATIONS[backend]()[0]]
    assert _recorded(raw) == expected


def test_claim_respects_max_parallel_of_the_runs_machine(store, now):
    from reconciler.core.plan import Enqueue, Plan
    from reconciler.core.state import Reason

    plan = Plan(
        enqueue=tuple(Enqueue(f"t/task{i}", "m1", "v", 3, Reason.NEW) for i in range(3))
        + (Enqueue("t/task0", "m2", "v", 3, Reason.NEW),)
    )
    runs = store.record_plan(plan, None, now)
    on_m1 = [r for r in runs if r.machine == "m1"]
    assert store.claim(on_m1[0].id, "w1", now, max_parallel=2) is not None
    assert store.claim(on_m1[1].id, "w2", now, max_parallel=2) is not None
    assert store.claim(on_m1[2].id, "w3", now, max_parallel=2) is None  # m1 is full
    other = next(r for r in runs if r.machine == "m2")
    assert store.claim(other.id, "w3", now, max_parallel=2) is not None  # m2 is not


def test_last_commit_is_the_latest_recorded(store, now):
    assert store.last_commit() is None
    store.record_commit("a" * 40, now)
    store.record_commit("b" * 40, now)
    assert store.last_commit() == "b" * 40
