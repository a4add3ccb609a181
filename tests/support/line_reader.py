"""Reading what a background `reconcile` prints while it runs: its lines collected by a
thread, and waited for with a deadline (never a fixed sleep)."""

from __future__ import annotations

import subprocess
import threading
from typing import IO

from tests.support.waiting import wait_until


class Lines:
    """Every line `stream` gives, as it comes (read by a thread of its own until its end)."""

    def __init__(self, stream: IO[str]):
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> list[str]:
        """Wait until a line holds `text`; all lines so far."""
        wait_until(
            lambda: any(text in line for line in self.lines),
            timeout=timeout,
            message=f"a line with {text!r}; got {self.lines}",
        )
        return self.lines

    def finish(self, timeout: float = 30.0) -> list[str]:
        """Every line, once the stream ended."""
        self._thread.join(timeout)
        return self.lines


def follow_lines(proc: subprocess.Popen) -> tuple[Lines, Lines]:
    """(stdout lines, stderr lines) of `proc`, read as they come."""
    return Lines(proc.stdout), Lines(proc.stderr)


__all__ = ["Lines", "follow_lines"]
