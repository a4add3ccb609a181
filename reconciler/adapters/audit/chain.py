"""The audit log's hash chain: pure functions over frozen entries (no clock, no I/O).

Every entry hashes the previous entry's hash together with the canonical JSON of its own
fields (seq, time, actor, action, detail):

    hash(n) = SHA-256( "reconciler-audit-v1\\n" || hash(n-1) || "\\n" || canonical(entry n) )

and the first entry links to `GENESIS` (64 zeros), or, after `queue prune --archive`, to the
`Anchor` the store keeps (the last archived entry's seq and hash). So:

- an edited entry no longer matches its hash (or, if its hash was recomputed, the next entry
  no longer links to it);
- a deleted entry leaves a gap in `seq` and a broken link;
- reordered entries break the links at the first moved one;
- a truncated tail, or a whole log rolled back to an older copy, is still a valid chain:
  only a signed checkpoint (`checkpoint.py`: head hash and count, kept outside the store)
  detects it, which is what `audit verify --checkpoint` is for.

`verify` walks entries in `seq` order and names the first bad one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.core.errors import ReconcilerError

GENESIS = "0" * 64
DOMAIN = b"reconciler-audit-v1\n"


class TamperedError(ReconcilerError):
    """The audit log does not verify (exit 1, as `audit verify` finding tampering)."""

    exit_code = 1


# Built once: `json.dumps` with options other than its defaults builds an encoder per call,
# and every audit entry of every run is encoded here.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value that is hashed and signed: keys sorted, no spaces,
    UTF-8. Round-trips: `canonical(json.loads(canonical(v))) == canonical(v)`."""
    return _CANONICAL(value).encode("utf-8")


def canonical_text(value: Any) -> str:
    """`canonical` as text (what a store keeps in a text column), without the UTF-8 round
    trip."""
    return _CANONICAL(value)


@dataclass(frozen=True)
class AuditRecord:
    """What a writer asks to append: the chain position and hashes are the store's to give.

    `at` is ISO 8601 UTC text (it is hashed as written, so it is text, not a datetime);
    `detail` holds JSON values only, secrets already redacted.
    """

    at: str
    actor: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the chain, as stored."""

    seq: int
    at: str
    actor: str
    action: str
    detail: Mapping[str, Any]
    prev: str
    hash: str

    def fields(self) -> dict[str, Any]:
        """The hashed fields (everything but `prev` and `hash`)."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "detail": dict(self.detail),
        }

    def to_json(self) -> dict[str, Any]:
        """The entry as one line of `audit export`."""
        return {"type": "audit", **self.fields(), "prev": self.prev, "hash": self.hash}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEntry:
        """The inverse of `to_json`; raises KeyError/TypeError on a malformed line."""
        return cls(
            int(data["seq"]),
            str(data["at"]),
            str(data["actor"]),
            str(data["action"]),
            dict(data["detail"]),
            str(data["prev"]),
            str(data["hash"]),
        )


@dataclass(frozen=True)
class Anchor:
    """Where the kept chain starts: the last entry removed by a prune (after its export)."""

    seq: int
    hash: str


def entry_hash(
    prev: str, seq: int, at: str, actor: str, action: str, detail: Mapping[str, Any]
) -> str:
    """The hash of an entry with these fields following an entry whose hash is `prev`."""
    body = canonical(
        {"seq": seq, "at": at, "actor": actor, "action": action, "detail": dict(detail)}
    )
    return hashlib.sha256(DOMAIN + prev.encode("ascii") + b"\n" + body).hexdigest()


def storable(value: Any) -> Any:
    """`value` as JSON that every backend stores unchanged: strings without NUL (U+FFFD) or
    lone surrogates, tuples as lists, datetimes as ISO text, other objects by their text.
    What is hashed is then exactly what is stored and read back."""
    # Exact types first: every audit entry of every run passes through here, and the ABC
    # checks below (Mapping) cost more than the rest of the work.
    kind = type(value)
    if kind is str:
        return _storable_text(value)
    if kind is dict:
        return _storable_dict(value)
    if value is None or kind is int or kind is bool:
        return value
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, Mapping):
        return _storable_dict(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [storable(v) for v in value]
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return storable(str(value))  # anything else (an enum, a path) by its text


def _storable_dict(value: Mapping) -> dict:
    """`storable` of a mapping. An entry's detail is mostly flat text and numbers: those
    are handled here, inline, and only nested values recurse (a call per scalar was most of
    the cost of a run's entries)."""
    out = {}
    for key, item in value.items():
        if type(key) is not str:
            key = str(key)
        if not key.isascii() or "\x00" in key:
            key = _storable_text(key)
        kind = type(item)
        if kind is str:
            if not item.isascii() or "\x00" in item:
                item = _storable_text(item)
        elif not (item is None or kind is int or kind is bool):
            item = storable(item)
        out[key] = item
    return out


def _storable_text(value: str) -> str:
    if value.isascii():  # no surrogate in ASCII: only a NUL would change (a flag, not a scan)
        return value if "\x00" not in value else value.replace("\x00", "\ufffd")
    if "\x00" not in value:
        try:
            value.encode("utf-8")  # no lone surrogate: already storable, as it is
            return value
        except UnicodeEncodeError:
            pass
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def stored_fields(record: AuditRecord) -> tuple[str, str, str, str]:
    """(at, actor, action, detail) of `record` as text exactly as it is hashed and stored:
    what a store queues for a sealer to link later (`StateStore.seal_audit`); `chain_texts`
    of these texts gives the entries `link` of `record` gives."""
    detail = _CANONICAL(_storable_dict(record.detail))
    return storable(record.at), storable(record.actor), storable(record.action), detail


StoredEntry = tuple[int, str, str, str, str, str, str]  # seq, at, actor, action, detail, prev, hash


def chain_texts(
    head_seq: int, head_hash: str, texts: Iterable[tuple[str, str, str, str]]
) -> list[StoredEntry]:
    """Link entries given as their stored texts (`stored_fields`: detail is canonical JSON)
    after the head, as the rows to store. The hashed body is composed from the texts, not
    re-serialised: `canonical` of {action, actor, at, detail, seq} puts the keys in that
    order and a canonical detail in as it is, so the hash is `entry_hash`'s."""
    rows: list[StoredEntry] = []
    seq, prev = head_seq, head_hash
    # A batch's entries share a few actors, actions and times: each is quoted once.
    quoted: dict[str, str] = {}
    sha256 = hashlib.sha256

    for at, actor, action, detail in texts:
        seq += 1
        # Looked up inline, not through a helper: three calls per entry showed in profiles.
        action_json = quoted.get(action) or quoted.setdefault(action, _string(action))
        actor_json = quoted.get(actor) or quoted.setdefault(actor, _string(actor))
        at_json = quoted.get(at) or quoted.setdefault(at, _string(at))
        body = (
            f'{{"action":{action_json},"actor":{actor_json},"at":{at_json},'
            f'"detail":{detail},"seq":{seq}}}'
        ).encode()
        digest = sha256(DOMAIN + prev.encode("ascii") + b"\n" + body).hexdigest()
        rows.append((seq, at, actor, action, detail, prev, digest))
        prev = digest
    return rows


def _string(text: str) -> str:
    """A string as canonical JSON (the canonical encoder: the same escapes)."""
    return _CANONICAL(text)


def link(head_seq: int, head_hash: str, records: Iterable[AuditRecord]) -> list[AuditEntry]:
    """The entries that append `records` after the head (`head_seq` 0 and `GENESIS` for an
    empty log). The store calls it inside the transaction that read the head."""
    rows = chain_texts(head_seq, head_hash, map(stored_fields, records))
    return [
        AuditEntry(seq, at, actor, action, json.loads(detail), prev, digest)  # as stored
        for seq, at, actor, action, detail, prev, digest in rows
    ]


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: `problem` is None for an intact chain; `bad_seq` is the first
    bad entry's seq (None when intact). `count` and `head` describe the intact prefix:
    the seq and hash of its last entry (the anchor's when there is none). `hashes` maps each
    verified seq to its hash, for checking checkpoints and exported files."""

    count: int
    head: str
    problem: str | None = None
    bad_seq: int | None = None
    hashes: Mapping[int, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(entries: Iterable[AuditEntry], anchor: Anchor | None = None) -> Verdict:
    """Walk `entries` (in stored `seq` order) from `anchor` (or genesis); stop at the first
    entry that is not where the chain says it must be, or not what its hash says it is."""
    seq, prev = (anchor.seq, anchor.hash) if anchor else (0, GENESIS)
    hashes: dict[int, str] = {}
    for entry in entries:
        problem = _check(entry, seq + 1, prev)
        if problem is not None:
            return Verdict(seq, prev, problem, entry.seq, hashes)
        seq, prev = entry.seq, entry.hash
        hashes[seq] = prev
    return Verdict(seq, prev, None, None, hashes)


def _check(entry: AuditEntry, expected_seq: int, prev: str) -> str | None:
    """Why `entry` cannot be entry `expected_seq` following hash `prev`, or None."""
    if entry.seq > expected_seq:
        missing = (
            f"entry {expected_seq} is missing"
            if entry.seq == expected_seq + 1
            else f"entries {expected_seq}..{entry.seq - 1} are missing"
        )
        return f"audit entry {entry.seq}: {missing} before it (deleted)"
    if entry.seq < expected_seq:
        return f"audit entry {entry.seq}: appears again after entry {expected_seq - 1} (duplicated)"
    if entry.prev != prev:
        before = f"entry {entry.seq - 1}" if entry.seq > 1 else "the start of the log"
        return (
            f"audit entry {entry.seq}: does not link to {before} "
            "(an entry was edited, deleted or moved here)"
        )
    if entry_hash(prev, entry.seq, entry.at, entry.actor, entry.action, entry.detail) != entry.hash:
        return f"audit entry {entry.seq}: its content does not match its hash (edited)"
    return None


__all__ = [
    "GENESIS",
    "TamperedError",
    "Anchor",
    "AuditEntry",
    "AuditRecord",
    "Verdict",
    "canonical",
    "canonical_text",
    "chain_texts",
    "entry_hash",
    "link",
    "storable",
    "stored_fields",
    "verify",
]
