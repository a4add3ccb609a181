"""wait_for_ends: a pass with nothing running here, waiting on its runs held elsewhere. On
PostgreSQL it is woken as soon as another connection records an end (`end_batch`,
`round_batch`), not by a plan (that is `wait_for_runs`' channel); a backend that cannot be
woken (SQLite) answers None at once and the caller polls as before."""

from __future__ import annotations

import threading

from reconciler.adapters.store.base import ClaimRequest, RunEnd
from reconciler.core.state import RunStatus
from tests.support.store_contract import add, enqueue


def _running(store, now, *tasks: str):
    """Runs of `tasks` claimed and dispatched by a worker, "w", on `store`."""
    runs = add(store, now, *(enqueue(task=task) for task in tasks))
    return store.start_batch([ClaimRequest(r.id) for r in runs], "w", now).runs


def _end(run) -> RunEnd:
    return RunEnd(run.id, run.epoch, RunStatus.SUCCEEDED, exit_code=0)


def test_an_end_recorded_elsewhere_wakes_a_waiting_handle(store, open_handle, now, backend):
    worker = open_handle()
    a, b = _running(worker, now, "prod/a", "prod/b")
    if backend == "sqlite":
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


def test_ends_recorded_before_a_wait_wake_it_once(store, open_handle, now, backend):
    worker = open_handle()
    a, b = _running(worker, now, "prod/a", "prod/b")
    if backend == "sqlite":  # never woken: it answers None at once
        worker.end_batch([_end(a)], now)
        assert store.wait_for_ends(30) is None
        return
    assert store.wait_for_ends(0.01) is False
    worker.end_batch([_end(a)], now)
    worker.end_batch([_end(b)], now)
    assert store.wait_for_ends(30) is True  # the caller re-reads: both ends are in it
    assert store.wait_for_ends(0.2) is False


def test_a_plan_wakes_no_end_waiter_and_an_end_no_plan_waiter(store, open_handle, now, backend):
    worker = open_handle()
    [a] = _running(worker, now, "prod/a")
    if backend == "sqlite":  # never woken: it answers None at once
        worker.end_batch([_end(a)], now)
        assert store.wait_for_ends(30) is None
        return
    assert store.wait_for_ends(0.01) is False and store.wait_for_runs(0.01) is False
    add(worker, now, enqueue(task="prod/new"))  # queues a run: a plan, no end
    assert store.wait_for_ends(0.2) is False
    assert store.wait_for_runs(30) is True
    worker.end_batch([_end(a)], now)
    assert store.wait_for_runs(0.2) is False
    assert store.wait_for_ends(30) is True
