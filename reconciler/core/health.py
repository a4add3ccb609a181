"""`/healthz`: is the daemon healthy? Pure: the caller brings the clock and the store's answer.

Healthy while the last pass ended within `PASSES_LATE` poll intervals (or, before any pass
ended, while the daemon has been up for less than that) and the state store answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core.durations import format_duration

PASSES_LATE = 3  # poll intervals without a pass ending before the daemon is unhealthy
STORE_SILENT = "the state store does not answer"


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str


def judge(
    now: float,
    started: float,
    last_pass_end: float | None,
    interval: float,
    store_problem: str | None,
) -> Health:
    """`now`, `started` and `last_pass_end` on one monotonic clock, in seconds."""
    limit = PASSES_LATE * interval
    if last_pass_end is None:
        if now - started > limit:
            return Health(
                False,
                f"no pass has ended since the daemon started {_ago(now - started)} ago "
                f"(at most {PASSES_LATE} poll intervals, {_ago(limit)}, are allowed)",
            )
    elif now - last_pass_end > limit:
        return Health(
            False,
            f"the last pass ended {_ago(now - last_pass_end)} ago (more than {PASSES_LATE} "
            f"poll intervals, {_ago(limit)})",
        )
    if store_problem is not None:
        # Only that much: /healthz answers anyone, and the store's URL (user, host, database)
        # or its server's error are for the daemon's log, not for whoever asks.
        return Health(False, STORE_SILENT)
    if last_pass_end is None:
        return Health(True, "starting: no pass has ended yet")
    return Health(True, f"the last pass ended {_ago(now - last_pass_end)} ago")


def _ago(seconds: float) -> str:
    return format_duration(max(0, int(seconds)))
