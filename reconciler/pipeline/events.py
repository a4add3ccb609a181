"""What happens to runs, as typed values: the one stream the engine emits.

The engine decides and writes; everything else consumes this stream, each for itself: the
audit log (entries not already written with the change, see `Event.audited`), alerts,
metrics, log lines and the progress display. `Kind` is a closed set: a consumer matches on
its members, and an event of an unknown kind cannot be made (a typo fails at once rather
than falling through every consumer unnoticed).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.core.holds import Hold
from reconciler.core.state import Run


class Kind(StrEnum):
    """What happened to a run. A `StrEnum`: its value is the name views and logs print."""

    RECOVERED = "recovered"  # a dead holder's run, resolved (pending again, or unknown)
    ENQUEUED = "enqueued"  # the plan queued it
    CANCELLED = "cancelled"  # the plan cancelled it (its task left or changed)
    STARTED = "started"  # claimed and about to be dispatched
    RETRYING = "retrying"  # an attempt failed; back to pending until `not_before`
    FINISHED = "finished"  # a final status (succeeded, skipped, failed, unknown)
    BLOCKED = "blocked"  # a dependency failed: final, never ran
    HALTED = "halted"  # its rollout's failure budget was spent: final, never ran
    HELD = "held"  # waits for a deny window (a wait, not an operation: never audited)
    UNREACHABLE = "unreachable"  # its machine could not be reached (one alert per machine)


# Events whose run's change the engine writes together with its audit entry when it has a
# journal (group commit); the others are audited by the audit consumer as they arrive.
JOURNALED = frozenset({Kind.STARTED, Kind.RETRYING, Kind.FINISHED})


@dataclass(frozen=True)
class Event:
    """Something the engine did to `run`, with a human detail (a reason, an error)."""

    kind: Kind
    run: Run
    detail: str = ""
    # True when the run's audit entry was written with the change itself (the engine's
    # journal, group commit): the audit consumer must not write it again.
    audited: bool = False
    hold: Hold | None = None  # what holds a `held` run (the alert of an approval wait)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            object.__setattr__(self, "kind", Kind(self.kind))  # ValueError for an unknown kind


__all__ = ["JOURNALED", "Event", "Kind"]
