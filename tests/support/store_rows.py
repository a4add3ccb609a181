"""Raw SQL on a state store from outside the reconciler, for tests that look at (or age, or
damage) what a `reconcile` process wrote: the way an operator with database access would.

`store_rows(state, query, *params)` runs one statement and returns its rows ([] for a
statement without rows). `state` is a PostgreSQL URL, a `sqlite:///` URL or the path of a
SQLite file; placeholders are the backend's (`%s` for PostgreSQL, `?` for SQLite). With
`while_starting=True` a store that another process has not created yet (no file, no table)
reads as no rows, so a test can poll it with `wait_until` from the start.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

SQLITE_URL = "sqlite:///"


def store_rows(state: str | Path, query: str, *params, while_starting: bool = False) -> list[tuple]:
    """The rows `query` returns on the store at `state` ([] when it returns none)."""
    if isinstance(state, str) and state.startswith("postgresql://"):
        try:
            with psycopg.connect(state, autocommit=True) as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.errors.UndefinedTable:
            if while_starting:
                return []
            raise
    path = Path(state[len(SQLITE_URL) :] if str(state).startswith(SQLITE_URL) else state)
    if while_starting and not path.exists():
        return []
    try:
        with sqlite3.connect(path) as db:
            return db.execute(query, params).fetchall()
    except sqlite3.OperationalError:
        if while_starting:  # the store is being created
            return []
        raise


__all__ = ["store_rows"]
