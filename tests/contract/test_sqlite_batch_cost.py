"""SQLite: what a batch of ends or dispatch marks costs does not grow with the runs in flight.

A drain records each round's ends (and a worker its dispatch marks) in one statement over a
JSON list of the runs. The planner once walked every running run by the status index and
scanned the JSON again for each: 16 ends cost 25 times more with 400 runs in flight than with
16. The cost is counted in SQLite's own virtual-machine steps (its progress handler), which
no machine's speed changes, not in seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.adapters.store.base import ClaimRequest, RunEnd
from reconciler.adapters.store.sqlite import SqliteStore
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason, RunStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 16
STEPS_PER_CALL = 100  # SQLite calls the handler once every this many VM instructions


def _store_with_running(tmp_path, in_flight: int) -> tuple[SqliteStore, list]:
    """A store with `in_flight` runs claimed (running, not yet dispatched)."""
    store = SqliteStore(tmp_path / f"state-{in_flight}.db")
    plan = Plan(
        enqueue=tuple(
            Enqueue(f"team/task{i}", f"m{i % 8}", "v1", 3, Reason.NEW) for i in range(in_flight)
        )
    )
    runs = store.record_plan(plan, "c0ffee", NOW)
    took = store.claim_batch([ClaimRequest(run.id) for run in runs], "bench", NOW)
    assert len(took.runs) == in_flight
    return store, took.runs


def _vm_steps(store: SqliteStore, write) -> int:
    """SQLite VM instructions (in units of STEPS_PER_CALL) that `write()` executes."""
    calls = 0

    def count() -> int:
        nonlocal calls
        calls += 1
        return 0  # 0: go on

    store._conn.set_progress_handler(count, STEPS_PER_CALL)
    try:
        write()
    finally:
        store._conn.set_progress_handler(None, STEPS_PER_CALL)
    return calls


def _costs(tmp_path, in_flight: int) -> tuple[int, int]:
    """(dispatch marks, ends) of BATCH runs while `in_flight` runs are running."""
    store, running = _store_with_running(tmp_path, in_flight)
    try:
        batch = running[:BATCH]
        marked = []
        dispatch = _vm_steps(store, lambda: marked.extend(store.dispatch_batch(batch, NOW).runs))
        assert len(marked) == BATCH
        ends = [RunEnd(run.id, run.epoch, RunStatus.SUCCEEDED, exit_code=0) for run in marked]
        ended = []
        end = _vm_steps(store, lambda: ended.extend(store.end_batch(ends, NOW).runs))
        assert [run.status for run in ended] == [RunStatus.SUCCEEDED] * BATCH
        return dispatch, end
    finally:
        store.close()


def test_a_batch_of_ends_or_dispatch_marks_costs_the_same_with_400_runs_in_flight_as_with_16(
    tmp_path,
):
    few_dispatch, few_end = _costs(tmp_path, BATCH)
    many_dispatch, many_end = _costs(tmp_path, 400)
    # The same 16 rows change in both; a walk of every running run would cost ~25x.
    assert many_dispatch < 1.5 * few_dispatch, (few_dispatch, many_dispatch)
    assert many_end < 1.5 * few_end, (few_end, many_end)
