"""The state store contract (store.base.StateStore), run against every backend (conftest).

The first part holds for any backend; the last part covers what only the SQLite backend has:
its file, its schema, its lock file, its URL forms. Real databases (a file in tmp_path, a
fresh PostgreSQL database), no sleeps: another process is waited on through its output (a
protocol signal), with a deadline. Leases, sweeping and races between processes are in
test_store_leases.py; what only PostgreSQL has is in test_store_postgres.py.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from reconciler.adapters.store import sqlite as sqlite_store
from reconciler.adapters.store.base import OUTPUT_CAP, LeaseLost
from reconciler.adapters.store.factory import open_store, sqlite_path
from reconciler.adapters.store.sqlite import COLUMNS, SqliteStore, _sql_file
from reconciler.core.errors import InputError, LockError, StoreError
from reconciler.core.holds import Hold, HoldKind
from reconciler.core.model import Freeze
from reconciler.core.output import split_mark
from reconciler.core.plan import Cancel, Plan, Reslot
from reconciler.core.state import ExecutedState, Reason, Run, RunStatus
from tests.support.store_contract import add, ended, enqueue, one

PROBLEMS = (RunStatus.FAILED, RunStatus.BLOCKED, RunStatus.UNKNOWN)


# --- record_plan ----------------------------------------------------------------------------


def test_record_plan_inserts_pending_runs_with_plan_fields(store, now, later):
    [run] = add(
        store,
        now,
        enqueue(
            priority=2,
            slot="2024-05-01T12:00:00+00:00",
            reason=Reason.SCHEDULE,
            hold=Hold(HoldKind.WINDOW, later(hours=1)),
        ),
    )
    assert (run.status, run.attempt, run.priority, run.reason) == (
        RunStatus.PENDING,
        1,
        2,
        "schedule",
    )
    # A deny window's hold is judged at dispatch (the window may change), never stored.
    assert (run.commit, run.slot, run.created_at, run.not_before) == (
        "c0ffee",
        "2024-05-01T12:00:00+00:00",
        now,
        None,
    )
    assert (run.dispatched, run.retry_requested, run.epoch, run.owner) == (False, False, 0, None)
    assert store.get_run(run.id) == run


def test_record_plan_inserts_a_plan_of_many_runs_in_its_order_with_names_as_given(store, now):
    """SQLite inserts a plan's runs in one statement through JSON: the order (the ids, so
    dispatch by age) is the plan's, and a run whose key is active is left out, not the rest."""
    [active] = add(store, now, enqueue(task="ops/zeta", machine="m😀"))
    names = ["ops/zeta", "ops/é-ü", "ops/a", 'ops/"quoted" \\ back', "ops/m"]
    inserted = add(store, now, *(enqueue(task=name, machine="m😀") for name in names))
    assert [run.task for run in inserted] == names[1:]
    assert [run.id for run in inserted] == sorted(run.id for run in inserted)
    assert all(run.id > active.id and run.machine == "m😀" for run in inserted)
    assert [store.get_run(run.id) for run in inserted] == inserted


def test_record_plan_is_idempotent_for_a_key_with_an_active_run(store, now):
    first = add(store, now, enqueue(), enqueue(machine="m2"))
    again = add(store, now, enqueue(), enqueue(machine="m2"), enqueue(machine="m3"))
    assert [r.machine for r in again] == ["m3"]
    assert len(store.pending()) == 3
    store.claim(first[0].id, "w", now)  # running is active too
    assert add(store, now, enqueue()) == []


def test_record_plan_moves_a_waiting_run_to_a_later_slot_but_not_a_started_one(store, now):
    waiting, started = add(store, now, enqueue(slot="s1"), enqueue(machine="m2", slot="s1"))
    store.claim(started.id, "w", now)
    store.record_plan(Plan(reslot=(Reslot(waiting.id, "s3"), Reslot(started.id, "s3"))), None, now)
    runs = store.get_runs([waiting.id, started.id])
    assert (runs[waiting.id].slot, runs[started.id].slot) == ("s3", "s1")


def test_the_freezes_of_the_latest_plan_replace_the_recorded_ones(store, now, later):
    assert store.reconciled_freezes() == []
    team, task = Freeze("INC-7", later(hours=2), True), Freeze("wait for QA")
    store.record_plan(Plan(freezes=(("task ops/a", task), ("team ops", team))), None, now)
    assert store.reconciled_freezes() == [("task ops/a", task), ("team ops", team)]
    store.record_plan(Plan(), None, now)  # a plan without freezes leaves them
    assert len(store.reconciled_freezes()) == 2
    store.record_plan(Plan(freezes=()), None, now)  # a pass of an inventory with none
    assert store.reconciled_freezes() == []


def test_record_plan_keys_include_version_and_slot(store, now):
    runs = add(store, now, enqueue(), enqueue(version="v2"), enqueue(slot="s1"), enqueue(slot="s2"))
    assert len(runs) == 4


def test_record_plan_enqueues_again_once_the_previous_run_ended(store, now):
    ended(store, now, RunStatus.SUCCEEDED)
    assert len(add(store, now, enqueue())) == 1


def test_record_plan_cancels_only_pending_runs(store, now, later):
    pending, running = add(store, now, enqueue(), enqueue(machine="m2"))
    store.claim(running.id, "w", now)
    plan = Plan(
        cancel=(
            Cancel(pending.id, pending.task, "m1", "removed"),
            Cancel(running.id, running.task, "m2", "removed"),
        )
    )
    assert store.record_plan(plan, None, later(seconds=1)) == []
    cancelled = store.get_run(pending.id)
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.finished_at == later(seconds=1)
    assert cancelled.error == "cancelled: task removed from the desired state"
    assert store.get_run(running.id).status is RunStatus.RUNNING


def test_record_plan_cancel_and_enqueue_of_the_same_key_replaces_the_run(store, now):
    old = one(store, now)
    plan = Plan(enqueue=(enqueue(),), cancel=(Cancel(old.id, old.task, old.machine, "changed"),))
    [new] = store.record_plan(plan, None, now)
    assert new.id != old.id and store.get_run(old.id).status is RunStatus.CANCELLED


def test_record_plan_is_all_or_nothing(store, now):
    with pytest.raises(StoreError):
        add(store, now, enqueue(machine="ok"), enqueue(machine="bad", priority=9))
    assert store.pending() == []


# --- claim and the lease --------------------------------------------------------------------


def test_claim_moves_pending_to_running_and_bumps_epoch(store, now, later):
    run = store.claim(one(store, now).id, "host:1", later(seconds=2))
    assert (run.status, run.owner, run.epoch, run.started_at) == (
        RunStatus.RUNNING,
        "host:1",
        1,
        later(seconds=2),
    )


def test_claim_returns_none_unless_pending(store, now):
    run = one(store, now)
    assert store.claim(run.id, "a", now) is not None
    assert store.claim(run.id, "b", now) is None
    assert store.claim(999_999, "b", now) is None
    assert store.get_run(run.id).owner == "a"


def test_mark_dispatched_sets_the_flag_under_the_lease(store, now):
    run = store.claim(one(store, now).id, "w", now)
    assert store.mark_dispatched(run.id, run.epoch, now).dispatched is True


@pytest.mark.parametrize("write", ["mark_dispatched", "finish", "requeue"])
def test_writes_with_a_stale_epoch_raise_lease_lost_and_change_nothing(store, now, later, write):
    first = store.claim(one(store, now).id, "a", now)
    store.requeue(first.id, first.epoch, now, now)
    second = store.claim(first.id, "b", now)
    calls = {
        "mark_dispatched": lambda: store.mark_dispatched(first.id, first.epoch, now),
        "finish": lambda: store.finish(first.id, first.epoch, RunStatus.SUCCEEDED, now),
        "requeue": lambda: store.requeue(first.id, first.epoch, later(hours=1), now),
    }
    with pytest.raises(LeaseLost, match=f"run {first.id} .*epoch {first.epoch}"):
        calls[write]()
    assert store.get_run(first.id) == second


def test_leased_writes_on_a_run_that_is_not_running_raise_lease_lost(store, now):
    run = one(store, now)
    with pytest.raises(LeaseLost):
        store.mark_dispatched(run.id, run.epoch, now)
    with pytest.raises(LeaseLost, match="does not exist"):
        store.finish(424242, 1, RunStatus.FAILED, now)
    assert isinstance(LeaseLost("x"), StoreError)  # callers that only know StoreError stop too


# --- finish, requeue, block -------------------------------------------------------------------


def test_finish_records_the_result(store, now, later):
    run = store.claim(one(store, now).id, "w", now)
    done = store.finish(
        run.id,
        run.epoch,
        RunStatus.FAILED,
        later(seconds=3),
        exit_code=2,
        output="boom\n",
        error="exit 2",
    )
    assert (done.status, done.exit_code, done.output, done.error, done.finished_at) == (
        RunStatus.FAILED,
        2,
        "boom\n",
        "exit 2",
        later(seconds=3),
    )
    assert store.get_run(run.id) == done


def test_finish_keeps_short_output_unchanged(store, now):
    text = "héllo\x00wörld\n" * 100
    run = store.claim(one(store, now).id, "w", now)
    assert store.finish(run.id, run.epoch, RunStatus.SUCCEEDED, now, output=text).output == text


def test_finish_caps_output_to_its_last_bytes_with_a_marker(store, now):
    text = "".join(f"line {i}\n" for i in range(20_000))
    run = store.claim(one(store, now).id, "w", now)
    kept = store.finish(run.id, run.epoch, RunStatus.FAILED, now, output=text).output
    dropped, tail = split_mark(kept)
    assert len(kept.encode()) <= OUTPUT_CAP
    assert text.endswith(tail) and dropped + len(tail.encode()) == len(text.encode())
    assert len(kept.encode()) > OUTPUT_CAP - 8  # only the cut character's bytes go missing


def test_output_cap_cuts_on_a_utf8_character_boundary(store, now):
    text = "€" * OUTPUT_CAP  # three bytes each: any byte cut lands inside characters
    run = store.claim(one(store, now).id, "w", now)
    kept = store.get_run(
        store.finish(run.id, run.epoch, RunStatus.FAILED, now, output=text).id
    ).output
    dropped, tail = split_mark(kept)
    assert dropped > 0 and set(tail) == {"€"}
    assert len(kept.encode()) <= OUTPUT_CAP


def test_requeue_returns_the_run_to_pending_for_its_next_attempt(store, now, later):
    run = store.claim(one(store, now).id, "w", now)
    store.mark_dispatched(run.id, run.epoch, now)
    back = store.requeue(
        run.id,
        run.epoch,
        later(seconds=30),
        later(seconds=1),
        exit_code=1,
        output="try again",
        error="exit 1",
    )
    assert (back.status, back.attempt, back.not_before, back.dispatched) == (
        RunStatus.PENDING,
        2,
        later(seconds=30),
        False,
    )
    assert (back.exit_code, back.output, back.error) == (1, "try again", "exit 1")
    assert store.claim(run.id, "w2", now).epoch == run.epoch + 1


def test_block_ends_a_pending_run_with_an_error(store, now, later):
    run = one(store, now)
    blocked = store.block(run.id, "after prod/db failed", later(seconds=1))
    assert (blocked.status, blocked.error, blocked.finished_at) == (
        RunStatus.BLOCKED,
        "after prod/db failed",
        later(seconds=1),
    )
    assert store.block(run.id, "again", now) is None
    assert store.block(store.claim(one(store, now, machine="m2").id, "w", now).id, "x", now) is None


# --- recover ----------------------------------------------------------------------------------


# A dead pass's runs: their leases have expired (an expired lease proves a holder dead on
# every store; SQLite also knows a holder whose process is gone: test_store_recover_owner).


def test_recover_returns_undispatched_runs_to_pending(store, raw, now, later):
    run = store.claim(one(store, now).id, "dead", now)
    raw.expire_all_leases()
    [back] = store.recover(later(minutes=1))
    assert (back.id, back.status, back.dispatched, back.finished_at) == (
        run.id,
        RunStatus.PENDING,
        False,
        None,
    )
    assert store.claim(run.id, "alive", now).epoch == run.epoch + 1


def test_recover_marks_dispatched_runs_unknown(store, raw, now, later):
    run = store.claim(one(store, now).id, "dead", now)
    store.mark_dispatched(run.id, run.epoch, now)
    raw.expire_all_leases()
    [lost] = store.recover(later(minutes=1))
    assert (lost.status, lost.finished_at) == (RunStatus.UNKNOWN, later(minutes=1))
    assert lost.error == (
        "the reconciler stopped while this run was executing; its result is unknown"
    )


def test_recover_leaves_other_runs_alone_and_is_a_noop_when_nothing_runs(store, now):
    pending = one(store, now)
    done = ended(store, now, RunStatus.SUCCEEDED, machine="m2")
    assert store.recover(now) == []
    assert store.get_run(pending.id) == pending
    assert store.get_run(done.id) == done


def test_recover_returns_changed_runs_by_id(store, raw, now):
    runs = add(store, now, enqueue(machine="a"), enqueue(machine="b"), enqueue(machine="c"))
    claimed = [store.claim(r.id, "dead", now) for r in runs]
    store.mark_dispatched(claimed[1].id, claimed[1].epoch, now)
    raw.expire_all_leases()
    assert [(r.id, r.status) for r in store.recover(now)] == [
        (runs[0].id, RunStatus.PENDING),
        (runs[1].id, RunStatus.UNKNOWN),
        (runs[2].id, RunStatus.PENDING),
    ]


# --- reads --------------------------------------------------------------------------------------


def test_pending_orders_by_priority_then_age_then_id(store, now, later):
    a = one(store, later(seconds=2), task="t/a", priority=3)
    b = one(store, later(seconds=1), task="t/b", priority=3)
    c = one(store, later(seconds=9), task="t/c", priority=1)
    d = one(store, later(seconds=1), task="t/d", priority=3)
    assert [r.id for r in store.pending()] == [c.id, b.id, d.id, a.id]


def test_running_lists_running_runs_only(store, now):
    runs = add(store, now, enqueue(machine="a"), enqueue(machine="b"))
    store.claim(runs[1].id, "w", now)
    assert [(r.id, r.status) for r in store.running()] == [(runs[1].id, RunStatus.RUNNING)]


def test_queue_reads_leave_output_out_and_get_run_has_it(store, now):
    done = ended(store, now, RunStatus.FAILED)
    assert store.get_run(done.id).output == "out"
    assert store.snapshot().latest_run("prod/web", "m1", "v1").output == ""
    assert store.list_runs()[0].output == ""
    assert store.list_runs()[0].error == "err"


def test_get_run_of_an_unknown_id_is_none(store):
    assert store.get_run(1) is None


def test_snapshot_holds_the_latest_run_per_version_and_every_active_run(store, now):
    old = ended(store, now, RunStatus.FAILED)
    newer = ended(store, now, RunStatus.SUCCEEDED)
    v2 = ended(store, now, RunStatus.SUCCEEDED, version="v2")
    active = one(store, now)
    snap = store.snapshot()
    assert isinstance(snap, ExecutedState)
    assert snap.latest_run("prod/web", "m1", "v1").id == active.id
    assert snap.latest_run("prod/web", "m1", "v2").id == v2.id
    assert [r.id for r in snap.active] == [active.id]
    assert snap.latest_on("prod/web", "m1").id == active.id
    assert old.id < newer.id < active.id


def test_snapshot_of_an_empty_store_is_empty(store):
    snap = store.snapshot()
    assert (dict(snap.latest), snap.active) == ({}, ())


def test_list_runs_is_newest_first_and_filters_by_status_team_and_limit(store, now):
    a = one(store, now, task="ops/a")
    b = ended(store, now, RunStatus.FAILED, task="web_1/b")
    c = one(store, now, task="web/c")
    d = one(store, now, task="web_1/d")
    assert [r.id for r in store.list_runs()] == [d.id, c.id, b.id, a.id]
    assert [r.id for r in store.list_runs(team="web_1")] == [d.id, b.id]
    assert [r.id for r in store.list_runs(team="web")] == [c.id]
    assert [r.id for r in store.list_runs(status=[RunStatus.FAILED])] == [b.id]
    assert [r.id for r in store.list_runs(status=[RunStatus.PENDING], team="web_1")] == [d.id]
    assert [r.id for r in store.list_runs(status=[])] == []
    assert [r.id for r in store.list_runs(limit=2)] == [d.id, c.id]


def test_counts_gives_every_status(store, now):
    one(store, now)
    ended(store, now, RunStatus.FAILED, machine="m2")
    ended(store, now, RunStatus.FAILED, machine="m3")
    counts = store.counts()
    assert counts == {**{s.value: 0 for s in RunStatus}, "pending": 1, "failed": 2}


def test_failed_since_counts_problem_runs_that_ended_at_or_after(store, now, later):
    for status, machine in zip(PROBLEMS, "abc"):
        ended(store, now, status, machine=machine)
    ended(store, now, RunStatus.SUCCEEDED, machine="d")
    blocked = one(store, now, machine="e")
    store.block(blocked.id, "dep failed", later(seconds=5))
    assert store.failed_since(now) == 4
    assert store.failed_since(later(seconds=5)) == 1
    assert store.failed_since(later(seconds=6)) == 0


def test_times_come_back_aware_utc_with_microseconds(store):
    cet = timezone(timedelta(hours=1))
    at = datetime(2024, 1, 1, 13, 0, 0, 5, tzinfo=cet)
    run = store.get_run(one(store, at).id)
    assert run.created_at == at and run.created_at.tzinfo is not None
    assert run.created_at.utcoffset() == timedelta(0) and run.created_at.microsecond == 5


# --- queue commands -----------------------------------------------------------------------------


def test_cancel_run_cancels_a_pending_run(store, now):
    run = store.cancel_run(one(store, now).id, now)
    assert (run.status, run.finished_at) == (RunStatus.CANCELLED, now)
    assert run.error.startswith("cancelled")


def test_cancel_run_refuses_a_run_that_is_not_pending_in_one_line(store, now):
    done = ended(store, now, RunStatus.SUCCEEDED)
    with pytest.raises(InputError) as caught:
        store.cancel_run(done.id, now)
    assert str(caught.value) == f"run {done.id} is succeeded; only pending runs can be cancelled"
    assert store.get_run(done.id) == done


def test_cancel_run_of_an_unknown_id_is_an_input_error(store, now):
    with pytest.raises(InputError, match="^run 77 does not exist"):
        store.cancel_run(77, now)


@pytest.mark.parametrize("status", PROBLEMS)
def test_request_retry_flags_failed_blocked_and_unknown_runs(store, now, status):
    run = ended(store, now, status)
    flagged = store.request_retry(run.id, now)
    assert (flagged.retry_requested, flagged.status) == (True, status)
    assert store.request_retry(run.id, now).retry_requested  # twice is harmless


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.SKIPPED, RunStatus.CANCELLED])
def test_request_retry_refuses_other_statuses(store, now, status):
    run = ended(store, now, status)
    with pytest.raises(InputError, match=f"^run {run.id} is {status.value}; only failed"):
        store.request_retry(run.id, now)
    with pytest.raises(InputError):
        store.request_retry(one(store, now, machine="m9").id, now)
    with pytest.raises(InputError, match="does not exist"):
        store.request_retry(31337, now)


# --- concurrency, reopening -----------------------------------------------------------------------


def test_concurrent_claims_from_threads_claim_each_run_once(store, open_handle, now):
    ids = [r.id for r in add(store, now, *(enqueue(machine=f"m{i}") for i in range(200)))]
    handles = [store, store, store, open_handle(), open_handle()]  # shared and separate handles
    start = threading.Barrier(len(handles) * 2)
    claimed: list[int] = []

    def worker(handle):
        start.wait()
        for run_id in ids:
            run = handle.claim(run_id, threading.current_thread().name, now)
            if run is not None:
                handle.finish(run.id, run.epoch, RunStatus.SUCCEEDED, now, output="ok")
                claimed.append(run.id)

    threads = [threading.Thread(target=worker, args=(h,)) for h in handles * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == ids
    assert store.counts()["succeeded"] == 200


def test_reads_and_writes_interleave_safely_across_threads(store, now):
    errors: list[BaseException] = []

    def writer(n):
        try:
            for i in range(50):
                add(store, now, enqueue(task=f"t{n}/x", machine=f"m{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            for _ in range(50):
                store.snapshot(), store.pending(), store.counts()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(store.pending()) == 200


def test_a_second_handle_sees_committed_writes(store, open_handle, now):
    run = one(store, now)
    other = open_handle()
    assert other.get_run(run.id) == run
    assert other.claim(run.id, "other", now) is not None
    assert store.claim(run.id, "me", now) is None


def test_a_closed_store_raises_store_error(store):
    store.close()
    with pytest.raises(StoreError):
        store.pending()


# --- the pass lock --------------------------------------------------------------------------------

HOLDER = """
import sys, time
from reconciler.adapters.store.factory import open_store
store = open_store(sys.argv[1])
with store.pass_lock(timeout=10):
    print("locked", flush=True)
    sys.stdin.read()  # hold until the parent closes stdin or kills us
"""

TAKER = """
import sys
from reconciler.core.errors import LockError
from reconciler.adapters.store.factory import open_store
store = open_store(sys.argv[1])
try:
    with store.pass_lock(timeout=float(sys.argv[2])):
        print("acquired", flush=True)
except LockError as exc:
    print("LockError:", exc, flush=True)
    sys.exit(3)
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        **kwargs,
    )


@pytest.fixture
def holder(store_url):
    """Another process holding the pass lock; killed at teardown if still alive."""
    proc = _python(HOLDER, store_url)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


LOCK_NAMES = {"sqlite": r"state\.db\.lock", "postgresql": r"of state store postgresql://"}


def test_pass_lock_held_by_another_process_times_out_with_lock_error(store, backend, holder):
    started = time.monotonic()
    with pytest.raises(
        LockError,
        match="another `reconcile` pass holds the lock "
        f".*{LOCK_NAMES[backend]}.*see --lock-timeout",
    ):
        with store.pass_lock(timeout=0.2):
            pass  # pragma: no cover
    assert time.monotonic() - started >= 0.2


def test_pass_lock_is_released_when_its_holder_process_is_killed(store, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with store.pass_lock(timeout=10):
        pass


def test_pass_lock_held_here_makes_another_process_time_out(store, store_url):
    with store.pass_lock(timeout=1):
        taker = _python(TAKER, store_url, "0.3")
        out, _ = taker.communicate(timeout=60)
    assert taker.returncode == 3
    assert "another `reconcile` pass holds the lock" in out


def test_pass_lock_is_free_again_after_the_block_exits(store, open_handle):
    with store.pass_lock(timeout=1):
        pass
    with open_handle().pass_lock(timeout=0):
        pass


# --- SQLite only: the file, its schema, its URLs -----------------------------------------------------


@pytest.fixture
def db(tmp_path):
    return tmp_path / "state.db"


def test_sqlite_schema_migrations_are_recorded_and_reopening_is_idempotent(db, now):
    store = SqliteStore(db)
    run = one(store, now)
    store.close()
    store = SqliteStore(db)
    assert store.get_run(run.id) == run
    store.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert rows == [(m.version, m.name) for m in _sql_file()[0]]


def test_sqlite_runs_columns_match_the_row_mapping(db):
    SqliteStore(db).close()
    with sqlite3.connect(db) as conn:
        names = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    assert tuple(names[: len(COLUMNS)]) == COLUMNS
    manual = ("trigger", "actor", "params")  # migration 13, read by `_manual_fields`
    assert set(COLUMNS) | set(manual) == set(Run.__dataclass_fields__)
    assert names[len(COLUMNS) :] == ["heartbeat_at", "planner", *manual]
    assert names.index("trigger") == sqlite_store._MANUAL_AT


def test_sqlite_uses_wal(db):
    SqliteStore(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize("slot", [None, "2024-05-01T12:00:00+00:00"])
def test_sqlite_unique_index_refuses_a_second_active_run_of_a_key(db, now, slot):
    store = SqliteStore(db)
    one(store, now, slot=slot)
    store.close()
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(
            "INSERT INTO runs (task, machine, version, slot, priority, status, reason,"
            " created_at) VALUES ('prod/web', 'm1', 'v1', ?, 3, 'running', 'new', 'x')",
            (slot,),
        )


def test_sqlite_check_constraints_refuse_bad_status_and_priority(db):
    SqliteStore(db).close()
    insert = (
        "INSERT INTO runs (task, machine, version, priority, status, reason, created_at)"
        " VALUES ('t/a', 'm', 'v', ?, ?, 'new', 'x')"
    )
    with sqlite3.connect(db) as conn:
        for priority, status in [(0, "pending"), (6, "pending"), (3, "done")]:
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                conn.execute(insert, (priority, status))


def test_sqlite_times_are_stored_as_sortable_utc_text(db):
    store = SqliteStore(db)
    one(store, datetime(2024, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))))
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT created_at FROM runs").fetchone() == (
            "2024-01-01T12:00:00.000000+00:00",
        )


def test_sqlite_plan_keeps_a_text_its_json_would_cut(db, now):
    """A NUL would end the text in SQLite's JSON (no name the inventory accepts holds one, but
    the store does not rely on that): such a plan is inserted run by run, as given."""
    store = SqliteStore(db)
    names = ["ops/a", "ops/nul\x00inside", "ops/b"]
    inserted = add(store, now, *(enqueue(task=name) for name in names))
    assert [store.get_run(run.id).task for run in inserted] == names
    store.close()


def test_sqlite_older_than_its_json_operators_is_refused_by_name(db, monkeypatch):
    """The queries use `->>` (SQLite 3.38): an older library is named, not a syntax error
    at the first round."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 37, 2))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.37.2")
    with pytest.raises(StoreError, match=r"SQLite 3\.37\.2 is too old \(3\.38 or newer"):
        SqliteStore(db)


def _make_read_only(path) -> Callable[[], object]:
    """Make `path` unwritable even for root (chattr +i); returns the undo."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("running as root and chattr +i is not available here")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_sqlite_read_only_file_raises_store_error_naming_the_file(db, now):
    store = SqliteStore(db)
    one(store, now)
    store.close()
    undo = _make_read_only(db)
    try:
        store = SqliteStore(db)
        with pytest.raises(
            StoreError, match=f"cannot write state store {db}: attempt to write a readonly database"
        ):
            one(store, now, machine="m2")
        assert len(store.pending()) == 1  # reads still work
        store.close()
    finally:
        undo()


def test_sqlite_corrupt_file_raises_store_error_naming_the_file(db):
    db.write_bytes(b"this is not a database, not even close" * 100)
    with pytest.raises(StoreError, match=f"cannot open state store {db}: file is not a database"):
        SqliteStore(db)


# --- SQLite URLs (factory) -------------------------------------------------------------------------


def test_factory_opens_a_relative_url_under_the_cwd_and_creates_its_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///.reconciler/state.db")
    assert isinstance(store, SqliteStore) and store.path == ".reconciler/state.db"
    store.close()
    assert (tmp_path / ".reconciler" / "state.db").is_file()


@pytest.mark.parametrize("form", ["sqlite:///{rel}", "sqlite:///{abs}", "{rel}", "{abs}"])
def test_factory_url_forms_name_the_same_file(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    url = form.format(rel="d/state.db", abs=tmp_path / "d" / "state.db")
    assert sqlite_path(url).resolve() == (tmp_path / "d" / "state.db").resolve()


def test_factory_without_create_returns_none_and_creates_nothing(tmp_path):
    assert open_store(f"sqlite:///{tmp_path}/new/state.db", create=False) is None
    assert not (tmp_path / "new").exists()


def test_factory_without_create_opens_an_existing_store(tmp_path):
    open_store(str(tmp_path / "state.db")).close()
    store = open_store(str(tmp_path / "state.db"), create=False)
    assert store is not None and store.counts()["pending"] == 0
    store.close()


def test_sqlite_path_of_a_postgresql_url_is_an_input_error_without_the_password():
    with pytest.raises(InputError, match="a PostgreSQL store has no database file") as caught:
        sqlite_path("postgresql://admin:hunter2@db/reconciler")
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)
    assert "postgresql://admin:***@db/reconciler" in str(caught.value)


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite://host/state.db", "sqlite:///", ""])
def test_factory_refuses_unusable_urls_with_a_hint(url):
    with pytest.raises(InputError, match=r"\(hint: use sqlite:///"):
        open_store(url)
