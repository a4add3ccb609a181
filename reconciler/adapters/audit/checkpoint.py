"""Signed checkpoints of the audit log: ed25519 over (head hash, count), kept outside the store.

The hash chain shows an edit, a deletion or a reordering inside the log, but not a log cut
short or replaced by an older copy: those are still valid chains. A checkpoint written by
`audit export` (its last line) records how long the log was and what its head was; `audit
verify --checkpoint FILE` then requires entry `count` to exist with that hash.

The signing key, in this order:
1. derived from the reconciler's age identity when one is configured (`--identity`,
   `RECONCILE_IDENTITY_FILE`, `RECONCILE_IDENTITY`): HKDF-SHA-256 over the identity's secret
   key with a label of its own, so nothing new needs backing up and any host holding the
   identity signs and verifies with the same key, while the vault key itself is never used
   for signing;
2. otherwise a key file beside the state store (`.reconciler/audit.key` for the default store),
   an ed25519 PKCS#8 PEM created with mode 0600 at the first export.
A checkpoint names its public key (`ed25519:<base64>`); verification accepts only a key this
host holds (either source) or one given with `--public-key`, so whoever can rewrite the
store cannot also forge the checkpoint.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from reconciler.adapters.audit.chain import canonical
from reconciler.adapters.private_files import private_dir
from reconciler.core.errors import InputError

DOMAIN = b"reconciler-audit-checkpoint-v1\n"
# A prune anchor is signed under its own domain: an export's checkpoint says "the log had
# these entries", an anchor "the entries up to here were archived and may be gone". Exports
# are kept off the host on purpose; signed alike, any of them let whoever can write the store
# delete the entries it covers and quote its signature as the anchor's.
ANCHOR_DOMAIN = b"reconciler-audit-anchor-v1\n"
PURPOSES = {"checkpoint": DOMAIN, "anchor": ANCHOR_DOMAIN}
HKDF_SALT = b"reconciler-audit"
HKDF_INFO = b"reconciler audit checkpoint ed25519 v1"
KEY_FILE = "audit.key"
KEY_PREFIX = "ed25519:"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the log had `count` entries (its head's seq) and head `head`."""

    count: int
    head: str
    at: str
    public_key: str
    signature: str
    purpose: str = "checkpoint"  # or "anchor": what a prune signs (see ANCHOR_DOMAIN)

    def payload(self) -> bytes:
        return payload(self.count, self.head, self.at, self.purpose)

    def to_json(self) -> dict[str, Any]:
        """The last line of `audit export` (and of a prune's archive, as its anchor)."""
        data = {
            "type": "checkpoint",
            "count": self.count,
            "head": self.head,
            "at": self.at,
            "public_key": self.public_key,
            "signature": self.signature,
        }
        return data if self.purpose == "checkpoint" else {**data, "purpose": self.purpose}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Raises KeyError/TypeError/ValueError for a malformed line."""
        if data.get("type") != "checkpoint":
            raise ValueError("not a checkpoint line")
        purpose = str(data.get("purpose", "checkpoint"))
        if purpose not in PURPOSES:
            raise ValueError(f"unknown checkpoint purpose {purpose[:40]!r}")
        return cls(
            int(data["count"]),
            str(data["head"]),
            str(data["at"]),
            str(data["public_key"]),
            str(data["signature"]),
            purpose,
        )


def payload(count: int, head: str, at: str, purpose: str = "checkpoint") -> bytes:
    """The signed bytes."""
    return PURPOSES[purpose] + canonical({"count": count, "head": head, "at": at})


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """`ed25519:<base64 of the raw 32-byte public key>`."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return KEY_PREFIX + base64.b64encode(public.public_bytes_raw()).decode("ascii")


def sign(
    key: Ed25519PrivateKey, count: int, head: str, at: str, purpose: str = "checkpoint"
) -> Checkpoint:
    """A checkpoint over (count, head) at time `at`; `purpose="anchor"` for a prune anchor."""
    signature = key.sign(payload(count, head, at, purpose))
    return Checkpoint(
        count, head, at, public_text(key), base64.b64encode(signature).decode("ascii"), purpose
    )


def signature_valid(checkpoint: Checkpoint) -> bool:
    """Whether the signature is valid for the key the checkpoint names (trust is separate:
    see `trusted`)."""
    if not checkpoint.public_key.startswith(KEY_PREFIX):
        return False
    try:
        raw = base64.b64decode(checkpoint.public_key[len(KEY_PREFIX) :], validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw)
        public.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.payload())
    except (InvalidSignature, ValueError):
        return False
    return True


def vouches_for(checkpoint: Checkpoint, seq: int, head: str, trusted: Mapping[str, str]) -> bool:
    """Whether `checkpoint` is a valid signature, by a key in `trusted`, over entry `seq`
    having hash `head`: how a prune anchor (the last entry a prune removed) is authenticated."""
    return (
        checkpoint.purpose == "anchor"
        and checkpoint.count == seq
        and checkpoint.head == head
        and checkpoint.public_key in trusted
        and signature_valid(checkpoint)
    )


# --- keys -----------------------------------------------------------------------------------------


def derive_from_identity(identity: object) -> Ed25519PrivateKey | None:
    """The checkpoint key of an age identity (X25519, post-quantum hybrid, or OpenSSH
    ed25519), or None for a kind without a stable secret we can derive from (RSA, scrypt)."""
    secret = _identity_secret(identity)
    if secret is None:
        return None
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def _identity_secret(identity: object) -> bytes | None:
    # The age identities keep their secrets private to their module; this is the one reader.
    for attribute in ("_secret", "_seed", "_scalar"):
        value = getattr(identity, attribute, None)
        if isinstance(value, bytes) and len(value) == 32:
            return value
    return None


def load_key_file(path: Path) -> Ed25519PrivateKey | None:
    """The key in `path`, or None when there is no such file; `InputError` when it is not
    an unencrypted ed25519 PKCS#8 PEM key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read the audit key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an ed25519 private key in PEM ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: the audit key must be ed25519")
    return key


def create_key_file(path: Path) -> Ed25519PrivateKey:
    """A new key written to `path` with mode 0600 (never overwriting: a file that appeared
    meanwhile is loaded instead)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        private_dir(path.parent)  # under umask 000 a plain mkdir left it open to all
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = load_key_file(path)
        assert existing is not None
        return existing
    except OSError as exc:
        raise InputError(f"cannot create the audit key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


@dataclass(frozen=True)
class SigningKey:
    """The key checkpoints are signed with, and where it comes from (for messages)."""

    key: Ed25519PrivateKey
    source: str

    @property
    def public(self) -> str:
        return public_text(self.key)


def signing_key(
    identities: Iterable[object], key_path: Path, *, create: bool = True
) -> SigningKey | None:
    """The identity-derived key if an identity is configured, else the key file (created if
    missing and `create`); None when there is none."""
    for identity in identities:
        derived = derive_from_identity(identity)
        if derived is not None:
            return SigningKey(derived, "derived from the configured identity")
    key = load_key_file(key_path)
    if key is None and create:
        key = create_key_file(key_path)
    return SigningKey(key, f"key file {key_path}") if key is not None else None


def trusted(
    identities: Iterable[object], key_path: Path, extra: Iterable[str] = ()
) -> dict[str, str]:
    """Public keys a checkpoint may be signed with, each with where it comes from."""
    keys: dict[str, str] = {}
    for identity in identities:
        derived = derive_from_identity(identity)
        if derived is not None:
            keys.setdefault(public_text(derived), "the configured identity")
    from_file = load_key_file(key_path)
    if from_file is not None:
        keys.setdefault(public_text(from_file), f"key file {key_path}")
    for text in extra:
        keys.setdefault(text if text.startswith(KEY_PREFIX) else KEY_PREFIX + text, "--public-key")
    return keys


# --- files ------------------------------------------------------------------------------------------


def open_text(path: str | Path, mode: str = "rt", *, gz: bool | None = None):
    """A UTF-8 text file, gzip-compressed when `gz` (default: when its name ends in `.gz`).
    A file opened for writing is created (or truncated) private, 0600, whatever the umask:
    exports and archives hold the audit log and run output."""
    if "w" in mode:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.chmod(path, 0o600)  # it may have existed with a looser mode
    if gz if gz is not None else str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_checkpoint(path: str | Path) -> tuple[Checkpoint, list[dict[str, Any]]]:
    """The checkpoint in `path` (its last checkpoint line: a checkpoint file or an export or
    archive ending with one) and the audit entries (`"type": "audit"` lines) it holds.
    Raises `InputError` for a file without a readable checkpoint."""
    checkpoint, entries = None, []
    try:
        with open_text(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    raise InputError(f"{path}:{number}: not a JSON line") from None
                if isinstance(data, dict) and data.get("type") == "checkpoint":
                    checkpoint = Checkpoint.from_json(data)
                elif isinstance(data, dict) and data.get("type") == "audit":
                    entries.append(data)
    except (OSError, EOFError) as exc:
        raise InputError(
            f"cannot read checkpoint file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: malformed checkpoint line ({exc})") from None
    if checkpoint is None:
        raise InputError(f"{path}: no checkpoint line (write one with `reconcile audit export`)")
    return checkpoint, entries


__all__ = [
    "Checkpoint",
    "KEY_FILE",
    "vouches_for",
    "SigningKey",
    "create_key_file",
    "derive_from_identity",
    "load_key_file",
    "open_text",
    "public_text",
    "read_checkpoint",
    "sign",
    "signature_valid",
    "signing_key",
    "trusted",
]
