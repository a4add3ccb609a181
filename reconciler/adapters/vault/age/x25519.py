"""The native X25519 recipient type (`age1...` / `AGE-SECRET-KEY-1...`).

-> X25519 <ephemeral share, 32 bytes>
<ChaCha20-Poly1305(wrap key, file key), 32 bytes>
wrap key = HKDF-SHA-256(ikm = X25519(e, recipient), salt = share || recipient,
                        info = "age-encryption.org/v1/X25519")
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from reconciler.adapters.vault.age import b64, bech32
from reconciler.adapters.vault.age.errors import HeaderError
from reconciler.adapters.vault.age.header import Stanza
from reconciler.adapters.vault.age.primitives import (
    WRAPPED_KEY_SIZE,
    hkdf,
    open_or_none,
    seal,
    x25519,
    x25519_base,
)

TYPE = "X25519"
LABEL = b"age-encryption.org/v1/X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"


class X25519Recipient:
    """Encrypts to one X25519 public key."""

    def __init__(self, public_key: bytes):
        if len(public_key) != 32:
            raise HeaderError("an X25519 recipient is 32 bytes")
        self.public_key = bytes(public_key)

    @classmethod
    def from_bech32(cls, text: str) -> X25519Recipient:
        hrp, data = bech32.decode(text)
        if hrp != RECIPIENT_HRP:
            raise HeaderError("not an age X25519 recipient (expected age1...)")
        if len(data) != 32:
            raise HeaderError("malformed age recipient: wrong key length")
        return cls(data)

    def to_bech32(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public_key)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = os.urandom(32)
        share = x25519_base(ephemeral)
        shared = x25519(ephemeral, self.public_key)
        if shared is None:
            raise HeaderError("the X25519 recipient is a low-order point")
        key = hkdf(shared, share + self.public_key, LABEL)
        return [Stanza(TYPE, (b64.encode_str(share),), seal(key, file_key))]

    def __repr__(self) -> str:
        return f"X25519Recipient({self.to_bech32()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other.public_key == self.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)


class X25519Identity:
    """An X25519 secret key; opens `X25519` stanzas addressed to its public key."""

    def __init__(self, secret_key: bytes):
        if len(secret_key) != 32:
            raise HeaderError("an X25519 identity is 32 bytes")
        self._secret = bytes(secret_key)
        self._public = x25519_base(self._secret)

    @classmethod
    def from_bech32(cls, text: str) -> X25519Identity:
        hrp, data = bech32.decode(text)
        if hrp != IDENTITY_HRP:
            raise HeaderError("not an age X25519 identity (expected AGE-SECRET-KEY-1...)")
        if len(data) != 32:
            raise HeaderError("malformed age identity: wrong key length")
        return cls(data)

    def to_bech32(self) -> str:
        """The secret key as `AGE-SECRET-KEY-1...` (handle with care)."""
        return bech32.encode(IDENTITY_HRP, self._secret, upper=True)

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self._public)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key from the first `X25519` stanza for this key, else None.

        Raises HeaderError for a malformed `X25519` stanza (argument count, a share that is
        not canonical base64 of 32 bytes, a body that is not 32 bytes — checked before any
        decryption — or a low-order share giving an all-zero secret). Stanzas of other types,
        and well-formed ones whose tag fails (another recipient's), are skipped.
        """
        for stanza in stanzas:
            if stanza.type != TYPE:
                continue
            if len(stanza.args) != 1:
                raise HeaderError("malformed X25519 stanza: expected exactly one argument")
            share = b64.decode_exact(stanza.args[0], 32, "X25519 stanza share")
            if len(stanza.body) != WRAPPED_KEY_SIZE:
                raise HeaderError("malformed X25519 stanza: the body is not 32 bytes")
            shared = x25519(self._secret, share)
            if shared is None:
                raise HeaderError("X25519 stanza share is a low-order point")
            key = hkdf(shared, share + self._public, LABEL)
            file_key = open_or_none(key, stanza.body)
            if file_key is not None:
                return file_key
        return None

    def __repr__(self) -> str:  # never the secret
        return f"X25519Identity(recipient={self.recipient().to_bech32()})"


def generate_x25519() -> X25519Identity:
    """A new random X25519 identity (`.to_bech32()` / `.recipient().to_bech32()`)."""
    return X25519Identity(os.urandom(32))
