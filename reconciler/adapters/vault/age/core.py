"""Encrypting and decrypting whole age files: header + STREAM payload, optionally armored.

Decryption order (the stage of an AgeError is the first step that failed):
armor -> parse header -> structural rules -> unwrap the file key -> verify the header MAC ->
read the 16-byte nonce -> decrypt the payload chunk by chunk. The MAC is verified before any
payload byte is decrypted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Protocol, runtime_checkable

from reconciler.adapters.vault.age import header as hdr
from reconciler.adapters.vault.age import stream
from reconciler.adapters.vault.age.armor import ArmorWriter, dearmor, is_armored, iter_dearmor
from reconciler.adapters.vault.age.armor import armor as armor_bytes
from reconciler.adapters.vault.age.buffer import OutputBuffer
from reconciler.adapters.vault.age.errors import HeaderError, NoMatchError
from reconciler.adapters.vault.age.header import HYBRID_TYPE, Stanza
from reconciler.adapters.vault.age.primitives import FILE_KEY_SIZE
from reconciler.adapters.vault.age.reader import (
    MemorySource,
    PullSource,
    file_puller,
    iterator_puller,
)
from reconciler.adapters.vault.age.scrypt import TYPE as SCRYPT_TYPE
from reconciler.adapters.vault.age.scrypt import ScryptIdentity

Bytes = bytes | bytearray | memoryview


@runtime_checkable
class Recipient(Protocol):
    """Something a file can be encrypted to: wraps the file key into stanzas."""

    def wrap(self, file_key: bytes) -> list[Stanza]: ...


@runtime_checkable
class Identity(Protocol):
    """Something that may open a file: the file key from the stanzas, or None (not for us).

    Raises AgeError (stage "header") for a malformed stanza of its own type."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None: ...


# --- encryption -------------------------------------------------------------------------------


def _header(file_key: bytes, recipients: Sequence[Recipient]) -> bytes:
    """The serialized header wrapping `file_key` for every recipient (rules checked)."""
    if not recipients:
        raise HeaderError("no recipients: a file must be encrypted to at least one")
    stanzas: list[Stanza] = []
    for recipient in recipients:
        stanzas += recipient.wrap(file_key)
    types = {stanza.type for stanza in stanzas}
    if SCRYPT_TYPE in types and len(stanzas) != 1:
        raise HeaderError("a passphrase (scrypt) must be the only recipient of a file")
    if HYBRID_TYPE in types and types != {HYBRID_TYPE}:
        raise HeaderError(
            "refusing to mix post-quantum (age1pq) and classic recipients: "
            "the file would only be as strong as the classic ones"
        )
    return hdr.serialize(stanzas, file_key)


def encrypt(plaintext: Bytes, recipients: Sequence[Recipient], *, armor: bool = False) -> bytes:
    """An age file holding `plaintext` for `recipients` (ASCII-armored if `armor`).

    Raises AgeError (stage "header") when there are no recipients, a passphrase is mixed with
    other recipients, or post-quantum and classic recipients are mixed.
    """
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise TypeError("encrypt() takes bytes; encode text first")
    file_key = os.urandom(FILE_KEY_SIZE)
    nonce = os.urandom(stream.NONCE_SIZE)
    head = _header(file_key, recipients) + nonce
    buffer = OutputBuffer(len(head) + stream.sealed_size(len(plaintext)))
    out = buffer.view
    out[: len(head)] = head
    stream.seal_into(stream.payload_key(file_key, nonce), plaintext, out[len(head) :])
    del out
    data = buffer.value()
    return armor_bytes(data) if armor else data


def encrypt_stream(
    src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient], *, armor: bool = False
) -> None:
    """Encrypt `src` to `dst` 64 KiB at a time (for files too big to hold in memory)."""
    file_key = os.urandom(FILE_KEY_SIZE)
    nonce = os.urandom(stream.NONCE_SIZE)
    head = _header(file_key, recipients)
    out: BinaryIO | ArmorWriter = ArmorWriter(dst) if armor else dst
    out.write(head + nonce)
    for sealed in stream.seal_file(stream.payload_key(file_key, nonce), src):
        out.write(sealed)
    if isinstance(out, ArmorWriter):
        out.close()


# --- decryption -------------------------------------------------------------------------------


def _unwrap(stanzas: Sequence[Stanza], identities: Sequence[Identity]) -> bytes:
    """The file key, trying identities in order; HeaderError or NoMatchError otherwise."""
    scrypt = [s for s in stanzas if s.type == SCRYPT_TYPE]
    # Checked on the header itself, whatever identities are offered, so the outcome does
    # not depend on which identity happens to be tried first.
    if scrypt and len(stanzas) != 1:
        raise HeaderError("an scrypt (passphrase) stanza must be the only stanza in the header")
    if scrypt:
        # A passphrase file is only ever opened with a passphrase.
        candidates = [i for i in identities if isinstance(i, ScryptIdentity)]
        if not candidates:
            raise NoMatchError("the file is passphrase-encrypted, but no passphrase was given")
    else:
        candidates = [i for i in identities if not isinstance(i, ScryptIdentity)]
        if identities and not candidates:
            raise NoMatchError(
                "the file is encrypted to keys, not with a passphrase: give an identity file"
            )
    for identity in candidates:
        file_key = identity.unwrap(stanzas)
        if file_key is None:
            continue
        if len(file_key) != FILE_KEY_SIZE:
            raise HeaderError("the unwrapped file key is not 16 bytes")
        return file_key
    if scrypt:
        raise NoMatchError("incorrect passphrase")
    raise NoMatchError("no identity matched any of the file's recipients")


def _open_source(src: Bytes | BinaryIO, armored: bool | None) -> MemorySource | PullSource:
    if isinstance(src, (bytes, bytearray, memoryview)):
        if armored is None:
            armored = is_armored(src)
        return MemorySource(dearmor(src) if armored else src)
    prefix = b""
    if armored is None:
        # Peek at the first 4 KiB (or all of a shorter input) to tell armor from binary.
        while len(prefix) < 4096:
            more = src.read(4096 - len(prefix))
            if not more:
                break
            prefix += more
        armored = is_armored(prefix)
    pull = file_puller(src, prefix)
    return PullSource(iterator_puller(iter_dearmor(pull)) if armored else pull)


def _open_payload(source: MemorySource | PullSource, identities: Sequence[Identity]) -> bytes:
    """Check everything before the payload; the payload key. `source` is left at chunk 0."""
    header = hdr.parse(source)
    file_key = _unwrap(header.stanzas, identities)
    hdr.verify_mac(header, file_key)
    nonce = bytes(source.read(stream.NONCE_SIZE))
    if len(nonce) != stream.NONCE_SIZE:
        raise HeaderError("the payload nonce is missing or short (file truncated after the header)")
    return stream.payload_key(file_key, nonce)


def decrypt_chunks(
    src: Bytes | BinaryIO, identities: Sequence[Identity], *, armored: bool | None = None
) -> Iterator[bytes]:
    """Plaintext chunks (64 KiB) of an age file, each released once its tag verifies.

    `src` is the file's bytes or a binary file object; `armored=None` detects the armor.
    Everything before the first chunk (armor, header, unwrap, MAC, nonce) is checked when the
    iterator is first advanced. If it raises part-way, the chunks already yielded were
    authentic but the file as a whole is not: use `decrypt()` for all-or-nothing.
    """
    source = _open_source(src, armored)
    key = _open_payload(source, identities)
    yield from stream.open_chunks(key, source)


def decrypt(data: Bytes, identities: Sequence[Identity]) -> bytes:
    """The whole plaintext of an age file (binary or armored), or AgeError — never part of it.

    `.stage` of the error: "armor" (bad armor), "header" (unparseable or malformed header),
    "no_match" (no identity opens it: wrong key or passphrase), "hmac" (header altered),
    "payload" (truncated, altered or extended payload).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("decrypt() takes the file's bytes; use decrypt_stream() for files")
    source = _open_source(data, None)
    key = _open_payload(source, identities)
    # Decrypt in place into one buffer sized for the largest possible plaintext.
    assert isinstance(source, MemorySource)  # bytes in, memory source out
    buffer = OutputBuffer(source.remaining())
    size = 0
    try:
        for length in stream.open_chunks(key, source, buffer.view):
            size += length
    except BaseException:
        buffer.discard()  # it may hold verified chunks and one unverified: never returned
        raise
    return buffer.value(size)


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identities: Sequence[Identity]) -> None:
    """Decrypt `src` to `dst` chunk by chunk (armor detected), for big files.

    Each chunk is written once it verifies, so when this raises AgeError part-way, `dst` may
    already hold earlier (authentic) chunks of an incomplete plaintext. Callers that need
    all-or-nothing use `decrypt()`, or write to a temporary file and discard it on error.
    """
    for chunk in decrypt_chunks(src, identities):
        dst.write(chunk)


__all__ = [
    "Identity",
    "Recipient",
    "decrypt",
    "decrypt_chunks",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
]
