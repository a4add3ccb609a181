"""ASCII armor: strict PEM (RFC 7468 §3) with the label `AGE ENCRYPTED FILE`.

Accepted, and nothing else: optional whitespace-only lines before BEGIN and after END; LF or
CRLF line ends; a body of 64-column lines of padded base64 ending in one line of 1-64 columns
(or no body at all); the END line with or without a final newline. Rejected: any other data
outside the block, empty lines inside it, short lines that are not last, long lines, headers,
whitespace inside lines, bad characters, missing or non-canonical padding.

Decoding streams: `iter_dearmor` yields decoded blocks as it validates lines, so big armored
files are never held twice in memory, and an error can surface part-way (as ArmorError).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from reconciler.adapters.vault.age.errors import ArmorError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
_RAW_PER_LINE = COLUMNS // 4 * 3  # 48 bytes encode to one full line
_WHITESPACE = b" \t\r\n\v\f"
_READ_SIZE = 1 << 20
_MAX_PENDING = 1 << 16  # no honest armor line (even blank padding) is this long

# Decoder states.
_BEFORE, _BODY, _NEED_END, _AFTER = range(4)


def is_armored(data: bytes | bytearray | memoryview) -> bool:
    """True when `data` should be read as armor rather than as a binary age file.

    A binary age file always starts with `age-encryption.org/`. Anything else that starts
    (after whitespace) with `-----`, or has `-----BEGIN` in its first 4 KiB, is taken as
    armor, so that a damaged BEGIN line or junk before it is reported as an armor failure.
    """
    head = bytes(data[:4096])
    if head.startswith(b"age-encryption.org/"):
        return False
    return head.lstrip(_WHITESPACE).startswith(b"-----") or b"-----BEGIN" in head


# Splitting base64 text into 64-column lines: struct cuts a block of 1024 lines in one C
# call (a Python slice per line is ~3x slower on big files).
_BLOCK_LINES = 1024
_BLOCK_RAW = _RAW_PER_LINE * _BLOCK_LINES
_SPLIT_BLOCK = struct.Struct(f"{COLUMNS}s" * _BLOCK_LINES)


def _encode_lines(raw: bytes | bytearray | memoryview) -> list[bytes]:
    """Base64 of `raw` in 64-column lines, each followed by LF, as pieces to join
    (one piece per block of 1024 lines, so big inputs never become a million objects)."""
    view = memoryview(raw)
    whole = len(view) // _BLOCK_RAW * _BLOCK_RAW
    pieces: list[bytes] = []
    for start in range(0, whole, _BLOCK_RAW):
        pieces += (
            b"\n".join(_SPLIT_BLOCK.unpack(base64.b64encode(view[start : start + _BLOCK_RAW]))),
            b"\n",
        )
    text = base64.b64encode(view[whole:])
    pieces += [text[i : i + COLUMNS] + b"\n" for i in range(0, len(text), COLUMNS)]
    return pieces


def armor(data: bytes | bytearray | memoryview) -> bytes:
    """`data` wrapped in the armor: BEGIN, base64 in 64-column lines, END, final newline."""
    return b"".join([BEGIN, b"\n", *_encode_lines(data), END, b"\n"])


class ArmorWriter:
    """A write-only file that armors what is written to it onto `dst`; call `close()` last."""

    def __init__(self, dst: BinaryIO):
        self._dst = dst
        self._pending = bytearray()
        self._dst.write(BEGIN + b"\n")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._pending += data
        if len(self._pending) >= _BLOCK_RAW:
            whole = len(self._pending) // _BLOCK_RAW * _BLOCK_RAW
            self._emit(memoryview(self._pending)[:whole])
            del self._pending[:whole]
        return len(data)

    def _emit(self, raw: bytes | bytearray | memoryview) -> None:
        self._dst.write(b"".join(_encode_lines(raw)))
        if isinstance(raw, memoryview):
            raw.release()

    def close(self) -> None:
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending.clear()
        self._dst.write(END + b"\n")


def _line_batches(read: Callable[[int], bytes]) -> Iterator[list[bytes]]:
    """Lists of complete lines, without LF and without one trailing CR; the last piece too."""
    pending = b""
    while True:
        block = read(_READ_SIZE)
        if not block:
            break
        parts = (pending + block).split(b"\n")
        pending = parts.pop()
        if len(pending) > _MAX_PENDING:
            raise ArmorError("armor line too long")
        if parts:
            yield [p[:-1] if p[-1:] == b"\r" else p for p in parts]
    if pending:  # the END line may lack its final newline
        yield [pending[:-1] if pending[-1:] == b"\r" else pending]


def _decode_last(line: bytes) -> bytes:
    """The final body line: padded base64, and exactly the canonical spelling."""
    try:
        data = base64.b64decode(line, validate=True)
    except binascii.Error:
        raise ArmorError("invalid base64 in the armor (bad character or padding)") from None
    if base64.b64encode(data) != line:
        raise ArmorError("non-canonical base64 in the armor")
    return data


def iter_dearmor(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Decoded blocks of the armored input read by `read(n)`; ArmorError if it is not strict."""
    state = _BEFORE
    for batch in _line_batches(read):
        i, count = 0, len(batch)
        while i < count:
            if state == _BODY:
                # Fast path: a run of full 64-column lines decodes in one call.
                j = i
                while j < count and len(batch[j]) == COLUMNS:
                    j += 1
                if j > i:
                    text = b"".join(batch[i:j])
                    pad = text.find(b"=")
                    if pad >= 0:
                        # Padding ends the data: its line is the last one, END must follow.
                        j = i + pad // COLUMNS
                        text = text[: (j - i) * COLUMNS]
                    if text:
                        try:
                            yield base64.b64decode(text, validate=True)
                        except binascii.Error:
                            raise ArmorError("invalid character in the armor") from None
                    i = j
                    if pad < 0:
                        continue
                line = batch[i]
                i += 1
                if line == END:  # right after BEGIN (empty file) or after a full line
                    state = _AFTER
                    continue
                if not line:
                    raise ArmorError("empty line inside the armor")
                if len(line) > COLUMNS:
                    raise ArmorError("armor line longer than 64 columns")
                yield _decode_last(line)
                state = _NEED_END
            elif state == _BEFORE:
                line = batch[i]
                i += 1
                if line == BEGIN:
                    state = _BODY
                elif line.strip(_WHITESPACE):
                    raise ArmorError(
                        "the armor must start with -----BEGIN AGE ENCRYPTED FILE-----"
                        " (only whitespace may come before it)"
                    )
            elif state == _NEED_END:
                line = batch[i]
                i += 1
                if line != END:
                    raise ArmorError(
                        "expected -----END AGE ENCRYPTED FILE----- after the last "
                        "(short or padded) armor line"
                    )
                state = _AFTER
            else:  # _AFTER: only whitespace may follow
                if batch[i].strip(_WHITESPACE):
                    raise ArmorError("data after the armor's END line")
                i += 1
    if state == _BEFORE:
        raise ArmorError("no -----BEGIN AGE ENCRYPTED FILE----- line")
    if state != _AFTER:
        raise ArmorError("the armor has no -----END AGE ENCRYPTED FILE----- line")


def _dearmor_regular(data: bytes | bytearray | memoryview) -> bytes | None:
    """Fast path for the common layout (LF line ends, whitespace only after END): the
    decoded bytes, or None to let the line-by-line decoder handle (and judge) the input."""
    text = bytes(data)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    # BEGIN must open a line (only whitespace lines before it); no CR anywhere.
    if (
        not text.startswith(BEGIN + b"\n", start)
        or (start and text[start - 1] != 0x0A)
        or b"\r" in text
    ):
        return None
    end = text.rfind(b"\n" + END)
    after = text[end + 1 + len(END) :]
    if end < start or after[:1] not in (b"", b"\n") or after.strip(_WHITESPACE):
        return None
    body = text[start + len(BEGIN) + 1 : end + 1]  # the base64 lines, each ending in LF
    # k full 65-byte lines (64 columns + LF), then one line of 1-64 columns + LF: the LFs
    # must sit exactly at every 65th byte and nowhere else, and the last line is not empty.
    full = (len(body) - 1) // 65
    if (
        len(body) - 1 - 65 * full < 1
        or body.count(b"\n") != full + 1
        or body[64 : 65 * full : 65] != b"\n" * full
    ):
        return None
    joined = body.replace(b"\n", b"")
    try:
        # strict_mode: alphabet only, padding only at the very end, correct length.
        decoded = binascii.a2b_base64(joined, strict_mode=True)
    except binascii.Error:
        return None
    # Canonical: the last quantum (where the unused bits live) must re-encode identically.
    tail = 3 - joined[-4:].count(b"=")
    if base64.b64encode(decoded[len(decoded) - tail :]) != joined[-4:]:
        return None
    return decoded


def dearmor(data: bytes | bytearray | memoryview) -> bytes:
    """The binary age file inside armored `data`; ArmorError if the armor is not strict."""
    decoded = _dearmor_regular(data)
    if decoded is not None:
        return decoded
    return b"".join(iter_dearmor(io.BytesIO(data).read))
