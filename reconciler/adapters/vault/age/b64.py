"""Unpadded, canonical base64 as the age header uses it (RFC 4648 §4 alphabet, no `=`).

Python's decoder is lenient: without `validate=True` it drops foreign characters, and it never
checks that the unused low bits of the last character are zero. So decoding here checks the
alphabet first, then re-encodes the result and compares: only the one canonical spelling of a
value is accepted (non-canonical encodings would make the header malleable).
"""

from __future__ import annotations

import base64
import binascii
import re

from reconciler.adapters.vault.age.errors import HeaderError

# Only the 64 alphabet characters; `=` padding is forbidden in the header.
_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*")


def encode(data: bytes) -> bytes:
    """`data` as unpadded base64 (ASCII bytes)."""
    return base64.b64encode(data).rstrip(b"=")


def encode_str(data: bytes) -> str:
    return encode(data).decode("ascii")


def decode(text: bytes | str, what: str) -> bytes:
    """Decode canonical unpadded base64; raise HeaderError naming `what` otherwise."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if not _ALPHABET.fullmatch(raw):
        raise HeaderError(f"{what}: not unpadded base64 (bad character or `=` padding)")
    if len(raw) % 4 == 1:  # 6 bits cannot end a byte: never a valid length
        raise HeaderError(f"{what}: invalid base64 length")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise HeaderError(f"{what}: invalid base64") from None
    if encode(data) != raw:  # unused trailing bits were not zero
        raise HeaderError(f"{what}: non-canonical base64")
    return data


def decode_exact(text: bytes | str, size: int, what: str) -> bytes:
    """Decode canonical base64 that must hold exactly `size` bytes."""
    data = decode(text, what)
    if len(data) != size:
        raise HeaderError(f"{what}: expected {size} bytes, got {len(data)}")
    return data
