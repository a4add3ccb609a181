"""The STREAM payload: 64 KiB chunks under ChaCha20-Poly1305, with a counter + final-flag nonce.

    payload = nonce(16) || chunk_0 || ... || chunk_n       chunk_i = seal(key, N_i, plaintext_i)
    key     = HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload")
    N_i     = i as 11 big-endian bytes || 0x01 for the final chunk, 0x00 before it

Only the final chunk may be short, and it may be empty only when the whole payload is empty.
Decryption releases each chunk as soon as its tag verifies (so a streaming caller can write it)
and decides "final" from the nonce that verifies, never by looking ahead for the end of input.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from reconciler.adapters.vault.age.buffer import OutputBuffer
from reconciler.adapters.vault.age.errors import PayloadError
from reconciler.adapters.vault.age.primitives import hkdf
from reconciler.adapters.vault.age.reader import read_full

CHUNK = 64 * 1024
TAG = 16
SEALED_CHUNK = CHUNK + TAG
NONCE_SIZE = 16
_LAST = b"\x01"
_NOT_LAST = b"\x00"


class Source(Protocol):
    def read(self, n: int) -> bytes | memoryview: ...


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return hkdf(file_key, nonce, b"payload")


def _nonce(counter: int, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (_LAST if final else _NOT_LAST)


def sealed_size(size: int) -> int:
    """The payload size (without nonce) of a `size`-byte plaintext: one tag per chunk."""
    return size + TAG * max(1, -(-size // CHUNK))


def seal_into(key: bytes, plaintext: bytes | bytearray | memoryview, out: memoryview) -> None:
    """Seal a whole in-memory plaintext into `out` (exactly `sealed_size` bytes).

    An empty plaintext is one empty final chunk (just a tag)."""
    aead = ChaCha20Poly1305(key)
    view = memoryview(plaintext)
    size = len(view)
    last = max(0, (size - 1) // CHUNK)
    for i in range(last + 1):
        piece = view[i * CHUNK : (i + 1) * CHUNK]
        start = i * SEALED_CHUNK
        aead.encrypt_into(_nonce(i, i == last), piece, None, out[start : start + len(piece) + TAG])


def seal(key: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
    """The sealed payload (without nonce) of a whole in-memory plaintext."""
    buffer = OutputBuffer(sealed_size(len(plaintext)))
    seal_into(key, plaintext, buffer.view)
    return buffer.value()


def seal_file(key: bytes, src: BinaryIO) -> Iterator[bytes]:
    """Sealed chunks of a file, read 64 KiB at a time (one chunk of look-ahead for "final")."""
    aead = ChaCha20Poly1305(key)
    current = read_full(src, CHUNK)
    counter = 0
    while True:
        following = read_full(src, CHUNK) if len(current) == CHUNK else b""
        final = not following
        yield aead.encrypt(_nonce(counter, final), current, None)
        if final:
            return
        current = following
        counter += 1


def open_chunks(
    key: bytes, src: Source, out: memoryview | None = None
) -> Iterator[bytes] | Iterator[int]:
    """Verified plaintext chunks, one at a time; PayloadError at the first problem.

    Without `out`, yields each chunk as bytes. With `out` (room for the whole plaintext),
    decrypts in place into it and yields each chunk's length instead; `out` may then hold
    unverified bytes after an error and must be discarded.

    Chunks released before the error are authentic, but the payload as a whole is not:
    callers that need all-or-nothing must collect everything before using any of it.
    """
    aead = ChaCha20Poly1305(key)
    pos = 0  # where the next chunk goes in `out`

    def attempt(nonce: bytes, sealed: bytes | memoryview) -> bytes | int:
        # Raises InvalidTag when the tag does not verify under this nonce.
        if out is None:
            return aead.decrypt(nonce, sealed, None)
        size = len(sealed) - TAG
        aead.decrypt_into(nonce, sealed, None, out[pos : pos + size])
        return size

    counter = 0
    while True:
        sealed = src.read(SEALED_CHUNK)
        size = len(sealed)
        if size == 0:
            # End of input with no final chunk seen (nothing at all, or only "not final" ones).
            raise PayloadError("truncated payload: the final chunk is missing")
        if size == SEALED_CHUNK:
            # A full chunk may be final or not; the nonce that verifies says which.
            try:
                plaintext = attempt(_nonce(counter, False), sealed)
                final = False
            except InvalidTag:
                try:
                    plaintext = attempt(_nonce(counter, True), sealed)
                    final = True
                except InvalidTag:
                    raise PayloadError(
                        f"payload chunk {counter} failed authentication (corrupted or tampered)"
                    ) from None
            pos += CHUNK
            yield plaintext
            if final:
                if len(src.read(1)):
                    raise PayloadError("trailing data after the final payload chunk")
                return
        else:
            # A short read means the input ended inside this chunk: it must be the final one,
            # at least a tag long, and empty only if it is the whole payload.
            if size < TAG:
                raise PayloadError("truncated payload chunk (shorter than its tag)")
            if size == TAG and counter > 0:
                raise PayloadError("empty final chunk after a non-empty payload")
            try:
                plaintext = attempt(_nonce(counter, True), sealed)
            except InvalidTag:
                raise PayloadError(
                    f"payload chunk {counter} failed authentication "
                    "(corrupted, tampered or truncated)"
                ) from None
            yield plaintext
            return
        counter += 1
