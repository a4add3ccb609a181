"""Bech32 (BIP 173) as age uses it: no length limit, all-lower or all-upper case.

age keys are `age1...` (HRP `age`), `AGE-SECRET-KEY-1...` (HRP `AGE-SECRET-KEY-`),
`age1pq1...` / `AGE-SECRET-KEY-PQ-1...` for the hybrid post-quantum type. The checksum is always
computed over the lower-case form. Errors never echo the input (it may be a secret key).
"""

from __future__ import annotations

from reconciler.adapters.vault.age.errors import HeaderError

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _regroup(data: bytes | list[int], src: int, dst: int, pad: bool) -> list[int]:
    """Re-pack a sequence of `src`-bit groups into `dst`-bit groups (8->5 or 5->8)."""
    acc = bits = 0
    out: list[int] = []
    mask = (1 << dst) - 1
    for value in data:
        acc = (acc << src) | value
        bits += src
        while bits >= dst:
            bits -= dst
            out.append((acc >> bits) & mask)
    if pad:
        if bits:
            out.append((acc << (dst - bits)) & mask)
    elif bits >= src or (acc << (dst - bits)) & mask:
        # Decoding: at most 4 padding bits, and they must be zero.
        raise HeaderError("invalid Bech32 padding")
    return out


def encode(hrp: str, data: bytes, *, upper: bool = False) -> str:
    """Bech32 of `data` under human-readable part `hrp` (upper-cased on request)."""
    hrp = hrp.lower()
    values = _regroup(data, 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    text = hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)
    return text.upper() if upper else text


def decode(text: str) -> tuple[str, bytes]:
    """(lower-case HRP, data) of a Bech32 string; HeaderError if it is not valid Bech32."""
    if text.lower() != text and text.upper() != text:
        raise HeaderError("invalid Bech32: mixed case")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise HeaderError("invalid Bech32: character out of range")
    lower = text.lower()
    sep = lower.rfind("1")
    if sep < 1 or sep + 7 > len(lower):
        raise HeaderError("invalid Bech32: separator misplaced or string too short")
    hrp, rest = lower[:sep], lower[sep + 1 :]
    try:
        values = [_VALUES[c] for c in rest]
    except KeyError:
        raise HeaderError("invalid Bech32: character not in the Bech32 alphabet") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise HeaderError("invalid Bech32: checksum mismatch")
    return hrp, bytes(_regroup(values[:-6], 5, 8, pad=False))
