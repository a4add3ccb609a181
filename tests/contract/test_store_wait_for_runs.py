"""wait_for_runs: an idle worker between two looks at the queue. On PostgreSQL it is woken as
soon as another connection records a plan that queued runs (not after its whole wait); a
backend that cannot be woken (SQLite) answers None at once and the caller waits its own way."""

from __future__ import annotations

import threading

from tests.support.store_contract import add, enqueue


def test_a_plan_recorded_elsewhere_wakes_a_waiting_handle(store, open_handle, now, backend):
    if backend == "sqlite":
        assert store.wait_for_runs(30) is None
        return
    assert store.wait_for_runs(0.01) is False  # opens its listener; nothing was queued
    answers: list = []
    waiter = threading.Thread(target=lambda: answers.append(store.wait_for_runs(60)))
    waiter.start()
    add(open_handle(), now, enqueue(task="prod/new"))
    waiter.join(timeout=30)  # far less than the 60 s it would wait unwoken
    assert not waiter.is_alive() and answers == [True]


def test_a_plan_that_queues_nothing_wakes_no_one(store, open_handle, now, backend):
    planner = open_handle()
    if backend == "sqlite":  # never woken: it answers None at once, whatever is planned
        add(planner, now, enqueue(task="prod/same"))
        assert store.wait_for_runs(30) is None
        return
    add(planner, now, enqueue(task="prod/same"))
    assert store.wait_for_runs(0.01) is False  # the listener starts after that plan
    add(planner, now, enqueue(task="prod/same"))  # already queued: nothing inserted
    assert store.wait_for_runs(0.2) is False
