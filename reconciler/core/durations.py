"""Durations as users write them: an integer of seconds, or `30s`, `5m`, `1h30m`, `2d`.

Parsing is strict on purpose: units go from the largest to the smallest and appear once, so
`1h30m` is accepted and `30m1h`, `1.5h`, `5 min` are refused with a hint saying what to write
instead. `format_duration` is the inverse, so a parsed value prints back the way users write it.
"""

from __future__ import annotations

import re

UNITS: dict[str, int] = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Ten years: anything longer is a typo, and it keeps every value a small int for the store.
MAX_SECONDS = 10 * 365 * 86400
EXAMPLES = "30s, 5m, 1h30m or 2d"

_PART = re.compile(r"([0-9]+)([a-zA-Z]+)")
_WHOLE = re.compile(r"(?:[0-9]+[a-zA-Z]+)+")


class DurationError(ValueError):
    """A duration that cannot be read; `str(err)` says what to write instead."""


def parse_duration(value: int | str) -> int:
    """The number of seconds `value` stands for.

    Accepts a non-negative int (seconds), a string of digits (seconds), or a string of
    `<n><unit>` parts with units d, h, m, s from largest to smallest, each at most once.
    Raises `DurationError` (a `ValueError`) otherwise; bools are refused because YAML
    `true` is never meant as one second.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DurationError(f"use a number of seconds or a string such as {EXAMPLES}")
    if isinstance(value, int):
        return _checked(value)
    text = value.strip()
    if text.isascii() and text.isdigit():
        return _checked(_number(text))
    return _checked(_parse_units(text))


def _parse_units(text: str) -> int:
    if not _WHOLE.fullmatch(text):
        raise DurationError(f"write whole numbers with a unit, such as {EXAMPLES}")
    total, previous = 0, None
    for number, unit in _PART.findall(text):
        if unit not in UNITS:
            raise DurationError(f"unknown unit '{unit}'; use d, h, m or s, such as {EXAMPLES}")
        if previous is not None and UNITS[unit] >= UNITS[previous]:
            raise DurationError(f"write units once each, largest first, such as {EXAMPLES}")
        total += _number(number) * UNITS[unit]
        previous = unit
    return total


def _number(digits: str) -> int:
    """The value of a string of digits; one too long for any duration is refused before
    int() sees it (Python refuses more than 4,300 digits with an error of its own)."""
    if len(digits.lstrip("0")) > len(str(MAX_SECONDS)):
        raise DurationError("a duration cannot be longer than 3650d (ten years)")
    return int(digits)


def _checked(seconds: int) -> int:
    if seconds < 0:
        raise DurationError("a duration cannot be negative")
    if seconds > MAX_SECONDS:
        raise DurationError("a duration cannot be longer than 3650d (ten years)")
    return seconds


def format_duration(seconds: int) -> str:
    """`seconds` written the way users write durations: 90 -> `1m30s`, 0 -> `0s`.

    `parse_duration(format_duration(n)) == n` for every n in 0..MAX_SECONDS.
    Raises `ValueError` for a negative number (it is never a duration).
    """
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
