"""run_changes: what a drain re-reads each round. Followed from a first complete read, it always
shows the active runs as they stand, whichever connection wrote; on PostgreSQL a later read
holds only the runs written since (the cost of a round follows what changed, not the queue),
and a write still uncommitted during a read is there at the next one."""

from __future__ import annotations

import sqlite3

import pytest

from reconciler.adapters.store.factory import sqlite_path
from reconciler.core.state import RunStatus
from tests.support.store_contract import add, enqueue, one


def follow(store, cursor, active: dict) -> tuple[object, list]:
    """Apply one `run_changes` to `active` (id -> (status, epoch) of the active runs), as a
    drain does; returns the next cursor and the runs read."""
    feed = store.run_changes(cursor)
    if feed.complete:
        active.clear()
    for run in feed.runs:
        if run.status.is_active:
            active[run.id] = (run.status, run.epoch)
        else:
            active.pop(run.id, None)
    return feed.cursor, feed.runs


def actual(store) -> dict:
    return {r.id: (r.status, r.epoch) for r in [*store.pending(), *store.running()]}


def test_a_first_read_is_every_active_run_without_output(store, now):
    a, b, c = add(store, now, *(enqueue(task=f"prod/{n}") for n in "abc"))
    running = store.claim(b.id, "w", now)
    store.finish(c.id, store.claim(c.id, "w", now).epoch, RunStatus.FAILED, now, output="out")
    feed = store.run_changes()
    assert feed.complete
    assert {r.id: r.status for r in feed.runs} == {
        a.id: RunStatus.PENDING,
        running.id: RunStatus.RUNNING,
    }
    assert all(r.output == "" for r in feed.runs)


def test_followed_from_another_handle_it_shows_every_write_as_it_stands(
    store, open_handle, now, later
):
    writer = open_handle()
    active: dict = {}
    cursor, _ = follow(store, None, active)
    assert active == {}

    first, second, third = add(writer, now, *(enqueue(task=f"prod/{n}") for n in "xyz"))
    cursor, _ = follow(store, cursor, active)
    assert active == actual(writer)

    claimed = writer.claim(first.id, "w", now)
    writer.cancel_run(second.id, now)
    cursor, _ = follow(store, cursor, active)
    assert active == actual(writer) and active[claimed.id] == (RunStatus.RUNNING, 1)

    writer.requeue(claimed.id, claimed.epoch, later(seconds=30), now, error="try again")
    cursor, _ = follow(store, cursor, active)
    assert active == actual(writer) and active[first.id][0] is RunStatus.PENDING

    again = writer.claim(first.id, "w", now)
    cursor, _ = follow(store, cursor, active)
    writer.finish(again.id, again.epoch, RunStatus.SUCCEEDED, now)
    writer.block(third.id, "dependency failed", now)
    cursor, runs = follow(store, cursor, active)
    assert active == actual(writer) == {}
    # How they ended is in the read itself, whether whole or only what changed.
    ended = {r.id: r.status for r in runs if not r.status.is_active}
    assert ended.get(first.id, RunStatus.SUCCEEDED) is RunStatus.SUCCEEDED


def test_its_own_writes_are_in_it_too(store, now):
    cursor, _ = follow(store, None, active := {})
    run = one(store, now)
    cursor, _ = follow(store, cursor, active)
    assert active == {run.id: (RunStatus.PENDING, 0)}
    store.claim(run.id, "w", now)
    follow(store, cursor, active)
    assert active == {run.id: (RunStatus.RUNNING, 1)}


@pytest.mark.integration
def test_on_postgresql_a_later_read_holds_only_the_runs_written_since(postgres_url, now):
    from reconciler.adapters.store.factory import open_store

    store, writer = open_store(postgres_url), open_store(postgres_url)
    try:
        runs = add(writer, now, *(enqueue(task=f"prod/t{i}") for i in range(50)))
        cursor = store.run_changes().cursor
        assert store.run_changes(cursor).runs == []  # nothing written since: nothing read
        claimed = writer.claim(runs[7].id, "w", now)
        feed = store.run_changes(cursor)
        assert not feed.complete
        assert [(r.id, r.status, r.epoch) for r in feed.runs] == [
            (claimed.id, RunStatus.RUNNING, 1)
        ]
    finally:
        store.close()
        writer.close()


def test_a_write_committed_after_a_read_began_is_in_the_next_read(store, store_url, backend, now):
    run = one(store, now)
    cursor, _ = follow(store, None, active := {})
    # Another session changes the run and has not committed when the store reads.
    if backend == "sqlite":
        other = sqlite3.connect(sqlite_path(store_url), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE runs SET status = 'cancelled' WHERE id = ?", (run.id,))
    else:
        import psycopg

        other = psycopg.connect(store_url)  # not autocommit: a transaction stays open
        other.execute("UPDATE runs SET status = 'cancelled' WHERE id = %s", (run.id,))
    try:
        cursor, _ = follow(store, cursor, active)
        assert active == {run.id: (RunStatus.PENDING, 0)}  # not committed: not seen yet
        other.commit() if backend == "postgresql" else other.execute("COMMIT")
    finally:
        other.close()
    follow(store, cursor, active)
    assert active == {}
