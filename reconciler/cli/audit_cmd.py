"""`reconcile audit verify [--checkpoint FILE]` and `reconcile audit export [--since T] [-o FILE]`.

verify: walks the hash chain from its start (or from the anchor a prune left) and exits 1
naming the first bad entry (edited, deleted, moved). It covers sealed entries: on PostgreSQL
the batches of a run queue their entries and a sealer links them into the chain moments later
(`StateStore.seal_audit`); verify counts those still queued (`unsealed`) and writes nothing,
so a read-only role can run it. With `--checkpoint FILE` (a checkpoint
file, or an export or archive that ends with one) it also requires the entry the checkpoint
names to still be there with the same hash: a truncated or rolled-back log fails, as does a
checkpoint not signed by a key this host trusts (see `audit.checkpoint`), and every entry the
file holds must equal the log's.

export: JSON lines, one per sealed entry (all, or those at or after `--since`), then a signed
checkpoint line over the whole log's head. It refuses to sign a log that does not verify. Its
own `audit.export` entry is appended first, which seals every entry queued before it; a role
that may only read the store exports without it (a warning says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
import gzip
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.adapters.audit import checkpoint as cp
from reconciler.adapters.audit.chain import Anchor, AuditEntry, Verdict, verify
from reconciler.adapters.audit.writer import AuditWriter, timestamp
from reconciler.adapters.store.base import StateStore
from reconciler.adapters.store.common import redact_url
from reconciler.adapters.store.factory import sqlite_path
from reconciler.adapters.vault.secrets import load_identities
from reconciler.cli import outputs, views, wiring
from reconciler.core.durations import parse_duration
from reconciler.core.errors import InputError, StoreError, UsageError

FORMATS = ("text", "json")


def run(args: argparse.Namespace, ctx: Context) -> views.Output | int:
    """Run `audit verify` or `audit export`: what they found (cli.main prints it in the format
    asked for; main refuses a --format outside FORMATS before this runs), or the exit code
    alone when the export itself went to stdout."""
    if args.audit_command == "verify":
        return _verify(args)
    return _export(args, ctx)


# --- shared ------------------------------------------------------------------------------------------


def key_path(args: argparse.Namespace, state_url: str) -> Path:
    """`--key`, else `audit.key` beside the SQLite state file, else `.reconciler/audit.key`."""
    if getattr(args, "key", None):
        return Path(args.key).expanduser()
    try:
        return sqlite_path(state_url).parent / cp.KEY_FILE
    except InputError:  # PostgreSQL: the reconciler's own folder
        return Path(".reconciler") / cp.KEY_FILE


ANCHOR_ACTION = "audit.anchor"  # the entry a prune writes: its anchor, signed


def check_chain(store: StateStore, trusted: Mapping[str, str] | None = None) -> Verdict:
    """The verdict on the whole stored chain, from its anchor. With `trusted` keys, an anchor
    must also be vouched for by a signed `audit.anchor` entry of the chain (see
    `anchor_problem`); without, only the links are checked."""
    anchor = store.audit_anchor()
    verdict = verify(store.iter_audit(), anchor)
    if verdict.ok and anchor is not None and trusted is not None:
        problem = anchor_problem(store, anchor, trusted)
        if problem is not None:
            return replace(verdict, problem=problem, bad_seq=anchor.seq)
    return verdict


def anchor_problem(store: StateStore, anchor: Anchor, trusted: Mapping[str, str]) -> str | None:
    """Why the prune anchor cannot be trusted, or None. Anyone who can write the store can
    delete the first entries and anchor the rest at the first one left, and the hash chain
    alone cannot tell; only `queue prune --archive` holds the key that signs, in an
    `audit.anchor` entry written before it deletes anything, the (seq, hash) it anchors at."""
    if not trusted:
        return (
            f"the prune anchor (entry {anchor.seq}) cannot be authenticated: no key to "
            "check its signature with (configure the identity it was derived from, keep "
            "the audit key file, or pass --public-key)"
        )
    for entry in store.iter_audit():
        if entry.action != ANCHOR_ACTION:
            continue
        try:
            signed = cp.Checkpoint.from_json(entry.detail.get("anchor") or {})
        except (KeyError, TypeError, ValueError):
            continue
        if cp.vouches_for(signed, anchor.seq, anchor.hash, trusted):
            return None
    return (
        f"the prune anchor (entry {anchor.seq}) is not signed by a trusted key: the "
        f"entries up to {anchor.seq} were removed outside `reconcile queue prune`"
    )


# --- verify --------------------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> views.Output:
    inventory = wiring.inventory_if_valid(args)
    url = wiring.state_url(args, inventory)
    checkpoint = entries = None
    if args.checkpoint:
        checkpoint, entries = cp.read_checkpoint(args.checkpoint)
    trusted = cp.trusted(
        load_identities(getattr(args, "identity", None)), key_path(args, url), args.public_key
    )
    store = wiring.store(args, inventory, read_only=True)
    if store is None:
        verdict, anchor, unsealed = Verdict(0, "0" * 64), None, 0
    else:
        try:
            verdict, anchor = check_chain(store, trusted), store.audit_anchor()
            unsealed = store.unsealed_audit()
        finally:
            store.close()
    problems = [] if verdict.ok else [verdict.problem]
    if checkpoint is not None and verdict.ok:
        problems += checkpoint_problems(checkpoint, entries or [], verdict, anchor, trusted)
    report = {
        "ok": not problems,
        "entries": verdict.count,
        "head": verdict.head,
        "bad_entry": verdict.bad_seq,
        "problems": problems,
        "checkpoint": checkpoint.to_json() if checkpoint else None,
        "unsealed": unsealed,
    }
    # Written but not yet linked into the chain: not verified, and not a problem either (a
    # sealer links them moments after their batch; a stopped worker's are linked by the next).
    pending = (
        f"{unsealed} newer {'entry' if unsealed == 1 else 'entries'} not yet sealed into "
        "the chain (not verified)"
    )

    def text() -> str:
        if problems:
            lines = [f"tampered: {problem}" for problem in problems]
            return "\n".join(lines + ([f"note: {pending}"] if unsealed else []))
        covered = f"; checkpoint of {checkpoint.count} entries holds" if checkpoint else ""
        waiting = f"; {pending}" if unsealed else ""
        return (
            f"audit log intact: {verdict.count} entries, head {verdict.head[:16]}{covered}{waiting}"
        )

    return views.Output(report, text, exit_code=0 if not problems else 1)


def checkpoint_problems(
    checkpoint: cp.Checkpoint,
    exported: list[dict[str, Any]],
    verdict: Verdict,
    anchor,
    trusted: dict[str, str],
) -> list[str]:
    """What is wrong with the log against `checkpoint` (and the entries of its file)."""
    if not trusted:
        return [
            "no key to trust the checkpoint with: configure the identity it was "
            "derived from, keep the audit key file, or pass --public-key"
        ]
    if checkpoint.public_key not in trusted:
        return [
            f"the checkpoint is signed by {checkpoint.public_key}, which is not a key "
            "this host trusts (see --public-key)"
        ]
    if not cp.signature_valid(checkpoint):
        return ["the checkpoint's signature is invalid: the checkpoint was altered"]
    problems = []
    if checkpoint.count > verdict.count:
        problems.append(
            f"the log ends at entry {verdict.count} but the checkpoint of "
            f"{checkpoint.at} covers {checkpoint.count} entries: entries were "
            "removed from its end (truncated or rolled back)"
        )
    elif checkpoint.count in verdict.hashes:
        if verdict.hashes[checkpoint.count] != checkpoint.head:
            problems.append(
                f"audit entry {checkpoint.count}: differs from the checkpoint of "
                f"{checkpoint.at} (the log was rolled back or rewritten)"
            )
    elif anchor is not None and anchor.seq == checkpoint.count and anchor.hash != checkpoint.head:
        problems.append(f"the prune anchor (entry {anchor.seq}) differs from the checkpoint")
    elif anchor is None or checkpoint.count > anchor.seq:
        # Neither kept nor pruned: the entry the checkpoint names is simply gone.
        problems.append(
            f"audit entry {checkpoint.count} of the checkpoint of {checkpoint.at} "
            "is missing from the log, and no prune anchor covers it"
        )
    # else: a checkpoint older than an (authenticated) anchor: its entry was archived.
    problems += _exported_problems(exported, verdict, anchor)
    return problems


def _exported_problems(
    exported: Iterable[dict[str, Any]], verdict: Verdict, anchor: Anchor | None = None
) -> list[str]:
    """Entries of an export that the log still holds must be the same entries, and so must
    the one the prune anchor stands for."""
    for data in exported:
        try:
            entry = AuditEntry.from_json(data)
        except (KeyError, TypeError, ValueError):
            return ["the checkpoint file holds a malformed audit line"]
        if anchor is not None and entry.seq == anchor.seq and entry.hash != anchor.hash:
            return [f"the prune anchor (entry {anchor.seq}) differs from the exported copy"]
        stored = verdict.hashes.get(entry.seq)
        if stored is not None and stored != entry.hash:
            return [f"audit entry {entry.seq}: differs from the exported copy (rewritten)"]
    return []


# --- export ----------------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an ISO 8601 date/time (naive: UTC) or a duration back from `now`."""
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since must be an ISO 8601 date or time (2024-05-01, "
            f"2024-05-01T12:00:00Z) or a duration such as 7d (got {text!r})"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _export(args: argparse.Namespace, ctx: Context) -> views.Output | int:
    json_out = getattr(args, "format", None) == "json"
    if json_out and args.output in (None, "-"):
        # The export is JSON lines (entries, then the checkpoint line) that `audit verify
        # --checkpoint` reads back: not one JSON document. --format json describes an
        # export written to a file (refused before anything is appended or written).
        raise UsageError(
            "audit export writes JSON lines to standard output, not one JSON document: "
            "with --format json, write the export to a file with -o FILE"
        )
    inventory = wiring.inventory_if_valid(args)
    url = wiring.state_url(args, inventory)
    now = datetime.now(UTC)
    since = timestamp(parse_since(args.since, now)) if args.since else None
    identities = load_identities(getattr(args, "identity", None))
    store = wiring.store(args, inventory, create=False)
    if store is None:
        raise InputError(f"no state store at {redact_url(url)}: there is no audit log yet")
    try:
        key = cp.signing_key(identities, key_path(args, url))  # created at the first export
        written = export(
            store,
            key,
            args.output,
            since,
            redact=ctx.redactor,
            trusted=cp.trusted(identities, key_path(args, url)),
        )
    finally:
        store.close()
    if isinstance(written, str):  # the chain does not verify: nothing was written
        data = {"ok": False, "file": args.output, "entries": 0, "checkpoint": None}
        return views.Output({**data, "problems": [written]}, exit_code=1) if json_out else 1
    count, checkpoint = written
    if not args.output:
        return 0  # the export itself went to stdout
    return views.Output(
        {"ok": True, "file": args.output, "entries": count, "checkpoint": checkpoint.to_json()},
        lambda: (
            f"exported {count} audit entries to {args.output}; checkpoint: "
            f"{checkpoint.count} entries, head {checkpoint.head[:16]}, signed with the "
            f"key {key.source}"
        ),
    )


def export(
    store: StateStore,
    key: cp.SigningKey,
    output: str | None,
    since: str | None,
    *,
    redact=None,
    trusted: Mapping[str, str] | None = None,
) -> tuple[int, cp.Checkpoint] | str:
    """Audit the export, verify the chain, write its entries (at or after `since`) and a
    signed checkpoint to `output` (stdout when None). The problem (and nothing written)
    when the chain does not verify."""
    try:
        AuditWriter(store, redact=redact).append(
            "audit.export", since=since, file=output, public_key=key.public
        )
    except StoreError as exc:
        # Exporting reads: a role that may only read the store (reconciler_reader) exports
        # what is sealed, without recording the export (nor sealing what is queued).
        print(
            f"warning: this export is not recorded in the audit log ({exc}); "
            "exporting the sealed entries without it",
            file=sys.stderr,
        )
    verdict = check_chain(store, trusted or {key.public: key.source})
    if not verdict.ok:
        print(
            f"tampered: {verdict.problem}; no checkpoint is signed over a broken log",
            file=sys.stderr,
        )
        return f"{verdict.problem}; no checkpoint is signed over a broken log"
    signed = cp.sign(key.key, verdict.count, verdict.head, timestamp(datetime.now(UTC)))
    count = write_lines(
        output,
        (e.to_json() for e in store.iter_audit(since=since) if e.seq <= verdict.count),
        signed,
    )
    return count, signed


def write_lines(
    output: str | None, lines: Iterable[dict[str, Any]], checkpoint: cp.Checkpoint
) -> int:
    """JSON lines then the checkpoint line, to `output` or stdout. Returns the number of lines
    before the checkpoint. A regular file is replaced atomically (a temporary renamed into
    place) and private (0600); a pipe or a device (`-o /dev/stdout`) is written into as it is,
    never replaced (see cli/outputs.py)."""
    if output is None:
        count = _write(sys.stdout, lines, checkpoint)
        sys.stdout.flush()
        return count
    with outputs.writing(output, private=True, keep_mode=False) as raw:
        if output.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw) as packed:
                count = _write(_Utf8(packed), lines, checkpoint)
        else:
            count = _write(_Utf8(raw), lines, checkpoint)
    return count


class _Utf8:
    """Text written to a binary file as UTF-8."""

    def __init__(self, binary):
        self.binary = binary

    def write(self, text: str) -> None:
        self.binary.write(text.encode("utf-8"))


def _write(out, lines: Iterable[dict[str, Any]], checkpoint: cp.Checkpoint) -> int:
    count = 0
    for line in lines:
        out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    out.write(json.dumps(checkpoint.to_json(), sort_keys=True) + "\n")
    return count


__all__ = [
    "ANCHOR_ACTION",
    "FORMATS",
    "anchor_problem",
    "check_chain",
    "checkpoint_problems",
    "export",
    "key_path",
    "parse_since",
    "run",
    "write_lines",
]
