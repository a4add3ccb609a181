"""SSH keys as age recipients and identities: `ssh-ed25519` and `ssh-rsa` stanzas.

    -> ssh-ed25519 <tag> <ephemeral share>      tag = base64(SHA-256(SSH wire public key)[:4])
    <ChaCha20-Poly1305(wrap key, file key)>
        The Ed25519 key is used as X25519 (Montgomery u = (1 + y) / (1 - y); secret scalar =
        SHA-512(seed)[:32]); the shared secret is multiplied by a tweak,
        tweak = HKDF-SHA-256(ikm = "", salt = wire key, info = "age-encryption.org/v1/ssh-ed25519"),
        wrap key = HKDF-SHA-256(ikm = tweaked secret, salt = share || u, info = same label).

    -> ssh-rsa <tag>
    <RSA-OAEP-SHA-256(file key, label = "age-encryption.org/v1/ssh-rsa")>

Identities come from unencrypted OpenSSH private keys (or PEM PKCS#1/PKCS#8 keys).
Passphrase-protected keys are refused with a clear error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from reconciler.adapters.vault.age import b64
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

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
ED25519_LABEL = b"age-encryption.org/v1/ssh-ed25519"
RSA_LABEL = b"age-encryption.org/v1/ssh-rsa"
MIN_RSA_BITS = 2048
_P = 2**255 - 19


def _tag(wire: bytes) -> str:
    return b64.encode_str(hashlib.sha256(wire).digest()[:4])


def _wire(public_key: Ed25519PublicKey | RSAPublicKey) -> bytes:
    """The SSH wire encoding of a public key (the base64 field of an authorized_keys line)."""
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return base64.b64decode(line.split(b" ")[1])


def _edwards_to_montgomery(public_key: bytes) -> bytes:
    """The X25519 u-coordinate of an Ed25519 public key: u = (1 + y) / (1 - y) mod p."""
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)  # drop the sign of x
    denominator = (1 - y) % _P
    if denominator == 0:
        raise HeaderError("the ssh-ed25519 key is the identity point")
    return ((1 + y) * pow(denominator, -1, _P) % _P).to_bytes(32, "little")


def _oaep() -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=RSA_LABEL
    )


class SshEd25519Recipient:
    def __init__(self, public_key: Ed25519PublicKey):
        self._wire = _wire(public_key)
        self._tag = _tag(self._wire)
        self._montgomery = _edwards_to_montgomery(public_key.public_bytes_raw())
        self._tweak = hkdf(b"", self._wire, ED25519_LABEL)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = os.urandom(32)
        share = x25519_base(ephemeral)
        shared = x25519(ephemeral, self._montgomery)
        tweaked = x25519(self._tweak, shared) if shared is not None else None
        if tweaked is None:
            raise HeaderError("the ssh-ed25519 recipient is a low-order point")
        key = hkdf(tweaked, share + self._montgomery, ED25519_LABEL)
        return [Stanza(ED25519, (self._tag, b64.encode_str(share)), seal(key, file_key))]

    def __repr__(self) -> str:
        return f"SshEd25519Recipient(tag={self._tag})"


class SshRsaRecipient:
    def __init__(self, public_key: RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise HeaderError(
                f"ssh-rsa recipient: the key has {public_key.key_size} bits; "
                f"at least {MIN_RSA_BITS} are required"
            )
        self._key = public_key
        self._tag = _tag(_wire(public_key))

    def wrap(self, file_key: bytes) -> list[Stanza]:
        return [Stanza(RSA, (self._tag,), self._key.encrypt(file_key, _oaep()))]

    def __repr__(self) -> str:
        return f"SshRsaRecipient(tag={self._tag})"


class SshEd25519Identity:
    """An Ed25519 SSH private key; opens `ssh-ed25519` stanzas carrying its tag."""

    def __init__(self, private_key: Ed25519PrivateKey):
        public = private_key.public_key()
        self._wire = _wire(public)
        self._tag = _tag(self._wire)
        self._scalar = hashlib.sha512(private_key.private_bytes_raw()).digest()[:32]
        self._montgomery = x25519_base(self._scalar)
        self._tweak = hkdf(b"", self._wire, ED25519_LABEL)

    def recipient(self) -> SshEd25519Recipient:
        return SshEd25519Recipient(
            serialization.load_ssh_public_key(b"ssh-ed25519 " + base64.b64encode(self._wire))
        )

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key from an `ssh-ed25519` stanza with our tag, else None.

        Raises HeaderError for a malformed stanza (not tag + share, a share that is not
        canonical base64 of 32 bytes, a body that is not 32 bytes, a low-order share).
        """
        for stanza in stanzas:
            if stanza.type != ED25519:
                continue
            if len(stanza.args) != 2:
                raise HeaderError("malformed ssh-ed25519 stanza: expected a tag and a share")
            share = b64.decode_exact(stanza.args[1], 32, "ssh-ed25519 stanza share")
            if stanza.args[0] != self._tag:
                continue  # addressed to another key
            if len(stanza.body) != WRAPPED_KEY_SIZE:
                raise HeaderError("malformed ssh-ed25519 stanza: the body is not 32 bytes")
            shared = x25519(self._scalar, share)
            tweaked = x25519(self._tweak, shared) if shared is not None else None
            if tweaked is None:
                raise HeaderError("ssh-ed25519 stanza share is a low-order point")
            key = hkdf(tweaked, share + self._montgomery, ED25519_LABEL)
            file_key = open_or_none(key, stanza.body)
            if file_key is not None:
                return file_key
        return None

    def __repr__(self) -> str:
        return f"SshEd25519Identity(tag={self._tag})"


class SshRsaIdentity:
    """An RSA SSH private key; opens `ssh-rsa` stanzas carrying its tag."""

    def __init__(self, private_key: RSAPrivateKey):
        self._key = private_key
        self._tag = _tag(_wire(private_key.public_key()))

    def recipient(self) -> SshRsaRecipient:
        return SshRsaRecipient(self._key.public_key())

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key from an `ssh-rsa` stanza with our tag, else None; HeaderError when an
        `ssh-rsa` stanza does not have exactly one argument (the tag)."""
        for stanza in stanzas:
            if stanza.type != RSA:
                continue
            if len(stanza.args) != 1:
                raise HeaderError("malformed ssh-rsa stanza: expected exactly one argument")
            if stanza.args[0] != self._tag:
                continue
            try:
                return self._key.decrypt(stanza.body, _oaep())
            except ValueError:
                continue
        return None

    def __repr__(self) -> str:
        return f"SshRsaIdentity(tag={self._tag})"


def parse_ssh_recipient(text: str) -> SshEd25519Recipient | SshRsaRecipient:
    """An authorized_keys-style line `TYPE BASE64 [comment]` as a recipient."""
    fields = text.split()
    if len(fields) < 2 or fields[0] not in (ED25519, RSA):
        raise HeaderError(
            "not an SSH public key line (expected 'ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...')"
        )
    try:
        base64.b64decode(fields[1], validate=True)
        key = serialization.load_ssh_public_key(f"{fields[0]} {fields[1]}".encode("ascii"))
    except (ValueError, binascii.Error, UnicodeEncodeError, UnsupportedAlgorithm):
        raise HeaderError(f"malformed {fields[0]} public key") from None
    if fields[0] == ED25519 and isinstance(key, Ed25519PublicKey):
        return SshEd25519Recipient(key)
    if fields[0] == RSA and isinstance(key, RSAPublicKey):
        return SshRsaRecipient(key)
    raise HeaderError(f"the key does not match its declared type {fields[0]}")


def parse_ssh_identity(text: str) -> SshEd25519Identity | SshRsaIdentity:
    """An unencrypted OpenSSH (or PEM) private key as an identity; HeaderError otherwise."""
    data = text.encode("utf-8")
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError when a key needs a password that was not given.
        raise HeaderError(
            "the SSH private key is passphrase-protected, which is not "
            "supported: use an unencrypted key or an age identity"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise HeaderError("malformed or unsupported SSH private key") from None
    if isinstance(key, Ed25519PrivateKey):
        return SshEd25519Identity(key)
    if isinstance(key, RSAPrivateKey):
        return SshRsaIdentity(key)
    raise HeaderError(
        "unsupported SSH private key type: only ed25519 and rsa keys can be age identities"
    )
