"""Secrets as a type, and the one redactor applied at every sink.

`Secret` wraps a decrypted value so that printing, logging or formatting it shows `***`;
code that must hand the value to a command calls `reveal()`. The `Redactor` learns every
decrypted value (and the forms a command is likely to print it in) and replaces each
occurrence with `***` in run output, errors, logs and JSON before anything is written.
"""

from __future__ import annotations

import base64
import re
import threading
from typing import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask half of every output ("on", "1", "yes")


class Secret:
    """A decrypted value that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for handing it to the command's environment."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # pickling would write the value somewhere: refuse
        raise TypeError("a Secret cannot be pickled")


def reveal(value: "str | Secret") -> str:
    """The plain text of an env value, whether or not it is a secret."""
    return value.reveal() if isinstance(value, Secret) else value


def variants(value: str) -> set[str]:
    """Pure: the texts under which a secret may show up in output.

    The value, each line of a multi-line value, and its base64 (standard and URL-safe, with
    and without padding), hex (both cases) and URL-encoded forms; all at least MIN_LENGTH long.
    """
    forms = {value, *value.splitlines()}
    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    url_b64 = base64.urlsafe_b64encode(raw).decode()
    forms |= {b64, b64.rstrip("="), url_b64, url_b64.rstrip("="), raw.hex(), raw.hex().upper(),
              quote(value, safe=""), quote_plus(value)}
    return {f for f in (form.strip() for form in forms) if len(f) >= MIN_LENGTH}


class Redactor:
    """Replaces every known secret form with `***`. Thread-safe; values only accumulate.

    One instance per process is wired into the store writes, the logs, the views and error
    messages, so a secret learnt anywhere is masked everywhere.
    """

    def __init__(self, values: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*values)

    def add(self, *values: str) -> None:
        new = set().union(*(variants(v) for v in values)) - self._forms if values else set()
        if not new:
            return
        with self._lock:
            self._forms |= new
            # Longest first, so a value is masked whole rather than around a shorter form.
            ordered = sorted(self._forms, key=lambda f: (-len(f), f))
            self._pattern = re.compile("|".join(re.escape(f) for f in ordered))

    def __call__(self, text: str | None) -> str | None:
        """`text` with every secret form replaced by `***` (None stays None)."""
        pattern = self._pattern
        if text is None or pattern is None:
            return text
        return pattern.sub(MASK, text)
