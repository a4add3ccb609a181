"""Pure time helpers over cron: due slots and deny windows (croniter, zoneinfo).

Every function takes and returns timezone-aware datetimes in UTC. A cron expression is read
in UTC (SPEC §1) unless it names an IANA time zone (`timezone: Europe/Berlin`): then its
slots are wall-clock times of that zone, each mapped to the first UTC instant at which the
zone's clock reads it (see `_instant`), so a slot in a skipped hour runs once, at the end of
the gap, and a slot in a repeated hour runs once, at its first occurrence. A slot is always
keyed by its UTC instant. The host's own zone is never used, so a pass gives the same
answer on any host. Nothing here reads the clock: `now` is always a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reconciler.core.model import Window

# croniter (with dateutil, ~50 ms to import) is imported by the functions that evaluate an
# expression: a pass or a `validate` of an inventory without schedules or deny windows never
# needs it, and every pass imports this module (through the planner).

# Chaining overlapping windows (one ends inside the next) stops after this many hops. A
# window set that covers every instant (e.g. `* * * * *` lasting 1h) would otherwise never
# end; the run is then held until the last end found and looked at again at that time.
_MAX_WINDOW_HOPS = 100

# croniter's get_prev is strictly before its start; starting one microsecond after `now`
# makes a fire exactly at `now` count as due.
_EPSILON = timedelta(microseconds=1)


# --- what a schedule may say ------------------------------------------------------------------

# The documented macros (SPEC §1), exactly as written: no other `@word`, no surrounding space.
CRON_MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
CRON_HINT = 'use 5 fields: minute hour day-of-month month day-of-week (UTC), e.g. "*/15 * * * *"'

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # month or day names, numbered from `low`


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _DAYS),
)
# One element of a list: `*`, `V` or `V-V`, each optionally followed by `/STEP`.
_ELEMENT = re.compile(
    r"(?P<range>\*|(?P<a>[0-9]+|[a-z]{3})(-(?P<b>[0-9]+|[a-z]{3}))?)"
    r"(/(?P<step>[0-9]+))?",
    re.IGNORECASE,
)
# A fixed instant to look for fires from: whether a standard expression ever fires does
# not depend on when it is asked (croniter looks decades ahead, past every leap year).
_PROBE = datetime(2000, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def cron_problem(text: str) -> tuple[str, str] | None:
    """Why `text` is not a schedule a pass can use, as (why, hint); None when it is. `why`
    is empty when there is nothing more precise to say than "not a valid cron expression".

    Accepted: the documented macros, and standard five-field cron (numbers, month and day
    names, `*`, ranges, lists and steps) that fires at least once. Refused: croniter's and
    Quartz's extensions (`R`, `H`, `L`, `W`, `#`, `?`), seconds or year fields, stray
    spaces, and expressions such as `0 0 31 2 *` that never fire (each would make every
    pass fail, or run at random minutes).
    """
    if text != text.strip():
        return ("a leading or trailing space", f"write it without the space: '{text.strip()}'")
    if text.startswith("@"):
        if text in CRON_MACROS:
            return None
        return (
            f"{text.split()[0]} is not a supported macro",
            "use one of " + ", ".join(sorted(CRON_MACROS)) + ", or 5 cron fields",
        )
    fields = text.split()
    if len(fields) != 5:
        plural = "" if len(fields) == 1 else "s"
        macro = f"@{text}"
        hint = f"did you mean '{macro}'?" if macro in CRON_MACROS else CRON_HINT
        return f"{len(fields)} field{plural}, not 5", hint
    for value, spec in zip(fields, _FIELDS):
        problem = _field_problem(value, spec)
        if problem is not None:
            return problem
    from croniter import CroniterBadDateError, croniter

    if not croniter.is_valid(text):
        return "", CRON_HINT
    try:
        croniter(text, _PROBE).get_next(datetime)
    except CroniterBadDateError:
        return (
            "it never fires: no date matches its day of month and month",
            "check the day of month against the month, e.g. there is no 31 2",
        )
    return None


def _field_problem(value: str, spec: _Field) -> tuple[str, str] | None:
    """Why one field is not standard cron, or None."""
    for element in value.split(","):
        match = _ELEMENT.fullmatch(element)
        if match is None:
            odd = sorted({c for c in element.upper() if c in "RHLW#?"})
            what = f"'{odd[0]}'" if odd else f"'{element}'"
            return (
                f"the {spec.name} field '{value}' uses {what}, which is not standard cron",
                "use numbers, names, '*', ranges a-b, lists a,b and steps /n; "
                "croniter's R and H and Quartz's L, W, # and ? are not supported",
            )
        for bound in (match["a"], match["b"]):
            if bound is not None and _value_of(bound, spec) is None:
                return (
                    f"the {spec.name} field '{value}': '{bound}' is out of range",
                    f"use {spec.low}-{spec.high}"
                    + (f" or {spec.names[0]}-{spec.names[-1]}" if spec.names else ""),
                )
        # croniter wraps a reversed range round (5-1 fires at 5..59 and 0..1); cron refuses it.
        if match["b"] is not None and _value_of(match["a"], spec) > _value_of(match["b"], spec):
            return (
                f"the {spec.name} field '{value}' has a reversed range '{element}'",
                "write the low end first, or a list for a range that wraps: 55-59,0-5",
            )
        if match["step"] is not None and int(match["step"]) == 0:
            return f"the {spec.name} field '{value}' has a step of 0", "use a step of 1 or more"
    return None


def _value_of(token: str, spec: _Field) -> int | None:
    if token.isdigit():
        number = int(token)
        return number if spec.low <= number <= spec.high else None
    lowered = token.lower()
    if lowered in spec.names:
        return spec.names.index(lowered) + (1 if spec.names is _MONTHS else 0)
    return None


# --- time -----------------------------------------------------------------------------------------


def utc(dt: datetime) -> datetime:
    """`dt` converted to UTC; raises ValueError for a naive datetime (its zone is unknown)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: scheduling needs timezone-aware UTC")
    return dt.astimezone(UTC)


def latest_slot(cron: str, now: datetime, zone: str | None = None) -> datetime | None:
    """The most recent fire time of `cron` that is <= `now` (a fire exactly at `now` counts),
    read in time zone `zone` (an IANA name; None: UTC), as a UTC instant.

    None when there is none: the expression never fires, or cannot be read at all, or the
    zone is unknown. Validation refuses all three (`cron_problem`, `zone_problem`); should
    one reach a pass anyway, it only means "not due", so one task's schedule can never stop
    the other tasks from being planned.
    """
    start = utc(now) + _EPSILON
    if cron_problem(cron.strip()) is not None:
        return None  # e.g. croniter's `R` would draw a new minute at every pass
    if zone is not None and zone != "UTC":
        return _latest_local(cron.strip(), utc(now), zone)
    from croniter import CroniterError, croniter

    try:
        return utc(croniter(cron.strip(), start).get_prev(datetime))
    except (CroniterError, ValueError, KeyError, IndexError, TypeError, OverflowError):
        return None


def next_fire(cron: str, after: datetime, zone: str | None = None) -> datetime | None:
    """The first fire time of `cron` strictly after `after`, read in `zone` as `latest_slot`
    reads it; None as for `latest_slot`."""
    start = utc(after)
    if cron_problem(cron.strip()) is not None:
        return None
    if zone is not None and zone != "UTC":
        return _next_local(cron.strip(), start, zone)
    from croniter import CroniterError, croniter

    try:
        return utc(croniter(cron.strip(), start).get_next(datetime))
    except (CroniterError, ValueError, KeyError, IndexError, TypeError, OverflowError):
        return None


def upcoming(cron: str, after: datetime, zone: str | None, count: int) -> tuple[datetime, ...]:
    """The next `count` fire times of `cron` strictly after `after` (UTC instants, each once)."""
    fires: list[datetime] = []
    at = after
    while len(fires) < count and (fire := next_fire(cron, at, zone)) is not None:
        fires.append(fire)
        at = fire
    return tuple(fires)


# --- time zones -----------------------------------------------------------------------------------

ZONE_HINT = "use an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
# Names zoneinfo loads that do not name one zone: `localtime` is whatever the host is set to.
_HOST_DEPENDENT = frozenset({"localtime", "posixrules"})


@lru_cache(maxsize=1024)
def zone_problem(name: str) -> tuple[str, str] | None:
    """Why `name` is not a time zone a schedule or window can use, as (why, hint); None when
    it is. A zone is an IANA name the system's time zone database (zoneinfo) knows."""
    if name != name.strip():
        return ("a leading or trailing space", f"write it without the space: '{name.strip()}'")
    if name in _HOST_DEPENDENT:
        return (
            f"'{name}' is the host's own setting, not a zone",
            ZONE_HINT,
        )
    if _zone(name) is not None:
        return None
    return ("", _zone_hint(name))


def _zone_hint(name: str) -> str:
    """`did you mean`, from every zone the database knows (read only for a bad name)."""
    from zoneinfo import available_timezones

    from reconciler.core.diagnostics import did_you_mean

    known = available_timezones() - _HOST_DEPENDENT
    if not known:
        return (
            "this host has no time zone database: install it (Debian: apt-get install tzdata; "
            "or pip install tzdata next to the reconciler)"
        )
    same = [z for z in known if z.lower() == name.lower()]
    if same:
        return f"did you mean '{same[0]}'? (zone names are case-sensitive)"
    if re.fullmatch(r"[A-Z]{2,5}", name):
        return (
            f"{name} looks like an abbreviation, which names no zone (and changes with daylight "
            "saving): use the region's name, e.g. Europe/Berlin for CET/CEST"
        )
    return did_you_mean(name, known) or ZONE_HINT


@lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo | None:
    """The zone named `name`, or None when the database has no such zone."""
    if name in _HOST_DEPENDENT or name != name.strip():
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None  # unknown, not a relative key (`/etc/...`, `..`), or not a TZif file


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    """The naive wall-clock reading of `zone` at `instant`."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _at_second(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _instant(wall: datetime, zone: tzinfo) -> datetime:
    """The first UTC instant at which the clock of `zone` reads `wall` or later.

    A reading that happens once maps to that instant; a reading of a repeated hour (clocks
    go back) to its first occurrence; a reading of a skipped hour (clocks go forward) to the
    instant of the jump, i.e. the end of the gap (02:30 on a spring-forward day in Berlin is
    03:00 CEST). So the map never goes backwards: later readings, later or equal instants.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == wall:
        return first
    # In a gap: fold=0 read it with the offset before the jump (an instant past the jump),
    # fold=1 with the offset after (an instant before it). The jump lies between: find it to
    # the second (offsets and transitions are whole seconds).
    low = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(_at_second(middle), zone) >= wall:
            high = middle
        else:
            low = middle
    return _at_second(high)


def _peak(now: datetime, zone: tzinfo) -> datetime | None:
    """While the clock repeats an hour (`now` is a second reading, fold=1): the reading just
    before it went back, which no slot <= now may reach (exclusive); else None."""
    if now.astimezone(zone).fold != 1:
        return None
    first = _wall(now, zone).replace(tzinfo=zone, fold=0).astimezone(UTC)
    offset = now.astimezone(zone).utcoffset()
    low, high = int(first.timestamp()), int(now.timestamp())
    while high - low > 1:  # the first second with the offset of `now`: the jump back
        middle = (low + high) // 2
        if _at_second(middle).astimezone(zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return _wall(_at_second(high - 1), zone) + timedelta(seconds=1)


def _latest_local(cron: str, now: datetime, name: str) -> datetime | None:
    """`latest_slot` of a wall-clock schedule: the latest reading a slot may have is the
    highest reading the clock has shown by `now` (higher than now's own while an hour
    repeats), and `_instant` maps it; `_instant` never goes backwards, so no later slot
    maps to an instant <= now."""
    zone = _zone(name)
    if zone is None:
        return None
    from croniter import CroniterError, croniter

    try:
        wall = croniter(cron, _wall(now, zone) + _EPSILON).get_prev(datetime)
        peak = _peak(now, zone)
        if peak is not None:
            wall = max(wall, croniter(cron, peak).get_prev(datetime))
        return _instant(wall, zone)
    except (CroniterError, ValueError, KeyError, IndexError, TypeError, OverflowError):
        return None


def _next_local(cron: str, after: datetime, name: str) -> datetime | None:
    """`next_fire` of a wall-clock schedule: the first reading above every reading the clock
    has shown by `after`, mapped by `_instant`."""
    zone = _zone(name)
    if zone is None:
        return None
    from croniter import CroniterError, croniter

    try:
        peak = _peak(after, zone)
        if peak is not None:
            wall = croniter(cron, peak - _EPSILON).get_next(datetime)
        else:
            wall = croniter(cron, _wall(after, zone)).get_next(datetime)
        return _instant(wall, zone)
    except (CroniterError, ValueError, KeyError, IndexError, TypeError, OverflowError):
        return None


# --- deny windows ---------------------------------------------------------------------------------


def _covering_end(window: Window, at: datetime) -> datetime | None:
    """When `window` ends if it covers `at`, else None.

    A window fired at f covers [f, f + duration) (elapsed time: a window that spans a
    daylight-saving change ends an hour earlier or later on the clock). Only the latest
    fire <= `at` matters: any earlier fire has the same duration and so ends earlier.
    """
    fire = latest_slot(window.deny, at, window.timezone)
    if fire is None:
        return None  # a window that never starts covers nothing
    end = fire + timedelta(seconds=window.duration)
    return end if at < end else None


def window_end(windows: Sequence[Window], priority: int, now: datetime) -> datetime | None:
    """When the deny windows covering `now` end for a run of `priority`, or None if none does.

    Priority 1 is never denied (SPEC §1). Overlapping windows chain: if another window
    covers the instant the first one ends, the run is still denied then, so the answer is
    the first instant no window covers (within `_MAX_WINDOW_HOPS` hops).
    """
    if priority <= 1 or not windows:
        return None
    at = utc(now)
    held_until: datetime | None = None
    for _ in range(_MAX_WINDOW_HOPS):
        ends = [end for w in windows if (end := _covering_end(w, at)) is not None]
        if not ends:
            break
        at = held_until = max(ends)
    return held_until


def slot_key(dt: datetime) -> str:
    """`dt` as the ISO 8601 UTC text stored in `Run.slot`, e.g. `2026-11-29T10:15:00Z`.

    Fixed width and always UTC, so slot keys compare chronologically as plain strings.
    """
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_slot(text: str) -> datetime:
    """The UTC datetime of a slot key written by `slot_key` (or any ISO 8601 with a zone)."""
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def in_zone(instant: datetime, zone: str | None) -> datetime:
    """`instant` on the clock of `zone` (None, or a zone the database lacks: UTC)."""
    tz = _zone(zone) if zone else None
    return utc(instant).astimezone(tz or UTC)
