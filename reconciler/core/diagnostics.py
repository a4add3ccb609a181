"""Locations in input files and the one-line diagnostics reported against them.

Every value read from YAML keeps a `Location`, so any later stage (schema check, compile,
lint) can report `path:line:column: message (hint)`. A `Diagnostics` collector gathers every
problem of an inventory so the user sees all of them at once instead of fixing one per run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum


# Slots: an inventory holds one for every key and value it was read from (less memory and
# garbage collection than a __dict__ each; yamlio fills them in directly).
@dataclass(frozen=True, order=True, slots=True)
class Location:
    """A position in an input file; line and column are 1-based (0 means unknown)."""

    path: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.column or 1}"
        return self.path


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One problem: where, what, and what to change."""

    location: Location
    message: str
    hint: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        prefix = "" if self.severity is Severity.ERROR else "warning: "
        text = f"{self.location}: {prefix}{self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def sort_key(self) -> tuple:
        return (self.location, self.message)


@dataclass
class Diagnostics:
    """Collects diagnostics; `errors` decide whether the input is usable."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, location: Location, message: str, hint: str | None = None) -> None:
        self.items.append(Diagnostic(location, message, hint, Severity.ERROR))

    def warning(self, location: Location, message: str, hint: str | None = None) -> None:
        self.items.append(Diagnostic(location, message, hint, Severity.WARNING))

    def extend(self, other: Iterable[Diagnostic]) -> None:
        self.items.extend(other)

    @property
    def errors(self) -> list[Diagnostic]:
        return sorted(
            (d for d in self.items if d.severity is Severity.ERROR), key=Diagnostic.sort_key
        )

    @property
    def warnings(self) -> list[Diagnostic]:
        return sorted(
            (d for d in self.items if d.severity is Severity.WARNING), key=Diagnostic.sort_key
        )

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(sorted(self.items, key=Diagnostic.sort_key))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A `did you mean 'x'?` hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
