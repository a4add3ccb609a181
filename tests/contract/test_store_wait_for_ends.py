"""wait_for_ends: a pass with nothing running here, waiting on its runs held elsewhere. On
PostgreSQL it is woken as soon as another connection records an end (`end_batch`,
`round_batch`) of a run whose planner has none pending left, not by a plan (that is
`wait_for_runs`' channel) nor, while its queue is still being taken, by every end of a busy
queue; a backend that cannot be woken (SQLite) answers None at once and the caller polls."""

from __future__ import annotations

import threading

from reconciler.adapters.store.base import ClaimRequest, RunEnd
from reconciler.core.plan import Plan
from reconciler.core.state import RunStatus
from tests.support.store_contract import enqueue

PASS = "pass-1"


def _planned(store, now, *tasks: str, planner: str = PASS):
    return store.record_plan(Plan(enqueue=[enqueue(task=t) for t in tasks]), "c0ffee", now, planner)


def _running(store, now, *tasks: str, planner: str = PASS):
    """Runs of `tasks` planned by `planner`, claimed and dispatched by a worker, "w"."""
    runs = _planned(store, now, *tasks, planner=planner)
    return store.start_batch([ClaimRequest(r.id) for r in runs], "w", now).runs


def _end(run) -> RunEnd:
    return RunEnd(run.id, run.epoch, RunStatus.SUCCEEDED, exit_code=0)


def test_the_ends_of_a_taken_queue_wake_a_waiting_handle(store, open_handle, now, backend):
    worker = open_handle()
    a, b = _running(worker, now, "prod/a", "prod/b")
    if backend == "sqlite":  # never woken: it answers None at once
        worker.end_batch([_end(a)], now)
        assert store.wait_for_ends(30) is None
        return
    assert store.wait_for_ends(0.01) is False  # opens its listener; nothing ended
    for record in (
        lambda: worker.end_batch([_end(a)], now),
        lambda: worker.round_batch([_end(b)], [], "w", now),
    ):
        answers: list = []
        waiter = threading.Thread(target=lambda out=answers: out.append(store.wait_for_ends(60)))
        waiter.start()
        record()
        waiter.join(timeout=30)  # far less than the 60 s it would wait unwoken
        assert not waiter.is_alive() and answers == [True]


def test_ends_recorded_between_two_waits_wake_the_second(store, open_handle, now, backend):
    worker = open_handle()
    a, b = _running(worker, now, "prod/a", "prod/b")
    if backend == "sqlite":
        worker.end_batch([_end(a), _end(b)], now)
        assert store.wait_for_ends(30) is None
        return
    assert store.wait_for_ends(0.01) is False
    worker.end_batch([_end(a)], now)  # while the handle re-reads, say
    worker.end_batch([_end(b)], now)
    assert store.wait_for_ends(30) is True


def test_an_end_whose_planner_has_runs_pending_wakes_no_one(store, open_handle, now, backend):
    worker = open_handle()
    [a] = _running(worker, now, "prod/a")
    [other] = _running(worker, now, "prod/other", planner="pass-2")
    _planned(worker, now, "prod/waiting")  # PASS has a run pending still
    if backend == "sqlite":
        worker.end_batch([_end(a)], now)
        assert store.wait_for_ends(30) is None
        return
    assert store.wait_for_ends(0.01) is False
    worker.end_batch([_end(a)], now)
    assert store.wait_for_ends(0.2) is False
    worker.end_batch([_end(other)], now)  # pass-2 has nothing pending
    assert store.wait_for_ends(30) is True


def test_a_plan_wakes_no_end_waiter_and_an_end_no_plan_waiter(store, open_handle, now, backend):
    worker = open_handle()
    [a] = _running(worker, now, "prod/a")
    if backend == "sqlite":
        worker.end_batch([_end(a)], now)
        assert store.wait_for_ends(30) is None
        return
    assert store.wait_for_ends(0.01) is False and store.wait_for_runs(0.01) is False
    _planned(worker, now, "prod/new", planner="pass-2")  # queues a run: a plan, no end
    assert store.wait_for_ends(0.2) is False
    assert store.wait_for_runs(30) is True
    worker.end_batch([_end(a)], now)
    assert store.wait_for_runs(0.2) is False
    assert store.wait_for_ends(30) is True


def test_ends_recorded_after_listening_wake_the_first_wait(store, open_handle, now, backend):
    worker = open_handle()
    [a] = _running(worker, now, "prod/a")
    store.listen_for_ends()  # before any wait: nothing to wait for yet
    worker.end_batch([_end(a)], now)
    assert store.wait_for_ends(30) is (None if backend == "sqlite" else True)
