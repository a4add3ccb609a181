"""Byte sources the decryptor reads from: an in-memory buffer or a pull function.

Both offer `read(n)`, which returns exactly `n` bytes unless the input ends first (so a short
result always means end of input — the STREAM reader relies on that), and `readline(limit)`
for the header. The memory source hands out zero-copy memoryview slices for the payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO


class MemorySource:
    """Reads from a bytes-like object without copying payload chunks."""

    def __init__(self, data: bytes | bytearray | memoryview):
        self._bytes = bytes(data) if isinstance(data, memoryview) else data
        self._view = memoryview(self._bytes)
        self._pos = 0

    def remaining(self) -> int:
        return len(self._view) - self._pos

    def read(self, n: int) -> memoryview:
        start = self._pos
        self._pos = min(start + n, len(self._view))
        return self._view[start : self._pos]

    def readline(self, limit: int) -> bytes:
        """Up to and including the next LF, or at most `limit` bytes, or what is left."""
        start = self._pos
        end = self._bytes.find(b"\n", start, start + limit)
        stop = min(start + limit, len(self._bytes)) if end < 0 else end + 1
        self._pos = stop
        return bytes(self._view[start:stop])


class PullSource:
    """Reads from `pull(size_hint) -> bytes` (b"" at the end), e.g. a file's `read`."""

    def __init__(self, pull: Callable[[int], bytes]):
        self._pull = pull
        self._buf = bytearray()
        self._eof = False

    def _more(self, hint: int) -> bool:
        if self._eof:
            return False
        data = self._pull(hint)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def read(self, n: int) -> bytes:
        if not self._buf and not self._eof:
            first = self._pull(n)  # fast path: a plain file returns exactly n bytes
            if len(first) == n:
                return first
            if not first:
                self._eof = True
                return b""
            self._buf += first
        while len(self._buf) < n and self._more(n - len(self._buf)):
            pass
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def readline(self, limit: int) -> bytes:
        scanned = 0
        while True:
            end = self._buf.find(b"\n", scanned, limit)
            if end >= 0:
                stop = end + 1
                break
            scanned = len(self._buf)
            if scanned >= limit or not self._more(4096):
                stop = min(limit, len(self._buf))
                break
        line = bytes(self._buf[:stop])
        del self._buf[:stop]
        return line


def file_puller(src: BinaryIO, prefix: bytes = b"") -> Callable[[int], bytes]:
    """A pull function that first replays `prefix` (bytes already peeked), then reads `src`."""
    pending = [prefix] if prefix else []

    def pull(n: int) -> bytes:
        if pending:
            return pending.pop()
        return src.read(max(n, 1))

    return pull


def iterator_puller(blocks: Iterator[bytes]) -> Callable[[int], bytes]:
    """A pull function over an iterator of blocks (the size hint is ignored)."""

    def pull(_n: int) -> bytes:
        for block in blocks:
            if block:
                return block
        return b""

    return pull


def read_full(src: BinaryIO, n: int) -> bytes:
    """Exactly `n` bytes from a file, fewer only at its end (pipes may return short reads)."""
    data = src.read(n)
    if data is None:
        data = b""
    if len(data) == n or not data:
        return data
    parts = [data]
    have = len(data)
    while have < n:
        more = src.read(n - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)
