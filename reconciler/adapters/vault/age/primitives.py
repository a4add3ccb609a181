"""The few primitive operations every recipient type shares, over `cryptography`.

HKDF-SHA-256 with 32-byte output, ChaCha20-Poly1305 with the all-zero nonce (each wrap key is
used exactly once), and X25519 that reports an all-zero shared secret instead of using it.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

ZERO_NONCE = bytes(12)
FILE_KEY_SIZE = 16
WRAPPED_KEY_SIZE = FILE_KEY_SIZE + 16  # file key + Poly1305 tag


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA-256 (RFC 5869): Extract with `salt`, then Expand with `info`."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def seal(key: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 with the zero nonce (single-use keys only)."""
    return ChaCha20Poly1305(key).encrypt(ZERO_NONCE, plaintext, None)


def open_or_none(key: bytes, ciphertext: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not verify ("not for this identity")."""
    try:
        return ChaCha20Poly1305(key).decrypt(ZERO_NONCE, ciphertext, None)
    except InvalidTag:
        return None


def x25519(scalar: bytes, point: bytes) -> bytes | None:
    """X25519(scalar, point) per RFC 7748, or None if the result is all zeros (low order point).

    OpenSSL refuses to return an all-zero shared secret; that refusal is the low-order check.
    """
    try:
        return X25519PrivateKey.from_private_bytes(scalar).exchange(
            X25519PublicKey.from_public_bytes(point)
        )
    except ValueError:
        return None


def x25519_base(scalar: bytes) -> bytes:
    """X25519(scalar, basepoint): the public share of a secret scalar."""
    return X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes_raw()
