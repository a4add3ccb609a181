"""Missed slots (issue 15 §5): scheduled runs that have not started within their task's `grace`.

Pure: desired state, the pending runs and `now` in, the missed slots out. A scheduled task's
due slot gets a pending run (the plan's); a run that is still pending, never started, once
`grace` has passed since its slot, missed it: a deny window, a freeze, its rollout (a batch
before its own, or the pause after one) or a full queue held it.
Grace counts from the slot for a run the schedule enqueued, and from when the run was
enqueued for a task's first run of a version or target (its slot may be hours old: the task
did not exist then, so nothing was missed before it did). A run waiting out a retry back-off
started already; a run the plan is about to cancel is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.core.holds import hold_of
from reconciler.core.model import DEFAULT_GRACE, DesiredState
from reconciler.core.rollout import Stand
from reconciler.core.schedule import parse_slot, utc
from reconciler.core.state import Reason, Run, RunStatus


@dataclass(frozen=True)
class MissedSlot:
    """A scheduled run of `task` on `machine` still pending past `deadline` (slot + grace)."""

    task: str
    machine: str
    version: str
    slot: str  # ISO 8601 UTC, as the run records it
    run: int
    deadline: datetime
    grace: int  # seconds
    held: str = ""  # what holds it now (a window, a freeze, its rollout), if anything


def missed_slots(
    desired: DesiredState,
    pending: Iterable[Run],
    now: datetime,
    stands: Mapping[str, Stand] | None = None,
) -> tuple[MissedSlot, ...]:
    """The pending runs that missed their slot at `now`, by run id. `stands`: where the
    rollouts of the tasks that have one stand (`plan.rollout_stands`), so that a run its
    batch holds says so."""
    now = utc(now)
    found = []
    for run in sorted(pending, key=lambda r: r.id):
        spec = desired.tasks.get(run.task)
        if (
            spec is None
            or spec.schedule is None
            or run.slot is None
            or run.status is not RunStatus.PENDING
            or run.started_at is not None
            or run.attempt > 1
            or not spec.accepts(run.machine, run.version)
        ):
            continue
        since = _since(run)
        if since is None:
            continue
        deadline = since + timedelta(seconds=spec.grace)
        if now < deadline:
            continue
        hold = hold_of(run.task, run.machine, spec.priority, desired, now)
        stand = (stands or {}).get(run.task)
        if hold is None and stand is not None:
            hold = stand.hold_for(run.machine)
        found.append(
            MissedSlot(
                run.task,
                run.machine,
                run.version,
                run.slot,
                run.id,
                deadline,
                spec.grace,
                hold.describe() if hold is not None else "",
            )
        )
    return tuple(found)


def _since(run: Run) -> datetime | None:
    """When the run's slot became due for this reconciler: its slot, or when it was
    enqueued for a first run (see the module docstring)."""
    try:
        slot = parse_slot(run.slot or "")
    except ValueError:
        slot = None
    created = utc(run.created_at) if run.created_at is not None else None
    if run.reason == Reason.SCHEDULE.value and slot is not None:
        return slot
    known = [t for t in (slot, created) if t is not None]
    return max(known) if known else None


__all__ = ["DEFAULT_GRACE", "MissedSlot", "missed_slots"]
