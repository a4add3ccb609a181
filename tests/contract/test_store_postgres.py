"""What only the PostgreSQL store has: its URLs and their passwords, its schema and
constraints, the server's clock, row locks, advisory locks, and broken connections.

Every test runs on a fresh database of the local test server (`postgres_url`), skipped when
the server is unreachable and a failure under RECONCILER_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from reconciler.adapters.store import postgres as postgres_store
from reconciler.adapters.store.base import LEASE_SECONDS
from reconciler.adapters.store.factory import open_store
from reconciler.adapters.store.postgres import COLUMNS, PostgresStore, _sql_file
from reconciler.core.errors import LockError, StoreError
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason, Run, RunStatus

pytestmark = pytest.mark.integration

NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SECRET = "hunter2-Zq9"


def with_password(url: str, password: str = SECRET) -> str:
    """`postgresql://postgres@...` with a password (the test server trusts 127.0.0.1, so the
    password is accepted and ignored: a store that really opens with one in its URL)."""
    return url.replace("://postgres@", f"://postgres:{password}@", 1)


def one(store, machine="m1") -> Run:
    [run] = store.record_plan(
        Plan(enqueue=(Enqueue("prod/web", machine, "v1", 3, Reason.NEW),)), "c0ffee", NOW
    )
    return run


def sql(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def store(postgres_url):
    store = open_store(postgres_url)
    yield store
    store.close()


# --- URLs and passwords --------------------------------------------------------------------------


def assert_hidden(error: BaseException, password: str = SECRET) -> None:
    """Neither the message nor the traceback a `-v` would print shows the password."""
    text = "".join(traceback.format_exception(error))
    assert password not in str(error) and password not in text
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres:{SECRET}@127.0.0.1:1/reconciler",  # nothing listens
        f"postgres://postgres:{SECRET}@127.0.0.1:5432/no_such_database_x1",  # no such database
        f"postgresql://postgres@127.0.0.1:1/reconciler?password={SECRET}",  # password parameter
        f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?no_such_option=1",  # a bad URL
    ],
)
def test_an_error_never_shows_the_password_of_the_url(url):
    with pytest.raises(StoreError, match="^cannot open state store postgres(ql)?://") as caught:
        open_store(url)
    assert_hidden(caught.value)
    assert "***" in str(caught.value)


def test_an_open_store_names_itself_without_its_password(postgres_url):
    store = open_store(with_password(postgres_url))
    try:
        assert SECRET not in store.url and "postgres:***@127.0.0.1" in store.url
        with store.pass_lock(timeout=1):
            other = open_store(with_password(postgres_url))
            with pytest.raises(LockError) as caught:
                with other.pass_lock(timeout=0):
                    pass  # pragma: no cover
            other.close()
        assert_hidden(caught.value)
    finally:
        store.close()
    with pytest.raises(StoreError, match="the store is closed") as caught:
        store.pending()
    assert_hidden(caught.value)


def test_a_query_error_names_the_store_without_its_password(postgres_url):
    store = open_store(with_password(postgres_url))
    with pytest.raises(StoreError, match="violates check constraint") as caught:
        store.record_plan(Plan(enqueue=(Enqueue("t/a", "m", "v", 9, Reason.NEW),)), None, NOW)
    store.close()
    assert_hidden(caught.value)


# --- the factory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_factory_opens_postgresql_urls(postgres_url, scheme):
    store = open_store(postgres_url.replace("postgresql", scheme, 1))
    assert isinstance(store, PostgresStore)
    store.close()


def test_factory_without_create_returns_none_for_a_database_without_the_schema(postgres_url):
    assert open_store(postgres_url, create=False) is None
    assert sql(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []
    open_store(postgres_url).close()
    store = open_store(postgres_url, create=False)
    assert store is not None and store.counts()["pending"] == 0
    store.close()


# --- schema, constraints, types ------------------------------------------------------------------


def test_runs_columns_match_the_row_mapping(store, postgres_url):
    names = [
        row[0]
        for row in sql(
            postgres_url,
            "SELECT column_name FROM information_schema"
            ".columns WHERE table_name = 'runs' ORDER BY ordinal_position",
        )
    ]
    assert tuple(names[: len(COLUMNS)]) == COLUMNS
    manual = ("trigger", "actor", "params")  # migration 13, read by `_manual_fields`
    assert set(COLUMNS) | set(manual) == set(Run.__dataclass_fields__)
    assert names[len(COLUMNS) :] == ["heartbeat_at", "planner", "changed_by", *manual]
    assert names.index("trigger") == postgres_store._MANUAL_AT


def test_reopening_an_up_to_date_store_writes_nothing(store, postgres_url):
    before = sql(postgres_url, "SELECT version, applied_at FROM schema_migrations")
    assert [v for v, _ in before] == [m.version for m in _sql_file()[0]]
    # A role that may only read can open it: opening an up-to-date store writes nothing.
    role = f"reconciler_reader_{uuid.uuid4().hex[:12]}"  # roles are server-wide: unique
    sql(postgres_url, f"CREATE ROLE {role} LOGIN")
    try:
        sql(postgres_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        reader = open_store(postgres_url.replace("://postgres@", f"://{role}@"))
        assert reader.pending() == []
        reader.close()
    finally:
        sql(postgres_url, f"DROP OWNED BY {role}")
        sql(postgres_url, f"DROP ROLE {role}")
    assert sql(postgres_url, "SELECT version, applied_at FROM schema_migrations") == before


INSERT = (
    "INSERT INTO runs (task, machine, version, slot, priority, status, reason, created_at)"
    " VALUES ('prod/web', 'm1', 'v1', %s, %s, %s, 'new', now())"
)


@pytest.mark.parametrize("slot", [None, "2024-05-01T12:00:00+00:00"])
def test_unique_index_refuses_a_second_active_run_of_a_key(store, postgres_url, slot):
    store.record_plan(
        Plan(enqueue=(Enqueue("prod/web", "m1", "v1", 3, Reason.NEW, slot),)), None, NOW
    )
    with pytest.raises(psycopg.errors.UniqueViolation, match="runs_one_active"):
        sql(postgres_url, INSERT, (slot, 3, "running"))
    sql(postgres_url, INSERT, (slot, 3, "failed"))  # a finished run of the key is history


def test_check_constraints_refuse_bad_status_and_priority(store, postgres_url):
    for priority, status in [(0, "pending"), (6, "pending"), (3, "done")]:
        with pytest.raises(psycopg.errors.CheckViolation):
            sql(postgres_url, INSERT, ("s", priority, status))


def test_times_are_timestamptz_and_output_keeps_nul_bytes(store, postgres_url):
    run = store.claim(one(store).id, "w", NOW)
    store.finish(run.id, run.epoch, RunStatus.FAILED, NOW, output="a\x00b", error="e\x00f")
    [(created, output)] = sql(postgres_url, "SELECT created_at, output FROM runs")
    assert created == NOW and bytes(output) == b"a\x00b"
    got = store.get_run(run.id)
    assert (got.output, got.error) == ("a\x00b", "e\ufffdf")  # text columns cannot hold NUL


# --- the server's clock, row locks ---------------------------------------------------------------


def test_the_lease_is_stamped_with_the_servers_clock_not_the_callers(store, postgres_url):
    run = store.claim(one(store).id, "w", NOW)  # the caller's clock says 2024
    [(age,)] = sql(
        postgres_url,
        "SELECT extract(epoch FROM now() - heartbeat_at) FROM runs WHERE id = %s",
        (run.id,),
    )
    assert 0 <= age < 60
    assert run.started_at == NOW  # the run's history keeps the caller's clock
    assert store.sweep(LEASE_SECONDS, NOW) == []


def test_recover_leaves_the_runs_of_live_workers_alone(store, postgres_url):
    live = store.claim(one(store, "a").id, "live", NOW)
    dead = store.claim(one(store, "b").id, "dead", NOW)
    sql(
        postgres_url,
        "UPDATE runs SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (dead.id,),
    )
    assert [(r.id, r.status) for r in store.recover(NOW)] == [(dead.id, RunStatus.PENDING)]
    assert store.get_run(live.id).status is RunStatus.RUNNING


def test_claim_skips_a_row_another_transaction_holds_instead_of_waiting(store, postgres_url):
    run = one(store)
    with psycopg.connect(postgres_url) as other:  # a transaction holding the row's lock
        other.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run.id,))
        started = time.monotonic()
        assert store.claim(run.id, "w", NOW) is None
        assert time.monotonic() - started < 5
        other.rollback()
    assert store.claim(run.id, "w", NOW).status is RunStatus.RUNNING


# --- broken connections --------------------------------------------------------------------------


def _terminate_sessions(postgres_url) -> None:
    pids = sql(
        postgres_url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'reconciler'",
    )
    assert pids
    for (pid,) in pids:
        sql(postgres_url, "SELECT pg_terminate_backend(%s)", (pid,))


def test_a_terminated_connection_fails_one_write_and_the_next_reconnects(store, postgres_url):
    run = one(store)
    _terminate_sessions(postgres_url)
    # A write that could apply twice is not tried again: its caller decides.
    with pytest.raises(StoreError, match="^cannot write state store postgresql://"):
        store.record_commit("c0ffee", datetime.now(UTC))
    assert [r.id for r in store.pending()] == [run.id]


def test_a_claim_that_committed_before_its_connection_broke_is_found_not_stranded(
    store, postgres_url
):
    run, other = one(store), one(store, machine="m2")
    now = datetime.now(UTC)
    elsewhere = open_store(postgres_url)
    try:  # what the lost commit did: the runs are running under our name since `now`
        elsewhere.claim(run.id, "w", now)
        elsewhere.claim(other.id, "w", now - timedelta(seconds=1))
    finally:
        elsewhere.close()
    _terminate_sessions(postgres_url)
    mine = store.claim(run.id, "w", now)
    assert (mine.id, mine.status, mine.owner) == (run.id, RunStatus.RUNNING, "w")
    _terminate_sessions(postgres_url)
    assert store.claim(other.id, "w", now) is None  # another claim's (its stamp differs)


def test_a_read_or_a_claim_rides_out_a_terminated_connection(store, postgres_url):
    run = one(store)
    _terminate_sessions(postgres_url)
    assert [r.id for r in store.pending()] == [run.id]
    _terminate_sessions(postgres_url)
    assert store.claim(run.id, "w", datetime.now(UTC)).status is RunStatus.RUNNING


def test_the_pass_lock_uses_a_connection_of_its_own_and_closes_it(store, postgres_url):
    def sessions() -> int:
        return sql(
            postgres_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
            "current_database() AND application_name = 'reconciler'",
        )[0][0]

    before = sessions()
    with store.pass_lock(timeout=1):
        assert sessions() == before + 1
        assert (
            sql(
                postgres_url,
                "SELECT count(*) FROM pg_locks JOIN pg_database d ON "
                "d.oid = database WHERE locktype = 'advisory' AND granted "
                "AND d.datname = current_database()",
            )[0][0]
            == 1
        )
    assert sessions() == before
    assert store.pending() == []  # the query connection is untouched


def test_an_aware_time_in_any_zone_comes_back_as_the_same_instant_in_utc(store):
    at = datetime(2024, 1, 1, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    [run] = store.record_plan(Plan(enqueue=(Enqueue("t/a", "m", "v", 3, Reason.NEW),)), None, at)
    assert run.created_at == at and run.created_at.utcoffset() == timedelta(0)
    naive = store.record_plan(
        Plan(enqueue=(Enqueue("t/b", "m", "v", 3, Reason.NEW),)), None, datetime(2024, 1, 1, 12, 0)
    )[0]
    assert naive.created_at == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
