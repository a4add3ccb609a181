"""A fresh PostgreSQL database per test, on the local test server (127.0.0.1:5432, `postgres`).

`postgres_url` (a fixture) yields the URL of a new, empty database and drops it afterwards,
with FORCE: a process a test killed may leave its session behind for a moment. When the
server cannot be reached the test is skipped, or fails under RECONCILER_REQUIRE_INTEGRATION=1
(`tests.support.integration.missing`). Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import pytest

from tests.support.integration import missing

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
ADMIN_URL = f"postgresql://{USER}@{HOST}:{PORT}/postgres"


def database_url(name: str) -> str:
    """The URL of database `name` on the test server."""
    return f"postgresql://{USER}@{HOST}:{PORT}/{name}"


@lru_cache(maxsize=1)
def server_problem() -> str | None:
    """Why the test server cannot be used, or None; asked once per test process."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return "psycopg is not installed"
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL is not reachable at {HOST}:{PORT} as {USER}: {first_line}"
    return None


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, connect_timeout=10, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def fresh_database(prefix: str = "reconciler_test") -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it (even if the body failed).
    Skips (or fails in CI) when the server is unreachable."""
    problem = server_problem()
    if problem is not None:
        missing(problem)
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"  # a safe identifier: no quoting needed
    _admin(f"CREATE DATABASE {name}")
    try:
        yield database_url(name)
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    with fresh_database() as url:
        yield url
