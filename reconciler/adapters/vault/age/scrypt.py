"""The scrypt passphrase recipient type.

    -> scrypt <salt, 16 bytes> <log2 N>
    <ChaCha20-Poly1305(wrap key, file key), 32 bytes>
    wrap key = scrypt(N, r = 8, p = 1, dkLen = 32, S = "age-encryption.org/v1/scrypt" || salt)

A header holding an scrypt stanza must hold nothing else (checked on the header, by the
decryptor, whatever identities are offered). The identity refuses work factors above its cap
*before* running scrypt: a hostile file could otherwise demand gigabytes and minutes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from reconciler.adapters.vault.age import b64
from reconciler.adapters.vault.age.errors import HeaderError
from reconciler.adapters.vault.age.header import Stanza
from reconciler.adapters.vault.age.primitives import WRAPPED_KEY_SIZE, open_or_none, seal

TYPE = "scrypt"
LABEL = b"age-encryption.org/v1/scrypt"
SALT_SIZE = 16
# Decimal, no sign, no leading zero: "10" but not "010", "+10", "0xa" or "-10".
_WORK_FACTOR = re.compile(r"[1-9][0-9]*")
MAX_SUPPORTED = 30


def _wrap_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    kdf = Scrypt(salt=LABEL + salt, length=32, n=1 << work_factor, r=8, p=1)
    return kdf.derive(passphrase)


def _check_passphrase(passphrase: str) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise HeaderError("the passphrase must be a non-empty string")
    return passphrase.encode("utf-8")


class ScryptRecipient:
    """Encrypts with a passphrase; `work_factor` is log2 of scrypt's N (18 ≈ 256 MiB, ~1 s)."""

    def __init__(self, passphrase: str, work_factor: int = 18):
        if not isinstance(work_factor, int) or not 1 <= work_factor <= MAX_SUPPORTED:
            raise HeaderError(f"scrypt work factor must be 1..{MAX_SUPPORTED}")
        self._passphrase = _check_passphrase(passphrase)
        self.work_factor = work_factor

    def wrap(self, file_key: bytes) -> list[Stanza]:
        salt = os.urandom(SALT_SIZE)
        key = _wrap_key(self._passphrase, salt, self.work_factor)
        args = (b64.encode_str(salt), str(self.work_factor))
        return [Stanza(TYPE, args, seal(key, file_key))]

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"


class ScryptIdentity:
    """Decrypts passphrase-encrypted files; refuses work factors above `max_work_factor`."""

    def __init__(self, passphrase: str, max_work_factor: int = 22):
        if not isinstance(max_work_factor, int) or not 1 <= max_work_factor <= MAX_SUPPORTED:
            raise HeaderError(f"scrypt max work factor must be 1..{MAX_SUPPORTED}")
        self._passphrase = _check_passphrase(passphrase)
        self.max_work_factor = max_work_factor

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key if the passphrase opens the `scrypt` stanza, else None (wrong one).

        Raises HeaderError for a malformed stanza: not exactly salt + work factor, a salt that
        is not canonical base64 of 16 bytes, a work factor that is not plain decimal or is
        above the cap, a body that is not 32 bytes.
        """
        for stanza in stanzas:
            if stanza.type != TYPE:
                continue
            if len(stanza.args) != 2:
                raise HeaderError("malformed scrypt stanza: expected a salt and a work factor")
            salt = b64.decode_exact(stanza.args[0], SALT_SIZE, "scrypt stanza salt")
            text = stanza.args[1]
            if not _WORK_FACTOR.fullmatch(text):
                raise HeaderError(
                    "malformed scrypt stanza: the work factor is not a decimal "
                    "number without sign or leading zero"
                )
            # Compare the digits' length first: int() of a huge string is itself a cost.
            if len(text) > 2 or int(text) > self.max_work_factor:
                raise HeaderError(
                    f"scrypt work factor {text[:8]} is above the limit "
                    f"{self.max_work_factor}: refusing to run it"
                )
            if len(stanza.body) != WRAPPED_KEY_SIZE:
                raise HeaderError("malformed scrypt stanza: the body is not 32 bytes")
            key = _wrap_key(self._passphrase, salt, int(text))
            file_key = open_or_none(key, stanza.body)
            if file_key is not None:
                return file_key
        return None

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self.max_work_factor})"


def scrypt_recipient(passphrase: str, work_factor: int = 18) -> ScryptRecipient:
    """A passphrase recipient. It must be the only recipient of a file (encrypt refuses mixes)."""
    return ScryptRecipient(passphrase, work_factor)


def scrypt_identity(passphrase: str, max_work_factor: int = 22) -> ScryptIdentity:
    """A passphrase identity; files asking for more than 2**max_work_factor are refused
    (HeaderError) without running scrypt."""
    return ScryptIdentity(passphrase, max_work_factor)
