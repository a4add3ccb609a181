"""Make a state store's database refuse some audit entries, for tests of what a transaction
that cannot store its audit entry leaves behind (nothing)."""

from __future__ import annotations


def poison(raw, backend: str) -> None:
    """Make the database refuse any audit entry of action `poison`, wherever the store keeps
    it (the chain on SQLite, the queue on PostgreSQL). `raw` is a connection to the store's
    database from outside it."""
    if backend == "sqlite":
        raw.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON audit_log WHEN NEW.action = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned audit entry'); END"
        )
    else:
        for table in ("audit_queue", "audit_log"):
            raw.execute(f"ALTER TABLE {table} ADD CONSTRAINT poison CHECK (action <> 'poison')")
