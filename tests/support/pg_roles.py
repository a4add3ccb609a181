"""Least-privilege login roles on a test database, for tests that act as a compromised or
read-only host would.

`least_privilege(url)` creates the schema as the admin (the URL's owner), applies the roles
script shipped in the package (`python -m reconciler.adapters.store.roles`), makes one login
role in `reconciler_worker` and one in `reconciler_reader`, yields their URLs
(worker, reader), and drops the login roles afterwards. The group roles are cluster-wide and
stay, as the script leaves them.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from reconciler.adapters.store.factory import open_store
from tests.support.postgres import ADMIN_URL


def as_user(url: str, user: str) -> str:
    """`url` (the test server's, as postgres) connecting as `user` instead."""
    return url.replace("postgresql://postgres@", f"postgresql://{user}@", 1)


@contextmanager
def least_privilege(url: str) -> Iterator[tuple[str, str]]:
    open_store(url).close()  # the admin's first open creates the schema
    script = subprocess.run(
        [sys.executable, "-m", "reconciler.adapters.store.roles"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script)
    suffix = uuid.uuid4().hex[:10]
    worker, reader = f"rw_{suffix}", f"ro_{suffix}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {worker} LOGIN IN ROLE reconciler_worker")
        conn.execute(f"CREATE ROLE {reader} LOGIN IN ROLE reconciler_reader")
    try:
        yield as_user(url, worker), as_user(url, reader)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {worker}, {reader}")
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {worker}")
            conn.execute(f"DROP ROLE {reader}")


__all__ = ["as_user", "least_privilege"]
