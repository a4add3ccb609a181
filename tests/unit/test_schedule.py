"""Cron slots and deny windows: pure UTC arithmetic over croniter."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from reconciler.core.model import Window
from reconciler.core.schedule import latest_slot, next_fire, parse_slot, slot_key, window_end

UTC = UTC


def at(h: int, m: int = 0, s: int = 0, day: int = 29) -> datetime:
    return datetime(2026, 11, day, h, m, s, tzinfo=UTC)


def test_latest_slot_is_the_most_recent_fire_before_now():
    assert latest_slot("*/15 * * * *", at(10, 22, 30)) == at(10, 15)


def test_fire_exactly_at_now_counts_as_due():
    assert latest_slot("*/15 * * * *", at(10, 15)) == at(10, 15)


def test_latest_slot_reads_other_timezones_as_the_same_instant():
    cet = timezone(timedelta(hours=1))
    now = datetime(2026, 11, 29, 11, 22, tzinfo=cet)  # 10:22 UTC
    slot = latest_slot("0 10 * * *", now)
    assert slot == at(10) and slot.tzinfo == UTC


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="naive"):
        latest_slot("* * * * *", datetime(2026, 11, 29, 10, 0))


def test_next_fire_is_strictly_after():
    assert next_fire("*/15 * * * *", at(10, 15)) == at(10, 30)
    assert next_fire("0 3 * * *", at(10, 15)) == at(3, day=30)


def test_slot_key_is_fixed_width_utc_text():
    assert slot_key(at(10, 15)) == "2026-11-29T10:15:00Z"
    assert (
        slot_key(datetime(2026, 11, 29, 11, 15, tzinfo=timezone(timedelta(hours=1))))
        == "2026-11-29T10:15:00Z"
    )
    assert parse_slot("2026-11-29T10:15:00Z") == at(10, 15)


def test_slot_keys_sort_chronologically():
    times = [at(9, 5), at(10, 0), at(10, 0, day=1), at(23, 59, day=30)]
    assert sorted(slot_key(t) for t in times) == [slot_key(t) for t in sorted(times)]


WORKDAY = Window(deny="0 8 * * *", duration=10 * 3600)  # 08:00-18:00 every day


def test_window_covering_now_ends_at_fire_plus_duration():
    assert window_end([WORKDAY], 3, at(10)) == at(18)


def test_window_starts_inclusive_and_ends_exclusive():
    assert window_end([WORKDAY], 3, at(8)) == at(18)
    assert window_end([WORKDAY], 3, at(18)) is None
    assert window_end([WORKDAY], 3, at(7, 59, 59)) is None


def test_priority_1_is_never_denied():
    assert window_end([WORKDAY], 1, at(10)) is None


def test_no_window_means_no_hold():
    assert window_end([], 5, at(10)) is None


def test_window_started_yesterday_still_covers_past_midnight():
    night = Window(deny="0 22 * * *", duration=8 * 3600)  # 22:00-06:00
    assert window_end([night], 2, at(3)) == at(6)


def test_overlapping_windows_take_the_latest_end():
    short = Window(deny="0 9 * * *", duration=3600)  # 09-10
    long = Window(deny="0 8 * * *", duration=4 * 3600)  # 08-12
    assert window_end([short, long], 3, at(9, 30)) == at(12)


def test_window_that_begins_as_another_ends_extends_the_hold():
    morning = Window(deny="0 8 * * *", duration=2 * 3600)  # 08-10
    late = Window(deny="0 10 * * *", duration=2 * 3600)  # 10-12
    assert window_end([morning, late], 3, at(9)) == at(12)


def test_window_covering_every_instant_still_returns_a_time():
    always = Window(deny="* * * * *", duration=3600)
    end = window_end([always], 3, at(10))
    assert end is not None and end > at(10)
