"""The `halted` status (issue 15 §1) on every store: a pending run ends halted, it counts as a
problem, `queue retry` may flag it, and a store made before the status existed (schema 11)
takes it after its migration, its runs and their ids kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.store import postgres as pg_store
from reconciler.adapters.store import sqlite as sqlite_store
from reconciler.adapters.store.factory import open_store, sqlite_path
from reconciler.core.state import RunStatus
from tests.support.store_contract import one

SQL_FILES = {"sqlite": sqlite_store._sql_file, "postgresql": pg_store._sql_file}
HALTED = "rollout halted: 1 run of this version failed (none allowed by max_failed)"


def test_a_pending_run_ends_halted_and_counts_as_a_problem(store, now, later):
    run = one(store, now)
    halted = store.block(run.id, HALTED, later(seconds=1), RunStatus.HALTED)
    assert (halted.status, halted.error, halted.finished_at) == (
        RunStatus.HALTED,
        HALTED,
        later(seconds=1),
    )
    assert store.block(run.id, HALTED, now, RunStatus.HALTED) is None  # no longer pending
    assert store.counts()["halted"] == 1
    assert store.failed_since(now) == 1
    flagged = store.request_retry(run.id, now)
    assert (flagged.status, flagged.retry_requested) == (RunStatus.HALTED, True)


def test_only_blocked_or_halted_end_a_pending_run_that_never_ran(store, now):
    run = one(store, now)
    with pytest.raises(ValueError, match="cannot end failed without running"):
        store.block(run.id, "no", now, RunStatus.FAILED)
    assert store.get_run(run.id).status is RunStatus.PENDING


def test_a_store_of_schema_11_takes_halted_after_its_migration(store_url, raw, backend, now):
    migrations, queries = SQL_FILES[backend]()
    mark = "?" if backend == "sqlite" else "%s"
    if backend == "sqlite":
        Path(sqlite_path(store_url)).parent.mkdir(parents=True, exist_ok=True)
    raw.execute(queries["create_migrations"])
    for migration in migrations:
        if migration.version >= 12:
            continue
        for statement in migration.statements:
            raw.execute(statement)
        raw.execute(
            f"INSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({mark}, {mark}, {mark})",
            (migration.version, migration.name, now.isoformat()),
        )
    insert = (
        "INSERT INTO runs (task, machine, version, priority, status, reason, created_at) "
        f"VALUES ('ops/web', {mark}, 'v1', 3, {mark}, 'new', {mark})"
    )
    for machine, status in (("a", "pending"), ("b", "failed"), ("c", "succeeded")):
        raw.execute(insert, (machine, status, now.isoformat()))
    with pytest.raises(Exception, match="(?i)check"):  # schema 11 knows no halted
        raw.execute(insert, ("d", "halted", now.isoformat()))
    [(newest,)] = raw.execute("SELECT MAX(id) FROM runs")
    raw.execute(f"DELETE FROM runs WHERE id = {mark}", (newest,))  # pruned

    store = open_store(store_url)
    try:
        runs = store.list_runs()
        assert sorted((r.machine, r.status.value) for r in runs) == [
            ("a", "pending"),
            ("b", "failed"),
        ]
        pending = next(r for r in runs if r.machine == "a")
        assert store.block(pending.id, HALTED, now, RunStatus.HALTED).status is RunStatus.HALTED
        assert one(store, now, machine="e").id > newest  # a pruned run's id is not given again
    finally:
        store.close()
