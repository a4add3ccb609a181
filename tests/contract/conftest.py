"""Fixtures for the state store contract suite, parametrised over every backend.

A backend is a URL; the suite opens stores through `reconciler.store.factory.open_store`, so a
new backend (PostgreSQL) joins by adding a param to `store_url` that yields its URL (e.g. a
fresh database on a test server) — every test of `test_store.py` then runs against it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import pytest

from reconciler.store.base import StateStore
from reconciler.store.factory import open_store

BACKENDS = ["sqlite"]  # next: "postgresql", with a server fixture and a database per test


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a fresh, empty store of one backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.db'}"  # absolute: four slashes
    raise NotImplementedError(request.param)


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
    return datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture
def later(now: datetime) -> Callable[..., datetime]:
    """`later(seconds=5)`: a time after `now`."""
    return lambda **delta: now + timedelta(**delta)
