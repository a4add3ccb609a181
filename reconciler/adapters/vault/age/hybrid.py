"""The hybrid post-quantum recipient type: HPKE with the MLKEM768-X25519 KEM (X-Wing).

    -> mlkem768x25519 <enc, 1120 bytes = ML-KEM-768 ciphertext (1088) || X25519 share (32)>
    <HPKE SealBase ciphertext of the file key, 32 bytes>

Identity `AGE-SECRET-KEY-PQ-1...` is a 32-byte seed, expanded with SHAKE-256 to 96 bytes: 64
for ML-KEM-768 key generation (d || z), 32 for the X25519 secret. The recipient `age1pq1...` is
the ML-KEM encapsulation key (1184) || the X25519 public key (32). The KEM's shared secret is
SHA3-256(ss_mlkem || ss_x25519 || share || x25519 public || "\\.//^\\"), and HPKE (RFC 9180,
base mode, HKDF-SHA256, ChaCha20Poly1305, info "age-encryption.org/mlkem768x25519") turns it
into the key and nonce that seal the file key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from reconciler.adapters.vault.age import b64, bech32
from reconciler.adapters.vault.age.errors import HeaderError
from reconciler.adapters.vault.age.header import HYBRID_TYPE, Stanza
from reconciler.adapters.vault.age.primitives import (
    WRAPPED_KEY_SIZE,
    hkdf_expand,
    hkdf_extract,
    x25519,
)

TYPE = HYBRID_TYPE
INFO = b"age-encryption.org/mlkem768x25519"
RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "age-secret-key-pq-"
MLKEM_PUBLIC = 1184
MLKEM_CIPHERTEXT = 1088
PUBLIC_SIZE = MLKEM_PUBLIC + 32
ENC_SIZE = MLKEM_CIPHERTEXT + 32
_COMBINER_LABEL = b"\\.//^\\"
# RFC 9180 suite id: "HPKE" || KEM 0x647a (MLKEM768-X25519) || KDF 0x0001 || AEAD 0x0003.
_SUITE = b"HPKE" + bytes.fromhex("647a") + bytes.fromhex("0001") + bytes.fromhex("0003")


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, b"HPKE-v1" + _SUITE + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + _SUITE + label + info, length)


def _hpke_key_nonce(shared_secret: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 KeySchedule in base mode (no PSK): the AEAD key and base nonce."""
    context = (
        b"\x00"
        + _labeled_extract(b"", b"psk_id_hash", b"")
        + _labeled_extract(b"", b"info_hash", INFO)
    )
    secret = _labeled_extract(shared_secret, b"secret", b"")
    return (
        _labeled_expand(secret, b"key", context, 32),
        _labeled_expand(secret, b"base_nonce", context, 12),
    )


def _combine(ss_mlkem: bytes, ss_x25519: bytes, share: bytes, x25519_public: bytes) -> bytes:
    return hashlib.sha3_256(ss_mlkem + ss_x25519 + share + x25519_public + _COMBINER_LABEL).digest()


class HybridRecipient:
    """Encrypts to an ML-KEM-768 + X25519 public key (`age1pq1...`)."""

    def __init__(self, public_key: bytes):
        if len(public_key) != PUBLIC_SIZE:
            raise HeaderError("malformed age1pq recipient: wrong key length")
        try:
            self._mlkem = MLKEM768PublicKey.from_public_bytes(public_key[:MLKEM_PUBLIC])
        except ValueError:
            raise HeaderError("malformed age1pq recipient: invalid ML-KEM-768 key") from None
        self.public_key = bytes(public_key)
        self._x25519 = self.public_key[MLKEM_PUBLIC:]

    @classmethod
    def from_bech32(cls, text: str) -> HybridRecipient:
        hrp, data = bech32.decode(text)
        if hrp != RECIPIENT_HRP:
            raise HeaderError("not an age post-quantum recipient (expected age1pq1...)")
        return cls(data)

    def to_bech32(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public_key)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ss_mlkem, ct_mlkem = self._mlkem.encapsulate()
        ephemeral = os.urandom(32)
        share = X25519PrivateKey.from_private_bytes(ephemeral).public_key().public_bytes_raw()
        ss_x25519 = x25519(ephemeral, self._x25519)
        if ss_x25519 is None:
            raise HeaderError("the age1pq recipient's X25519 key is a low-order point")
        key, nonce = _hpke_key_nonce(_combine(ss_mlkem, ss_x25519, share, self._x25519))
        body = ChaCha20Poly1305(key).encrypt(nonce, file_key, b"")
        return [Stanza(TYPE, (b64.encode_str(ct_mlkem + share),), body)]

    def __repr__(self) -> str:
        return f"HybridRecipient({self.to_bech32()[:24]}...)"


class HybridIdentity:
    """An `AGE-SECRET-KEY-PQ-1...` seed; opens `mlkem768x25519` stanzas."""

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise HeaderError("an age post-quantum identity is a 32-byte seed")
        self._seed = bytes(seed)
        expanded = hashlib.shake_256(self._seed).digest(96)
        self._mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._x25519_secret = expanded[64:]
        self._x25519_public = (
            X25519PrivateKey.from_private_bytes(self._x25519_secret).public_key().public_bytes_raw()
        )

    @classmethod
    def from_bech32(cls, text: str) -> HybridIdentity:
        hrp, data = bech32.decode(text)
        if hrp != IDENTITY_HRP:
            raise HeaderError("not an age post-quantum identity (expected AGE-SECRET-KEY-PQ-1...)")
        return cls(data)

    def to_bech32(self) -> str:
        return bech32.encode(IDENTITY_HRP, self._seed, upper=True)

    def recipient(self) -> HybridRecipient:
        return HybridRecipient(self._mlkem.public_key().public_bytes_raw() + self._x25519_public)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key from the first `mlkem768x25519` stanza that opens, else None.

        Raises HeaderError for a malformed stanza (not exactly one argument, `enc` not
        canonical base64 of 1120 bytes, body not 32 bytes, X25519 half of low order).
        A failing tag — including from a corrupted ML-KEM ciphertext, which ML-KEM's
        implicit rejection turns into a wrong key — means "not for us".
        """
        for stanza in stanzas:
            if stanza.type != TYPE:
                continue
            if len(stanza.args) != 1:
                raise HeaderError("malformed mlkem768x25519 stanza: expected one argument")
            enc = b64.decode_exact(stanza.args[0], ENC_SIZE, "mlkem768x25519 stanza enc")
            if len(stanza.body) != WRAPPED_KEY_SIZE:
                raise HeaderError("malformed mlkem768x25519 stanza: the body is not 32 bytes")
            ct_mlkem, share = enc[:MLKEM_CIPHERTEXT], enc[MLKEM_CIPHERTEXT:]
            ss_x25519 = x25519(self._x25519_secret, share)
            if ss_x25519 is None:
                raise HeaderError("mlkem768x25519 stanza: the X25519 share is a low-order point")
            try:
                ss_mlkem = self._mlkem.decapsulate(ct_mlkem)
            except ValueError:
                raise HeaderError("mlkem768x25519 stanza: invalid ML-KEM ciphertext") from None
            key, nonce = _hpke_key_nonce(_combine(ss_mlkem, ss_x25519, share, self._x25519_public))
            try:
                return ChaCha20Poly1305(key).decrypt(nonce, stanza.body, b"")
            except InvalidTag:
                continue
        return None

    def __repr__(self) -> str:
        return "HybridIdentity(...)"
