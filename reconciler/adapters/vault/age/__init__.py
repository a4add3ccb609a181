"""age v1 file encryption (https://c2sp.org/age), written over `cryptography` only.

Recipients: X25519 (`age1...`), ssh-ed25519 and ssh-rsa public keys, scrypt passphrases and the
hybrid post-quantum ML-KEM-768 + X25519 type (`age1pq1...`). Identities: age identity files
(`AGE-SECRET-KEY-1...`, `AGE-SECRET-KEY-PQ-1...`), unencrypted OpenSSH ed25519/rsa private
keys, passphrases. Files are binary or ASCII-armored (`-----BEGIN AGE ENCRYPTED FILE-----`)
and interoperate with the `age` and `rage` tools.

    identity = generate_x25519()
    data = encrypt(b"secret", [identity.recipient()], armor=True)
    assert decrypt(data, [identity]) == b"secret"

Every failure is an `AgeError` whose `.stage` says where it failed: "armor", "header",
"no_match", "hmac" or "payload". `decrypt` is all-or-nothing; `decrypt_stream` and
`decrypt_chunks` release verified chunks as they go.

Modules: bech32, b64 (canonical base64), armor, header (stanzas, MAC), stream (payload),
x25519, scrypt, ssh, hybrid, keys (parsing key text), core (whole files), errors, and the
helpers primitives (HKDF, AEAD, X25519), reader (byte sources), buffer (in-place output).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from reconciler.adapters.vault.age.armor import (  # (the module `armor` stays reachable as age.armor)
    dearmor,
    is_armored,
)
from reconciler.adapters.vault.age.core import (
    Identity,
    Recipient,
    decrypt,
    decrypt_chunks,
    decrypt_stream,
    encrypt,
    encrypt_stream,
)
from reconciler.adapters.vault.age.errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HMACError,
    NoMatchError,
    PayloadError,
)
from reconciler.adapters.vault.age.header import Stanza
from reconciler.adapters.vault.age.keys import parse_identities, parse_recipient
from reconciler.adapters.vault.age.scrypt import (
    ScryptIdentity,
    ScryptRecipient,
    scrypt_identity,
    scrypt_recipient,
)
from reconciler.adapters.vault.age.x25519 import X25519Identity, X25519Recipient, generate_x25519

if TYPE_CHECKING:
    from reconciler.adapters.vault.age.hybrid import HybridIdentity, HybridRecipient
    from reconciler.adapters.vault.age.ssh import (
        SshEd25519Identity,
        SshEd25519Recipient,
        SshRsaIdentity,
        SshRsaRecipient,
    )

# Imported when first named (`age.SshRsaRecipient`) or when a key of their kind is parsed
# (keys.py): an X25519 file, most of them, needs neither the SSH module (cryptography's key
# serialization) nor the post-quantum one, and `vault encrypt`/`decrypt` should start
# without them (issue 14: within 2x of `age`). scrypt stays: `vault decrypt` always offers
# a passphrase identity, and its module costs nothing to speak of.
_LAZY = {
    "HybridIdentity": "hybrid",
    "HybridRecipient": "hybrid",
    "SshEd25519Identity": "ssh",
    "SshEd25519Recipient": "ssh",
    "SshRsaIdentity": "ssh",
    "SshRsaRecipient": "ssh",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AgeError",
    "ArmorError",
    "HeaderError",
    "HMACError",
    "NoMatchError",
    "PayloadError",
    "Identity",
    "Recipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "generate_x25519",
    "HybridIdentity",
    "HybridRecipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "scrypt_identity",
    "scrypt_recipient",
    "SshEd25519Identity",
    "SshEd25519Recipient",
    "SshRsaIdentity",
    "SshRsaRecipient",
    "parse_identities",
    "parse_recipient",
    "encrypt",
    "decrypt",
    "encrypt_stream",
    "decrypt_stream",
    "decrypt_chunks",
    "dearmor",
    "is_armored",
]
