"""Writing audit entries: what each operation records, redacted, stamped and chained.

`AuditWriter` turns an action and its details into an `AuditRecord` (time, actor, every string
passed through the redactor) and appends it through the store, which chains it atomically. A
failed write raises `StoreError`: callers that are about to act (dispatch a run, change the
queue) must not act then (DESIGN §5).

The `audit_*` functions are the records of operations outside the engine, for the commands
to call: a queue cancel or retry, a vault read (team and key NAME, never the value), a vault
write, a keyscan, a failed validation. Each writes one entry and returns it.

Actions (the `action` field), with their detail:

    pass.start        commit
    plan.recorded     commit, enqueued, cancelled, reasons {reason: n}, cancelled_runs [ids]
    pass.end          commit, counts {status: n}, exit_code | error
    run.recovered     run, task, machine, version, status
    run.claimed       run, task, machine, version, attempt, epoch, owner
    run.dispatched    run, task, machine, version, attempt
    run.retrying      run, task, machine, attempt, not_before, exit_code, error
    run.finished      run, task, machine, version, status, attempt, exit_code, error
    run.blocked       run, task, machine, version, reason
    queue.cancel      run, task, machine      queue.retry   run, task, machine, status
    queue.kill        run, task, machine, version, status, grace, reason (who: the actor)
    queue.prune       before, runs, audit_entries, outbox, archive
    vault.read        team, key, purpose      vault.write   team, keys, change
    keyscan           host, port, keys        validation.failed   errors, first
    alert.unreachable machine, error          audit.export  since, entries, file
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from reconciler.adapters.audit.chain import AuditEntry, AuditRecord
from reconciler.adapters.store.base import AuditLog
from reconciler.core.errors import StoreError
from reconciler.core.state import Run

Clock = Callable[[], datetime]
Redact = Callable[[str], "str | None"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """The audit log's time text: ISO 8601 UTC with microseconds and `Z` (fixed width, so
    text order is time order; `audit export --since` compares it as text)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # isoformat, not strftime (a fifth of an entry's cost): the same text for any year from 1000
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def default_actor() -> str:
    """Who acts: `user@host:pid` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def redacted(value: Any, redact: Redact) -> Any:
    """`value` with `redact` applied to every string inside it (keys included)."""
    # Exact types first: every entry of every run passes through here, and the ABC check
    # below (Mapping) costs more than the rest of the work.
    kind = type(value)
    if kind is str:
        return redact(value)
    if kind is dict:
        return _redacted_dict(value, redact)
    if value is None or kind is int or kind is bool:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return _redacted_dict(value, redact)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redacted(v, redact) for v in value]
    if isinstance(value, (int, float, datetime, date)):  # stored as numbers or time texts
        return value
    # Anything else (a path, bytes, an enum) is stored by its text (`storable`): that text is
    # what must be masked, or a secret inside it would reach the log.
    return redact(str(value))


def _redacted_dict(value: Mapping, redact: Redact, drop_none: bool = False) -> dict:
    """`redacted` of a mapping, its flat text and numbers inline (only nested values
    recurse); with `drop_none`, the keys whose value is None are left out."""
    out = {}
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            item = redact(item)
        elif item is None:
            if drop_none:
                continue
        elif not (kind is int or kind is bool):
            item = redacted(item, redact)
        out[redact(key if type(key) is str else str(key))] = item
    return out


class AuditWriter:
    """Appends entries for one actor; thread-safe as its store is."""

    def __init__(
        self,
        store: AuditLog,
        *,
        actor: str | None = None,
        clock: Clock = utc_now,
        redact: Redact | None = None,
    ):
        self.store = store
        self.actor = actor or default_actor()
        self.clock = clock
        self.redact: Redact = redact or (lambda text: text)

    def record(self, action: str, **detail: Any) -> AuditRecord:
        """An entry to append: now, by this actor, details redacted (None values dropped)."""
        return AuditRecord(
            timestamp(self.clock()),
            self.actor,
            action,
            _redacted_dict(detail, self.redact, drop_none=True),
        )

    def write(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Append `records` in one transaction; raises `StoreError`."""
        return self.store.append_audit(list(records))

    def append(self, action: str, **detail: Any) -> AuditEntry:
        """Append one entry; raises `StoreError`."""
        return self.write([self.record(action, **detail)])[0]


# --- records of runs (used by the sinks) ---------------------------------------------------------


def run_detail(run: Run, *fields: str) -> dict[str, Any]:
    """The identifying fields of a run plus the named ones."""
    base = {"run": run.id, "task": run.task, "machine": run.machine, "version": run.version}
    return {**base, **{name: _field(run, name) for name in fields}}


def _field(run: Run, name: str) -> Any:
    value = getattr(run, name)
    return getattr(value, "value", value)


# --- operations outside the engine, for the commands -----------------------------------------------


def _writer(
    store: AuditLog, actor: str | None, clock: Clock | None, redact: Redact | None
) -> AuditWriter:
    return AuditWriter(store, actor=actor, clock=clock or utc_now, redact=redact)


def audit_queue_change(
    store: AuditLog,
    verb: str,
    run: Run,
    *,
    actor: str | None = None,
    clock: Clock | None = None,
    redact: Redact | None = None,
    **extra: Any,
) -> AuditEntry:
    """`queue cancel` / `queue retry` / `queue kill` of `run` (the run as the command left
    it, or as it was asked to stop), with `extra` details (a kill's grace and reason)."""
    if verb not in ("cancel", "retry", "kill"):
        raise ValueError(f"unknown queue change {verb!r}")
    return _writer(store, actor, clock, redact).append(
        f"queue.{verb}", **run_detail(run, "status"), **extra
    )


def audit_vault_read(
    store: AuditLog,
    team: str,
    name: str,
    *,
    purpose: str = "read",
    actor: str | None = None,
    clock: Clock | None = None,
    redact: Redact | None = None,
) -> AuditEntry:
    """A secret was read: the team and the key NAME (never the value) and why (`run`,
    `alert`, `vault get`, ...)."""
    return _writer(store, actor, clock, redact).append(
        "vault.read", team=team, key=name, purpose=purpose
    )


def audit_vault_write(
    store: AuditLog,
    team: str,
    names: Iterable[str],
    change: str,
    *,
    actor: str | None = None,
    clock: Clock | None = None,
    redact: Redact | None = None,
) -> AuditEntry:
    """A team vault changed (`set`, `unset`, `edit`, `rekey`): which key NAMES, never values."""
    return _writer(store, actor, clock, redact).append(
        "vault.write", team=team, keys=sorted(names), change=change
    )


def audit_keyscan(
    store: AuditLog,
    host: str,
    port: int,
    keys: Iterable[str],
    *,
    actor: str | None = None,
    clock: Clock | None = None,
    redact: Redact | None = None,
) -> AuditEntry:
    """`machines keyscan`: the host keys seen (public keys or their fingerprints)."""
    return _writer(store, actor, clock, redact).append(
        "keyscan", host=host, port=port, keys=list(keys)
    )


def audit_validation_failed(
    store: AuditLog,
    error: BaseException | str,
    *,
    commit: str | None = None,
    actor: str | None = None,
    clock: Clock | None = None,
    redact: Redact | None = None,
) -> AuditEntry:
    """A pass refused its inventory: the number of errors and the first one (one line)."""
    diagnostics = getattr(error, "diagnostics", None)
    lines = (
        [str(d) for d in diagnostics.errors] if diagnostics is not None else str(error).splitlines()
    )
    return _writer(store, actor, clock, redact).append(
        "validation.failed",
        commit=commit,
        errors=len(lines) or 1,
        first=lines[0] if lines else str(error),
    )


__all__ = [
    "AuditWriter",
    "StoreError",
    "audit_keyscan",
    "audit_queue_change",
    "audit_validation_failed",
    "audit_vault_read",
    "audit_vault_write",
    "default_actor",
    "redacted",
    "run_detail",
    "timestamp",
]
