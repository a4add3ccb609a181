"""The pure planner: desired state + executed state + now -> Plan.

`make_plan` has no clock, no I/O and no logging; it is a function of its inputs, and a `Plan`
is a value that can be printed, recorded or compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .model import DesiredState
from .state import ExecutedState, Reason


@dataclass(frozen=True)
class Enqueue:
    """A run the pass will add to the queue.

    `slot` is the due cron slot (ISO 8601 UTC) of a scheduled task, else None.
    `held_until` is set when a deny window covers the run now: it waits, pending, until then.
    """

    task: str
    machine: str
    version: str
    priority: int
    reason: Reason
    slot: str | None = None
    held_until: datetime | None = None

    def to_json(self) -> dict:
        return {"task": self.task, "machine": self.machine, "priority": self.priority,
                "reason": self.reason.value}


@dataclass(frozen=True)
class Cancel:
    """A pending run the pass will cancel: its task left (`removed`), its version changed
    (`changed`), or its machine is no longer a target (`target-removed`)."""

    run: int
    task: str
    machine: str
    reason: str

    def to_json(self) -> dict:
        return {"run": self.run, "task": self.task, "machine": self.machine, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    """What a pass enqueues and cancels; `enqueue` is in the order the runs would start."""

    enqueue: tuple[Enqueue, ...] = ()
    cancel: tuple[Cancel, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.enqueue and not self.cancel

    def to_json(self) -> dict:
        return {"enqueue": [e.to_json() for e in self.enqueue],
                "cancel": [c.to_json() for c in self.cancel]}


def make_plan(desired: DesiredState, executed: ExecutedState, now: datetime) -> Plan:
    """Compare desired with executed state at `now`; see SPEC §1-§2 for the rules."""
    raise NotImplementedError
