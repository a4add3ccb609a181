"""Kills (migration 11, issue 16 §2) on every backend: a `killed` run is a final problem, kill
requests written on one connection are read by the holder on another; on SQLite the runs
table is rebuilt for the new status without ever reusing a run id."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from reconciler.adapters.store import sqlite as sqlite_store
from reconciler.adapters.store.base import KillRequest, RunEnd
from reconciler.core.state import RunStatus
from tests.support.store_contract import ended, one


def test_a_killed_run_is_final_counted_as_a_problem_and_keeps_its_output(store, now):
    run = store.claim(one(store, now).id, "w", now)
    run = store.mark_dispatched(run.id, run.epoch, now)
    batch = store.end_batch(
        [
            RunEnd(
                run.id,
                run.epoch,
                RunStatus.KILLED,
                exit_code=137,
                output="so far\n",
                error="killed by alice: stuck",
            )
        ],
        now,
    )
    [killed] = batch.runs
    assert killed.status is RunStatus.KILLED and killed.finished_at == now
    assert store.get_run(run.id).output == "so far\n"
    assert store.counts()["killed"] == 1
    assert store.failed_since(now - timedelta(minutes=1)) == 1
    assert store.pending() == [] and store.running() == []


def test_kill_requests_are_read_by_another_connection_and_replaced_by_a_later_one(
    store, open_handle, now
):
    run = store.claim(one(store, now).id, "w", now)
    store.request_kill(KillRequest(run.id, run.epoch, 10.0, "alice@h:1", "stuck"), now)
    holder = open_handle()
    assert holder.kill_requests([run.id, 999]) == {
        run.id: KillRequest(run.id, run.epoch, 10.0, "alice@h:1", "stuck")
    }
    store.request_kill(KillRequest(run.id, run.epoch, 2.5, "bob@h:2", None), now)
    assert holder.kill_requests([run.id])[run.id] == KillRequest(
        run.id, run.epoch, 2.5, "bob@h:2", None
    )
    assert holder.kill_requests([]) == {}


def test_kill_by_queue_cancels_a_pending_run_with_the_error_given(store, now):
    run = one(store, now)
    cancelled = store.cancel_run(run.id, now, error="cancelled by alice (queue kill)")
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.error == "cancelled by alice (queue kill)"
    assert ended(store, now, RunStatus.FAILED, version="v2").status is RunStatus.FAILED


def test_sqlite_migration_11_keeps_every_run_and_never_reuses_an_id(tmp_path):
    migrations, _ = sqlite_store._sql_file()
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db.execute("BEGIN")
    for migration in migrations:
        if migration.version >= 11:
            break
        for statement in migration.statements:
            db.execute(statement)
    for version in ("v1", "v2", "v3"):
        db.execute(
            "INSERT INTO runs (task, machine, version, priority, status, reason, created_at) "
            "VALUES ('t/a', 'm', ?, 3, 'failed', 'new', '2024-01-01')",
            (version,),
        )
    db.execute("DELETE FROM runs WHERE version = 'v3'")  # pruned: its id 3 is never reused
    [ten] = [m for m in migrations if m.version == 11]
    for statement in ten.statements:
        db.execute(statement)
    db.execute("COMMIT")
    db.execute(
        "INSERT INTO runs (task, machine, version, priority, status, reason, created_at) "
        "VALUES ('t/a', 'm', 'v4', 3, 'killed', 'new', '2024-01-02')"
    )
    rows = db.execute("SELECT id, version, status FROM runs ORDER BY id").fetchall()
    assert rows == [(1, "v1", "failed"), (2, "v2", "failed"), (4, "v4", "killed")]
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"runs_one_active", "runs_by_status", "runs_latest", "runs_by_task_machine"} <= indexes


def test_pruning_a_run_drops_what_a_dead_holder_left_of_it_and_nothing_else(store, now):
    from reconciler.adapters.store.base import OutputChunk
    from reconciler.core.plan import Enqueue, Plan
    from reconciler.core.state import Reason

    runs = []
    for slot in ("s1", "s2"):  # two runs of one scheduled version: the older one is prunable
        [run] = store.record_plan(
            Plan(enqueue=(Enqueue("ops/cron", "m1", "v1", 3, Reason.SCHEDULE, slot=slot),)),
            None,
            now,
        )
        run = store.claim(run.id, "w", now)
        store.append_output([OutputChunk(run.id, 1, 1, 0, "so far\n")])
        store.request_kill(KillRequest(run.id, run.epoch, 1.0, "a", None), now)
        runs.append(store.finish(run.id, run.epoch, RunStatus.UNKNOWN, now))
    assert store.delete_runs([r.id for r in runs], now + timedelta(days=1)) == 1
    assert store.output_since(runs[0].id, 1) == [] and store.kill_requests([runs[0].id]) == {}
    assert [c.body for c in store.output_since(runs[1].id, 1)] == ["so far\n"]
    assert list(store.kill_requests([runs[1].id])) == [runs[1].id]
