"""Adapters to the outside world: the state store (SQLite, PostgreSQL), transports (local,
SSH), the age vault, the audit log, notifications and the git source."""
