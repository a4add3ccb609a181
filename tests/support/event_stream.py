"""For tests of the consumers of the engine's event stream: a project's runs planned into its
real store, the audit actions written so far, and a notifier that keeps what it was sent.

`planned(project, store)` records the plan of an `InProcessProject` (commit `c0ffee`) and
returns (desired state, inserted runs); `actions(store)` lists the audit log's actions in
order; `refuse_audit(project, action)` makes the SQLite store refuse entries of one action,
as a full disk or a revoked grant would; `KeptNotifier` is a `Notifier` that delivers into a
list (the courier, the outbox and the store around it stay real).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from reconciler.adapters.notify.base import DEFAULT_TIMEOUT, Notifier
from reconciler.core.plan import make_plan
from tests.support.in_process import InProcessProject


def planned(project: InProcessProject, store):
    desired = project.desired()
    now = datetime.now(UTC)
    runs = store.record_plan(make_plan(desired, store.snapshot(), now), "c0ffee", now)
    return desired, runs


def actions(store) -> list[str]:
    return [entry.action for entry in store.iter_audit()]


def refuse_audit(project: InProcessProject, action: str) -> None:
    project.sql(
        f"CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.action = '{action}' "
        "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    )


class KeptNotifier(Notifier):
    """Keeps each (url, title, body) it is asked to send; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: list[tuple[str, str, str]] = []

    def send(self, url, title, body, *, severity="failure", timeout=DEFAULT_TIMEOUT) -> None:
        with self._lock:
            self._sent.append((url, title, body))

    def titles(self) -> list[str]:
        with self._lock:
            return [title for _, title, _ in self._sent]
