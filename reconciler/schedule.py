"""Pure time helpers over cron: due slots and deny windows (croniter; UTC only).

Every function takes and returns timezone-aware datetimes in UTC. Cron expressions are read
as UTC (SPEC §1): there is no local time anywhere in scheduling, so a pass gives the same
answer on any host. Nothing here reads the clock: `now` is always a parameter.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Sequence

from croniter import croniter

from .model import Window

# Chaining overlapping windows (one ends inside the next) stops after this many hops. A
# window set that covers every instant (e.g. `* * * * *` lasting 1h) would otherwise never
# end; the run is then held until the last end found and looked at again at that time.
_MAX_WINDOW_HOPS = 100

# croniter's get_prev is strictly before its start; starting one microsecond after `now`
# makes a fire exactly at `now` count as due.
_EPSILON = timedelta(microseconds=1)


def utc(dt: datetime) -> datetime:
    """`dt` converted to UTC; raises ValueError for a naive datetime (its zone is unknown)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: scheduling needs timezone-aware UTC")
    return dt.astimezone(timezone.utc)


def latest_slot(cron: str, now: datetime) -> datetime:
    """The most recent fire time of `cron` that is <= `now` (a fire exactly at `now` counts)."""
    start = utc(now) + _EPSILON
    return utc(croniter(cron, start).get_prev(datetime))


def next_fire(cron: str, after: datetime) -> datetime:
    """The first fire time of `cron` strictly after `after`."""
    return utc(croniter(cron, utc(after)).get_next(datetime))


def _covering_end(window: Window, at: datetime) -> datetime | None:
    """When `window` ends if it covers `at`, else None.

    A window fired at f covers [f, f + duration). Only the latest fire <= `at` matters: any
    earlier fire has the same duration and so ends earlier.
    """
    fire = latest_slot(window.deny, at)
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
