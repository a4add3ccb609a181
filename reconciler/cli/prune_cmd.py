"""`reconcile queue prune --older-than D [--archive FILE.jsonl.gz]`: retention.

Removes final runs that ended more than D ago, except the newest run of each (task, machine,
version): that one is the planner's memory of what ran, and without it a once task would run
again. Delivered and abandoned alert deliveries older than D go too.

With `--archive FILE` everything removed is first written to FILE (JSON lines; gzip when the
name ends in `.gz`): the runs with their output, and the audit entries older than D followed
by a signed checkpoint. Only then are they deleted. The audit log is pruned only this way:
without `--archive` it is left whole. The first kept audit entry then links to an anchor (the
last archived entry), so `audit verify` still checks the rest of the chain, and the archive's
checkpoint verifies the archived part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.adapters.audit import checkpoint as cp
from reconciler.adapters.audit.chain import AuditEntry, TamperedError
from reconciler.adapters.audit.writer import AuditWriter, timestamp
from reconciler.adapters.store.base import StateStore
from reconciler.adapters.vault.secrets import load_identities
from reconciler.cli import views, wiring
from reconciler.cli.audit_cmd import ANCHOR_ACTION, check_chain, key_path
from reconciler.core.durations import parse_duration
from reconciler.core.errors import InfrastructureError, InputError, UsageError
from reconciler.core.state import Run

PAGE = 1000


def run(args: argparse.Namespace, ctx: Context) -> views.Output:
    """Archive (optionally) and remove; what was done."""
    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    if args.archive and Path(args.archive).exists():
        raise UsageError(
            f"--archive {args.archive} exists; name a new file (an archive is never overwritten)"
        )
    inventory = wiring.inventory_if_valid(args)
    now = datetime.now(UTC)
    before = now - timedelta(seconds=age)
    store = wiring.store(args, inventory, create=False)
    if store is None:
        return _report({"runs": 0, "audit_entries": 0, "outbox": 0, "archive": None})
    try:
        key = trusted = None
        if args.archive:
            identities = load_identities(getattr(args, "identity", None))
            path = key_path(args, wiring.state_url(args, inventory))
            key, trusted = cp.signing_key(identities, path), cp.trusted(identities, path)
        done = prune(
            store,
            before,
            args.archive,
            key,
            redact=ctx.redactor,
            trusted=trusted,
        )
    finally:
        store.close()
    return _report(done)


def prune(
    store: StateStore,
    before: datetime,
    archive: str | None,
    key: cp.SigningKey | None,
    *,
    redact=None,
    trusted: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Archive (when `archive`) then delete; audit what was done. Returns the counts.
    Raises `TamperedError` (exit 1) before pruning anything from a log that does not verify
    (its anchor included: checked with `trusted`, by default the signing key),
    `InputError` when the archive cannot be written (nothing is pruned then).

    The new anchor is vouched for before any entry goes: an `audit.anchor` entry holding the
    archive's checkpoint (signed over the anchor's seq and hash) is appended first, so a
    crash in between leaves a signature for an anchor not yet set, never the reverse."""
    run_ids = [run.id for run in _prunable(store, before)]
    through = 0
    if archive:
        assert key is not None, "an archive needs a signing key"
        through, signed = _archive(
            store, before, set(run_ids), archive, key, trusted or {key.public: key.source}
        )
        if through:
            AuditWriter(store, redact=redact).append(ANCHOR_ACTION, anchor=signed.to_json())
    removed = sum(
        store.delete_runs(run_ids[i : i + PAGE], before) for i in range(0, len(run_ids), PAGE)
    )
    pruned_audit = store.prune_audit(through, datetime.now(UTC)) if through else 0
    outbox = store.prune_outbox(before)
    done = {
        "runs": removed,
        "audit_entries": pruned_audit,
        "outbox": outbox,
        "archive": archive,
        "before": views.iso(before),
    }
    AuditWriter(store, redact=redact).append("queue.prune", **done)
    return done


def _prunable(store: StateStore, before: datetime) -> Iterator[Run]:
    after = 0
    while True:
        page = store.prunable_runs(before, after, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].id


def _archive(
    store: StateStore,
    before: datetime,
    run_ids: set[int],
    archive: str,
    key: cp.SigningKey,
    trusted: Mapping[str, str],
) -> tuple[int, cp.Checkpoint]:
    """Write the runs `run_ids` and the audit entries older than `before`, with a checkpoint
    over them, to `archive`, durably. Returns the seq of the last archived entry (0: none)
    and the checkpoint, which vouches for that entry as the new anchor."""
    verdict = check_chain(store, trusted)
    if not verdict.ok:
        raise TamperedError(f"{verdict.problem}; nothing was pruned (see `reconcile audit verify`)")
    prefix = _old_prefix(store, timestamp(before), verdict.count)
    # The checkpoint vouches for the archived part (its last entry); with no entry archived,
    # for the whole log as it is now.
    count, head = (prefix[-1].seq, prefix[-1].hash) if prefix else (verdict.count, verdict.head)
    signed = cp.sign(
        key.key, count, head, timestamp(datetime.now(UTC)), purpose="anchor"
    )  # never mistaken for an export's checkpoint
    lines = (
        json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n"
        for line in [
            *(
                {"type": "run", **views.run_json(run, detail=True)}
                for run in _prunable(store, before)
                if run.id in run_ids
            ),
            *(entry.to_json() for entry in prefix),
            signed.to_json(),
        ]
    )
    _write_durably(Path(archive), lines)
    return (prefix[-1].seq if prefix else 0), signed


def _old_prefix(store: StateStore, cutoff: str, last: int) -> list[AuditEntry]:
    """The entries from the start of the kept chain that are all older than `cutoff`: only
    a prefix can go, or the rest would not link to the anchor."""
    anchor = store.audit_anchor()
    expected = (anchor.seq if anchor else 0) + 1
    prefix = []
    for entry in store.iter_audit():
        if entry.seq != expected or entry.at >= cutoff or entry.seq > last:
            break
        prefix.append(entry)
        expected += 1
    return prefix


def _write_durably(path: Path, lines: Iterable[str]) -> None:
    """Write `lines` to a temporary file, fsync it, rename it to `path`; `InputError` if not."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with cp.open_text(temporary, "wt", gz=path.name.endswith(".gz")) as out:
            out.writelines(lines)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # not there, or its folder is a file
            temporary.unlink(missing_ok=True)
        from reconciler.cli.outputs import is_machine_trouble, os_reason

        message = f"cannot write the archive {path}: {os_reason(path, exc)}; nothing was pruned"
        if is_machine_trouble(exc):  # a full or failing disk: the machine's, exit 3
            raise InfrastructureError(message) from None
        raise InputError(message) from None


def _report(done: dict[str, Any]) -> views.Output:
    return views.Output(done, lambda: views.prune_text(done))


__all__ = ["prune", "run"]
