"""The kept tail of a command's output, and the mark that says how much of its head was dropped.

A command may print gigabytes; a run keeps its last 64 KiB, because the end is where the error
is. Two places cut: the transport while it reads (it never holds more than twice the tail in
memory) and the store, after redaction, so that the stored text with its mark fits the cap.
Whichever cut comes first writes the mark, the next one adds to its count:

    [... 34464 bytes of earlier output dropped ...]
    <the last bytes>

The redactor knows the mark too: the text right after it may begin with the end of a secret
whose start was cut off, which no whole-secret search can recognise (see `redact`).
"""

from __future__ import annotations

import re

MARK = "[... {} bytes of earlier output dropped ...]\n"
MARK_PATTERN = re.compile(r"\[\.\.\. (\d+) bytes of earlier output dropped \.\.\.\]\n")


def split_mark(text: str) -> tuple[int, str]:
    """Pure: (bytes dropped before `text`'s body, the body) — (0, text) when unmarked."""
    found = MARK_PATTERN.match(text)
    if found is None:
        return 0, text
    return int(found.group(1)), text[found.end() :]


def with_mark(dropped: int, body: str) -> str:
    """Pure: `body` under the mark for `dropped` bytes (no mark when nothing was dropped)."""
    return MARK.format(dropped) + body if dropped else body


def _char_start(data: bytes | bytearray, start: int) -> int:
    """The first UTF-8 character boundary at or after `start`."""
    while start < len(data) and data[start] & 0xC0 == 0x80:
        start += 1
    return start


_MARK_BYTES = re.compile(MARK_PATTERN.pattern.encode())


def split_mark_bytes(data: bytes | bytearray) -> tuple[int, bytes]:
    """Pure: (bytes dropped before `data`'s body, the body), for raw output that may start
    with a mark (as the SSH wrapper writes one)."""
    found = _MARK_BYTES.match(data)
    if found is None:
        return 0, bytes(data)
    return int(found.group(1)), bytes(data[found.end() :])


def tail_text(data: bytes | bytearray, limit: int, dropped: int = 0) -> str:
    """Pure: the last `limit` bytes of `data` as text, cut on a character boundary, under a
    mark when anything was dropped (`dropped` bytes before `data` plus what this cut drops;
    a mark `data` starts with, as the SSH wrapper writes one, adds its count and is not
    counted as output). Undecodable bytes become U+FFFD."""
    found = _MARK_BYTES.match(data)
    if found is not None:
        dropped += int(found.group(1))
        data = data[found.end() :]
    start = _char_start(data, max(0, len(data) - limit))
    body = bytes(data[start:]).decode("utf-8", "replace")
    return with_mark(dropped + start, body)


def cap(text: str, limit: int) -> str:
    """Pure: `text` (maybe already marked) cut from the head so that it and its mark take at
    most `limit` bytes of UTF-8; the mark counts everything dropped so far. Lone surrogates
    become U+FFFD (stores keep UTF-8)."""
    dropped, body = split_mark(text)
    data = body.encode("utf-8", "replace")
    if len(with_mark(dropped, "").encode()) + len(data) <= limit:
        return with_mark(dropped, data.decode("utf-8"))
    # The mark's length depends on the count: size it for the largest count it can show.
    room = limit - len(MARK.format(dropped + len(data)).encode())
    start = _char_start(data, len(data) - room)
    return with_mark(dropped + start, data[start:].decode("utf-8"))


def stream_length(text: str) -> int:
    """Pure: how many UTF-8 bytes the whole output had whose kept tail is `text` (its mark's
    count plus what it kept)."""
    dropped, body = split_mark(text)
    return dropped + len(body.encode("utf-8", "replace"))


def unseen(text: str, seen: int) -> str:
    """Pure: what a reader who has shown the first `seen` bytes of an output has not shown
    yet, given the output's kept tail `text`: the rest of it, under a mark when some of the
    rest was dropped before the reader could see it. Offsets are UTF-8 bytes; a cut inside
    a character moves to the next character."""
    dropped, body = split_mark(text)
    if seen < dropped:
        return with_mark(dropped - seen, body)
    data = body.encode("utf-8", "replace")
    return data[_char_start(data, seen - dropped) :].decode("utf-8")


def complete_lines(data: bytes | bytearray) -> int:
    """Pure: how many bytes of `data` are whole lines (up to and with its last newline)."""
    return data.rfind(b"\n") + 1


class TailBuffer:
    """Bytes read from a command, holding at most twice `limit` of them; counts the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            cut = len(self.data) - self.limit
            del self.data[:cut]
            self.dropped += cut

    def text(self) -> str:
        """The last `limit` bytes, marked when anything was dropped."""
        return tail_text(self.data, self.limit, self.dropped)


__all__ = [
    "MARK",
    "MARK_PATTERN",
    "TailBuffer",
    "cap",
    "complete_lines",
    "split_mark",
    "split_mark_bytes",
    "stream_length",
    "tail_text",
    "unseen",
    "with_mark",
]
