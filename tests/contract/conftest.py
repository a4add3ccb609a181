"""Fixtures for the state store contract suite, parametrised over every backend.

A backend is a URL; the suite opens stores through `reconciler.adapters.store.factory.open_store`, so
every test that uses `store_url` (or `store`, `open_handle`) runs once per backend: SQLite on
a file in tmp_path, PostgreSQL on a fresh database of the local test server (skipped when the
server is unreachable, a failure under RECONCILER_REQUIRE_INTEGRATION=1).

Tests reach under the port only through `raw`: raw SQL in each backend's dialect, to age a
lease the way a dead worker would leave it (never by sleeping).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.adapters.store.base import StateStore
from reconciler.adapters.store.factory import open_store, sqlite_path

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a fresh, empty store of one backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.db'}"  # absolute: four slashes
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def backend(store_url: str) -> str:
    """`sqlite` or `postgresql`: the backend of this run of a test."""
    return "postgresql" if store_url.startswith("postgresql://") else "sqlite"


@pytest.fixture
def open_handle(store_url: str) -> Iterator[Callable[[], StateStore]]:
    """Opens another handle (connection) on the same store; all are closed at teardown."""
    handles: list[StateStore] = []

    def _open() -> StateStore:
        handle = open_store(store_url)
        handles.append(handle)
        return handle

    yield _open
    for handle in handles:
        handle.close()


@pytest.fixture
def store(open_handle: Callable[[], StateStore]) -> StateStore:
    """A fresh store of each backend."""
    return open_handle()


@pytest.fixture
def now() -> datetime:
    """A fixed, aware UTC time with microseconds (time is a parameter, never the clock)."""
    return datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def later(now: datetime) -> Callable[..., datetime]:
    """`later(seconds=5)`: a time after `now`."""
    return lambda **delta: now + timedelta(**delta)


# --- raw SQL, per dialect ---------------------------------------------------------------------

# The database's clock minus a number of seconds, in each dialect (SQLite keeps sortable text).
_AGO = {
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '-' || ? || ' seconds')",
    "postgresql": "now() - make_interval(secs => %s)",
}


class RawDatabase:
    """Raw SQL on the store under test, through a connection of its own."""

    def __init__(self, backend: str, url: str):
        self.backend, self.url = backend, url

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one statement, committed; its rows (if any). Placeholders: `?` for SQLite,
        `%s` for PostgreSQL."""
        if self.backend == "sqlite":
            with sqlite3.connect(sqlite_path(self.url)) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def age_heartbeat(self, run_id: int, seconds: float = 3600) -> None:
        """Make a running run's last heartbeat `seconds` old by the database's clock, as a
        worker that died (or froze) that long ago would leave it."""
        self._set(f"heartbeat_at = {_AGO[self.backend]}", seconds, run_id)

    def age_claim_without_heartbeat(self, run_id: int, seconds: float) -> None:
        """A run with no heartbeat at all (claimed before leases existed) claimed `seconds`
        ago by the database's clock."""
        self._set(f"heartbeat_at = NULL, started_at = {_AGO[self.backend]}", seconds, run_id)

    def expire_all_leases(self) -> None:
        """Every running run's lease expired long ago: what a pass that died leaves behind."""
        self.execute(
            f"UPDATE runs SET heartbeat_at = {_AGO[self.backend]} WHERE status = 'running'",
            (86400,),
        )

    def _set(self, assignment: str, seconds: float, run_id: int) -> None:
        mark = "?" if self.backend == "sqlite" else "%s"
        self.execute(f"UPDATE runs SET {assignment} WHERE id = {mark}", (seconds, run_id))


@pytest.fixture
def raw(backend: str, store_url: str) -> RawDatabase:
    """Raw SQL on the store under test (whose schema exists once a handle opened it)."""
    return RawDatabase(backend, store_url)
