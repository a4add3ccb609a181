"""The store's side of adoption (`StateStore.adopt`), on every backend (conftest).

A run recorded `unknown` (its reconciler died, or its connection was lost) may later get the
result its target kept: `adopt` gives it that final status, exit code, output and error, once,
and only while it is still `unknown`; a run in any other state is left alone. Two reconcilers
adopting the same run at once: exactly one wins.
"""

from __future__ import annotations

import threading

import pytest

from reconciler.adapters.store.base import OUTPUT_CAP
from reconciler.core.state import RunStatus
from tests.support.store_contract import add, ended, enqueue, one


def lost(store, raw, now, later, **fields):
    """A dispatched run whose pass died: `unknown` after recovery."""
    run = store.claim(one(store, now, **fields).id, "dead", now)
    store.mark_dispatched(run.id, run.epoch, now)
    raw.expire_all_leases()
    [recovered] = store.recover(later(minutes=1))
    assert recovered.status is RunStatus.UNKNOWN
    return recovered


def test_an_unknown_run_adopts_its_real_result(store, raw, now, later):
    run = lost(store, raw, now, later)
    adopted = store.adopt(
        run.id, RunStatus.FAILED, exit_code=5, output="migrated 42 rows\n", error="exit code 5"
    )
    assert (adopted.id, adopted.status, adopted.exit_code, adopted.output, adopted.error) == (
        run.id,
        RunStatus.FAILED,
        5,
        "migrated 42 rows\n",
        "exit code 5",
    )
    # What it was keeps: one attempt, started and ended when the dead pass left it.
    assert (adopted.attempt, adopted.started_at, adopted.finished_at) == (
        run.attempt,
        run.started_at,
        run.finished_at,
    )
    assert store.get_run(run.id) == adopted


def test_an_adopted_run_is_what_the_planner_sees(store, raw, now, later):
    run = lost(store, raw, now, later)
    store.adopt(run.id, RunStatus.SUCCEEDED, exit_code=0, output="ok\n")
    latest = store.snapshot().latest[(run.task, run.machine, run.version)]
    assert (latest.id, latest.status) == (run.id, RunStatus.SUCCEEDED)
    assert store.list_runs([RunStatus.UNKNOWN]) == []


@pytest.mark.parametrize(
    "status",
    [
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.SKIPPED,
        RunStatus.BLOCKED,
        RunStatus.CANCELLED,
    ],
)
def test_only_an_unknown_run_is_adopted(store, now, status):
    done = ended(store, now, status)
    assert store.adopt(done.id, RunStatus.SUCCEEDED, exit_code=0, output="late") is None
    assert store.get_run(done.id) == done


def test_pending_and_running_runs_are_not_adopted(store, now):
    pending, other = add(store, now, enqueue(machine="a"), enqueue(machine="b"))
    running = store.claim(other.id, "alive", now)
    for run in (pending, running):
        assert store.adopt(run.id, RunStatus.FAILED, exit_code=1) is None
        assert store.get_run(run.id) == run
    assert store.adopt(999_999, RunStatus.FAILED, exit_code=1) is None


def test_a_run_is_adopted_once(store, raw, now, later):
    run = lost(store, raw, now, later)
    assert store.adopt(run.id, RunStatus.FAILED, exit_code=5, output="first") is not None
    assert store.adopt(run.id, RunStatus.SUCCEEDED, exit_code=0, output="second") is None
    assert (store.get_run(run.id).status, store.get_run(run.id).output) == (
        RunStatus.FAILED,
        "first",
    )


def test_two_reconcilers_adopting_at_once_one_wins(store, raw, now, later, open_handle):
    run = lost(store, raw, now, later)
    handles = [open_handle() for _ in range(4)]
    start = threading.Barrier(len(handles))
    results: list = [None] * len(handles)

    def adopt(index: int) -> None:
        start.wait()
        results[index] = handles[index].adopt(
            run.id, RunStatus.FAILED, exit_code=index, output=f"from {index}"
        )

    threads = [threading.Thread(target=adopt, args=(i,)) for i in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert store.get_run(run.id).exit_code == winners[0].exit_code


def test_an_unknown_run_may_stay_unknown_with_a_new_error(store, raw, now, later):
    """What a pass records when the target answered that it kept nothing of the run."""
    run = lost(store, raw, now, later)
    kept = store.adopt(run.id, RunStatus.UNKNOWN, error=f"{run.error}; nothing kept")
    assert (kept.status, kept.error, kept.exit_code) == (
        RunStatus.UNKNOWN,
        f"{run.error}; nothing kept",
        None,
    )


def test_adopted_output_is_capped_to_its_tail(store, raw, now, later):
    run = lost(store, raw, now, later)
    output = "x" * OUTPUT_CAP + "the end\n"
    adopted = store.adopt(run.id, RunStatus.FAILED, exit_code=1, output=output)
    assert adopted.output.endswith("the end\n")
    assert len(adopted.output.encode()) <= OUTPUT_CAP + 200  # the tail, with a cut mark at most
