"""The next slots of each scheduled task, in its time zone and in UTC (`reconcile plan`).

Pure: `now` is a parameter. A slot is the UTC instant the planner keys its run by; its zone
reading is what the schedule says in wall-clock time (after a daylight-saving change, a
slot of the skipped hour shows the end of the gap: see `schedule._instant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from reconciler.core.model import DesiredState
from reconciler.core.schedule import in_zone, upcoming

SHOWN = 3  # slots per task


@dataclass(frozen=True)
class NextSlots:
    task: str
    schedule: str
    timezone: str  # as compiled; "UTC" when neither the task nor its team names one
    fires: tuple[datetime, ...]  # UTC instants, the earliest first

    def local(self, fire: datetime) -> datetime:
        return in_zone(fire, self.timezone)

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "next": [
                {
                    "local": self.local(f).isoformat(),
                    "utc": f.isoformat().replace("+00:00", "Z"),
                }
                for f in self.fires
            ],
        }


def next_slots(desired: DesiredState, now: datetime, count: int = SHOWN) -> tuple[NextSlots, ...]:
    """For every task with a schedule, by task id: its next `count` slots after `now`."""
    return tuple(
        NextSlots(
            spec.id,
            spec.schedule,
            spec.timezone or "UTC",
            upcoming(spec.schedule, now, spec.timezone, count),
        )
        for task_id, spec in sorted(desired.tasks.items())
        if spec.schedule
    )
