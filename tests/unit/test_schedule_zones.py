"""Cron in IANA time zones (issue 15, part 4): wall-clock slots mapped to UTC instants.

Berlin in 2026: clocks go forward on Sunday 29 March at 01:00 UTC (02:00 CET becomes 03:00
CEST: 02:00-02:59 never happens) and back on Sunday 25 October at 01:00 UTC (03:00 CEST
becomes 02:00 CET: 02:00-02:59 happens twice).
"""

import bisect
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reconciler.core.model import Window
from reconciler.core.schedule import (
    latest_slot,
    next_fire,
    slot_key,
    upcoming,
    window_end,
    zone_problem,
)

BERLIN = "Europe/Berlin"


def z(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- a Berlin 02:00 schedule across both changes ------------------------------------------------


def test_berlin_two_oclock_runs_once_a_day_across_spring_forward():
    fires = upcoming("0 2 * * *", z(2026, 3, 27, 12), BERLIN, 4)
    assert fires == (
        z(2026, 3, 28, 1),  # 02:00 CET
        z(2026, 3, 29, 1),  # 02:00 does not exist: the end of the gap, 03:00 CEST
        z(2026, 3, 30, 0),  # 02:00 CEST
        z(2026, 3, 31, 0),
    )


def test_berlin_two_oclock_runs_once_a_day_across_fall_back():
    fires = upcoming("0 2 * * *", z(2026, 10, 23, 12), BERLIN, 4)
    assert fires == (
        z(2026, 10, 24, 0),  # 02:00 CEST
        z(2026, 10, 25, 0),  # the first 02:00 (CEST); the second (01:00 UTC) does not run
        z(2026, 10, 26, 1),  # 02:00 CET
        z(2026, 10, 27, 1),
    )


def test_the_latest_slot_during_the_repeated_hour_is_its_first_occurrence():
    # 01:30 UTC is the second 02:30 (CET): the 02:00 slot already ran at 00:00 UTC.
    assert latest_slot("0 2 * * *", z(2026, 10, 25, 1, 30), BERLIN) == z(2026, 10, 25, 0)
    # A slot later in the repeated hour than the clock now reads ran in the first pass.
    assert latest_slot("50 2 * * *", z(2026, 10, 25, 1, 10), BERLIN) == z(2026, 10, 25, 0, 50)
    assert latest_slot("0 2 * * *", z(2026, 10, 24, 23, 59), BERLIN) == z(2026, 10, 24, 0)


def test_the_latest_slot_in_the_skipped_hour_is_due_at_the_jump():
    assert latest_slot("30 2 * * *", z(2026, 3, 29, 0, 59), BERLIN) == z(2026, 3, 28, 1, 30)
    assert latest_slot("30 2 * * *", z(2026, 3, 29, 1, 0), BERLIN) == z(2026, 3, 29, 1, 0)
    assert next_fire("30 2 * * *", z(2026, 3, 29, 1, 0), BERLIN) == z(2026, 3, 30, 0, 30)


def test_slots_of_the_skipped_hour_and_the_jump_are_one_slot():
    # 02:00, 02:30 (skipped) and 03:00 CEST are one instant: one run, not three.
    fires = upcoming("*/30 * * * *", z(2026, 3, 29, 0, 15), BERLIN, 4)
    assert fires == (
        z(2026, 3, 29, 0, 30),
        z(2026, 3, 29, 1),
        z(2026, 3, 29, 1, 30),
        z(2026, 3, 29, 2),
    )


def test_an_hourly_schedule_runs_each_wall_clock_hour_once_in_the_autumn():
    fires = upcoming("0 * * * *", z(2026, 10, 24, 22, 30), BERLIN, 4)
    # 01:00 CEST, 02:00 CEST, (02:00 CET is the repeated 02:00: not again), 03:00 CET
    assert fires == (
        z(2026, 10, 24, 23),
        z(2026, 10, 25, 0),
        z(2026, 10, 25, 2),
        z(2026, 10, 25, 3),
    )


def test_zoned_slot_keys_are_the_utc_instants():
    assert slot_key(latest_slot("0 2 * * *", z(2026, 3, 29, 1, 5), BERLIN)) == (
        "2026-03-29T01:00:00Z"
    )


def test_utc_and_no_zone_read_the_same():
    for now in (z(2026, 3, 29, 1, 30), z(2026, 10, 25, 1, 30), z(2026, 7, 1, 12, 7)):
        for cron in ("0 2 * * *", "*/7 * * * *", "@daily"):
            assert latest_slot(cron, now, "UTC") == latest_slot(cron, now)
            assert next_fire(cron, now, "UTC") == next_fire(cron, now)


def test_an_unknown_zone_is_never_due():
    assert latest_slot("* * * * *", z(2026, 3, 29, 1), "Mars/Olympus") is None
    assert next_fire("* * * * *", z(2026, 3, 29, 1), "Mars/Olympus") is None
    assert (
        window_end([Window("* * * * *", 3600, timezone="Mars/Olympus")], 3, z(2026, 1, 1)) is None
    )


# --- deny windows in a zone ---------------------------------------------------------------------


def test_a_berlin_office_hours_window_follows_the_clock_across_the_year():
    office = Window("0 8 * * *", 10 * 3600, timezone=BERLIN)  # 08:00-18:00 Berlin time
    assert window_end([office], 3, z(2026, 1, 15, 7, 30)) == z(2026, 1, 15, 17)  # CET
    assert window_end([office], 3, z(2026, 7, 15, 6, 30)) == z(2026, 7, 15, 16)  # CEST
    assert window_end([office], 3, z(2026, 7, 15, 5, 59)) is None  # 07:59 CEST
    assert window_end([office], 1, z(2026, 7, 15, 6, 30)) is None  # priority 1 passes


def test_a_window_across_a_change_lasts_its_duration_in_elapsed_time():
    night = Window("0 1 * * *", 3 * 3600, timezone=BERLIN)  # from 01:00, 3 hours
    # Spring: 01:00 CET is 00:00 UTC; it ends at 03:00 UTC (05:00 CEST on the clock).
    assert window_end([night], 3, z(2026, 3, 29, 2)) == z(2026, 3, 29, 3)


# --- zone names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata"])
def test_iana_names_are_zones(name):
    assert zone_problem(name) is None


@pytest.mark.parametrize(
    "name, hint",
    [
        ("Europe/Berln", "did you mean 'Europe/Berlin'?"),
        ("europe/berlin", "did you mean 'Europe/Berlin'? (zone names are case-sensitive)"),
        ("Mars/Olympus", "use an IANA time zone name"),
        ("CEST", "CEST looks like an abbreviation"),
        ("/etc/localtime", "use an IANA time zone name"),
        ("../../etc/passwd", "use an IANA time zone name"),
        ("localtime", "use an IANA time zone name"),  # the host's setting: differs by host
        ("Europe/Berlin ", "write it without the space"),
        ("", "use an IANA time zone name"),
    ],
)
def test_what_is_not_a_zone_says_what_to_write(name, hint):
    problem = zone_problem(name)
    assert problem is not None and problem[1].startswith(hint)


# --- against a brute-force reading of the rule ------------------------------------------------------


def _reference(cron_minute: int | str, cron_hour: int | None, zone: str, start, end):
    """Every slot instant in [start, end): for each wall-clock reading L the cron matches,
    the first UTC minute at which the zone's clock reads L or later (the documented rule),
    found by walking every minute."""
    tz = ZoneInfo(zone)
    instants, highest = [], []  # each minute, and the highest reading up to it
    at = start - timedelta(hours=30)
    while at < end + timedelta(hours=30):
        wall = at.astimezone(tz).replace(tzinfo=None)
        instants.append(at)
        highest.append(max(wall, highest[-1]) if highest else wall)
        at += timedelta(minutes=1)
    found = set()
    reading = highest[0]
    while reading <= highest[-1]:
        minute_matches = (
            reading.minute % 20 == 0 if cron_minute == "*/20" else cron_minute == reading.minute
        )
        if minute_matches and cron_hour in (None, reading.hour):
            first = instants[bisect.bisect_left(highest, reading)]
            if start <= first < end:
                found.add(first)
        reading += timedelta(minutes=1)
    return sorted(found)


@pytest.mark.parametrize(
    "zone, start",
    [
        ("Europe/Berlin", z(2026, 3, 28, 20)),
        ("Europe/Berlin", z(2026, 10, 24, 20)),
        ("America/New_York", z(2026, 3, 8, 2)),
        ("America/New_York", z(2026, 11, 1, 2)),
        ("Australia/Lord_Howe", z(2026, 4, 4, 10)),  # clocks go back 30 minutes
        ("Australia/Lord_Howe", z(2026, 10, 3, 10)),
        ("Europe/Dublin", z(2026, 3, 28, 20)),  # "negative" daylight saving in tzdata
        ("Pacific/Apia", z(2011, 12, 29, 0)),  # 30 December 2011 never happened in Samoa
    ],
)
@pytest.mark.parametrize("minute, hour", [(0, 2), (30, None), ("*/20", None), (15, 1), (0, 0)])
def test_slots_match_the_rule_around_real_changes(zone, start, minute, hour):
    cron = f"{minute} {'*' if hour is None else hour} * * *"
    end = start + timedelta(hours=36 if hour is not None else 10)
    expected = _reference(minute, hour, zone, start, end)
    got = []
    at = start - timedelta(microseconds=1)
    while (fire := next_fire(cron, at, zone)) is not None and fire < end:
        got.append(fire)
        at = fire
    assert got == expected
    # latest_slot agrees with next_fire: the latest slot at each fire is that fire, and
    # just before it the previous one.
    for previous, fire in zip([None, *got], got):
        assert latest_slot(cron, fire, zone) == fire
        before = latest_slot(cron, fire - timedelta(seconds=1), zone)
        if previous is not None:
            assert before == previous


def test_without_a_time_zone_database_the_hint_says_to_install_one():
    """A host without /usr/share/zoneinfo (and without the tzdata wheel: `-S` leaves
    site-packages out) knows no zone at all: the hint says what is missing."""
    code = "from reconciler.core.schedule import zone_problem; print(zone_problem('Europe/Berlin'))"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONTZPATH": "/nonexistent"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "no time zone database: install it" in result.stdout
