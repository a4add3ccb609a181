"""The least-privilege roles of a shared PostgreSQL store, as SQL for an administrator to run.

`python -m reconciler.adapters.store.roles` prints `sql/postgres_roles.sql` (the group roles
`reconciler_worker` and `reconciler_reader` and their grants; see that file and
docs/postgresql-roles.md). The reconciler never runs it itself: creating roles and granting
privileges is an administrator's decision, made with an administrator's connection.
"""

from __future__ import annotations

import sys
from importlib import resources


def roles_sql() -> str:
    """The text of the roles script shipped with the package."""
    return (
        resources.files("reconciler.adapters.store")
        .joinpath("sql/postgres_roles.sql")
        .read_text(encoding="utf-8")
    )


def main() -> int:
    sys.stdout.write(roles_sql())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
