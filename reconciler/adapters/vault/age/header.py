"""The age v1 header: stanzas, strict parsing, canonical serialisation and the header MAC.

    age-encryption.org/v1
    -> TYPE ARG...              one or more stanzas: an argument line,
    BASE64 (64 columns)...      a body wrapped at 64 columns,
    BASE64 (< 64 columns)       always ending in a line shorter than 64 (possibly empty)
    --- MAC                     HMAC-SHA-256 over everything up to and including `---`

Every encoding in the header is canonical, so parse(serialize(h)) == h and
serialize(parse(b)) == b: the MAC can be recomputed from the parsed form.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler.adapters.vault.age import b64
from reconciler.adapters.vault.age.errors import HeaderError, HMACError
from reconciler.adapters.vault.age.primitives import hkdf

VERSION_LINE = b"age-encryption.org/v1\n"
VERSION_PREFIX = b"age-encryption.org/"
MAC_SIZE = 32
COLUMNS = 64
# Limits against hostile input: one header line, and the whole header. Real headers are a few
# hundred bytes per stanza (a hybrid stanza is ~1.6 KB); these are far above any honest file.
MAX_LINE = 1 << 16
MAX_HEADER = 1 << 22
# The post-quantum stanza type (hybrid.TYPE): here, so that `core` checks a header's mix of
# types without loading the ML-KEM module for the X25519 files most are.
HYBRID_TYPE = "mlkem768x25519"

# An argument is one or more visible ASCII characters (VCHAR, 0x21-0x7E): no spaces, no CR.
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")
# A body line: base64 alphabet only, no padding, no CR, at most 64 columns.
_BODY_LINE = re.compile(rb"[A-Za-z0-9+/]{0,64}")


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: `type` is the first argument, `args` the rest, `body` the bytes."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def __repr__(self) -> str:  # the body is a wrapped key: show its size only
        return f"Stanza(type={self.type!r}, args={len(self.args)}, body={len(self.body)} bytes)"


class Source(Protocol):
    def readline(self, limit: int) -> bytes: ...


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes  # the header bytes up to and including "---" (what the MAC covers)


def _stanza_lines(stanza: Stanza) -> list[bytes]:
    words = [stanza.type, *stanza.args]
    for word in words:
        if not _ARGUMENT.fullmatch(word.encode("ascii", "replace")):
            raise HeaderError("stanza arguments must be non-empty visible ASCII")
    lines = [b"-> " + " ".join(words).encode("ascii")]
    text = b64.encode(stanza.body)
    lines += [text[i : i + COLUMNS] for i in range(0, len(text), COLUMNS)]
    if len(text) % COLUMNS == 0:
        lines.append(b"")  # the body must end in a short line: here an empty one
    return lines


def mac_input(stanzas: Sequence[Stanza]) -> bytes:
    """The bytes the header MAC covers: the header up to and including `---`."""
    lines = [VERSION_LINE.rstrip(b"\n")]
    for stanza in stanzas:
        lines += _stanza_lines(stanza)
    lines.append(b"---")
    return b"\n".join(lines)


def header_mac(file_key: bytes, covered: bytes) -> bytes:
    key = hkdf(file_key, b"", b"header")
    return hmac.new(key, covered, hashlib.sha256).digest()


def serialize(stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    """The complete header, MAC line included, for `stanzas` under `file_key`."""
    covered = mac_input(stanzas)
    return covered + b" " + b64.encode(header_mac(file_key, covered)) + b"\n"


def verify_mac(header: Header, file_key: bytes) -> None:
    """Raise HMACError unless the header MAC matches (compared in constant time)."""
    if not hmac.compare_digest(header_mac(file_key, header.mac_input), header.mac):
        raise HMACError("header MAC mismatch: the header was altered or the file key is wrong")


def _line(src: Source, budget: list[int]) -> bytes:
    """The next header line *without* its LF; HeaderError if it is missing or too long."""
    line = src.readline(MAX_LINE + 1)
    budget[0] -= len(line)
    if budget[0] < 0:
        raise HeaderError("header too large")
    if not line.endswith(b"\n"):
        if len(line) > MAX_LINE:
            raise HeaderError("header line too long")
        raise HeaderError("truncated header: the input ends before the MAC line")
    return line[:-1]


def parse(src: Source) -> Header:
    """Parse a header from `src`, leaving it positioned at the payload nonce.

    Raises HeaderError for anything that is not exactly the v1 grammar: a wrong version line
    (including CRLF line ends), a stanza line that is not `-> ` + non-empty VCHAR arguments,
    body lines over 64 columns or with non-alphabet characters (CR, `=`), a body without its
    short final line, a MAC line that is not `--- ` + 43 canonical base64 characters.
    """
    budget = [MAX_HEADER]
    first = src.readline(len(VERSION_LINE) + MAX_LINE)
    if first != VERSION_LINE:
        if not first:
            raise HeaderError("not an age file: the input is empty")
        if first.startswith(VERSION_PREFIX):
            raise HeaderError("unsupported age format version (only age-encryption.org/v1)")
        raise HeaderError("not an age file: no age-encryption.org/v1 line")
    covered = [VERSION_LINE]
    stanzas: list[Stanza] = []
    while True:
        line = _line(src, budget)
        if line.startswith(b"-> "):
            covered.append(line + b"\n")
            words = line[3:].split(b" ")
            # split(" ") keeps empty strings for doubled/trailing spaces: reject those.
            for word in words:
                if not _ARGUMENT.fullmatch(word):
                    raise HeaderError("malformed stanza argument line")
            body_lines = []
            while True:
                body = _line(src, budget)
                if not _BODY_LINE.fullmatch(body):
                    raise HeaderError("malformed stanza body line")
                covered.append(body + b"\n")
                body_lines.append(body)
                if len(body) < COLUMNS:  # the first short line ends the body
                    break
            text = [w.decode("ascii") for w in words]
            stanzas.append(
                Stanza(text[0], tuple(text[1:]), b64.decode(b"".join(body_lines), "stanza body"))
            )
        elif line.startswith(b"---"):
            if not stanzas:
                raise HeaderError("header has no recipient stanzas")
            if not line.startswith(b"--- ") or len(line) != 4 + 43:
                raise HeaderError("malformed header MAC line")
            mac = b64.decode_exact(line[4:], MAC_SIZE, "header MAC")
            covered.append(b"---")
            return Header(tuple(stanzas), mac, b"".join(covered))
        else:
            raise HeaderError("malformed header line (expected a stanza or the MAC)")
