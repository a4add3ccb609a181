"""Durations: integers of seconds or `30s`, `5m`, `1h30m`, `2d`, and back."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.durations import MAX_SECONDS, DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0),
        (45, 45),
        ("45", 45),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1d2h3m4s", 93784),
        ("90m", 5400),
        ("0s", 0),
    ],
)
def test_parse_duration_accepts_seconds_and_unit_strings(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("5x", "unknown unit 'x'"),
        ("5 min", "whole numbers with a unit"),
        ("5min", "unknown unit 'min'"),
        ("1.5h", "whole numbers with a unit"),
        ("30m1h", "largest first"),
        ("1h1h", "largest first"),
        ("", "whole numbers with a unit"),
        ("h", "whole numbers with a unit"),
        (-1, "negative"),
        ("3651d", "ten years"),
    ],
)
def test_parse_duration_refuses_bad_text_with_a_reason(text, reason):
    with pytest.raises(DurationError, match=reason):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, False, 1.5, None, [1], {"s": 1}])
def test_parse_duration_refuses_other_types(value):
    with pytest.raises(DurationError, match="number of seconds"):
        parse_duration(value)


def test_duration_error_is_a_value_error():
    assert issubclass(DurationError, ValueError)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (30, "30s"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (93784, "1d2h3m4s"),
    ],
)
def test_format_duration_writes_units_largest_first(seconds, text):
    assert format_duration(seconds) == text


def test_format_duration_refuses_negative():
    with pytest.raises(ValueError):
        format_duration(-1)


@given(st.integers(min_value=0, max_value=MAX_SECONDS))
def test_format_then_parse_is_identity(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
