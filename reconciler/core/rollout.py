"""Where a rollout stands (issue 15 §1): which batch of a task's version may run, which wait,
and whether the failure budget is spent.

Pure: the planner, the dispatcher and `status` give `stand_of` the runs they see (the latest
run of the task's current version on each target) and the time, and all read the same stand.
Times are the store's (`finished_at` of the runs that ended, `created_at` of a resume): no
clock is read here.

The targets, ordered by name, are cut into batches by the rollout's cumulative sizes. The
first batch that has not ended (a target without a run, or with a pending or running one)
is the open one; the batches after it wait for the batch before them. The open batch starts
once the `pause` after the end of the batch before it has passed. When more runs of the
version ended failed, unknown, killed or blocked than the budget allows, the rollout is halted: the runs that
have not started end `halted`. A resume (`queue retry` of a halted run, whose runs carry the
reason `resume`) forgives the failures that ended before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.core.holds import Hold, HoldKind
from reconciler.core.model import TaskSpec
from reconciler.core.schedule import utc
from reconciler.core.state import Reason, Run, RunStatus

# What spends the budget: every way a started or startable run ends badly but `halted`. A run
# an operator killed counts (killing a canary that hangs must stop the rollout, not let the
# next batch start as if it had ended well), and so does one a failed dependency blocked (the
# version was never tried there: the next batch would get it untried).
COUNTED = frozenset({RunStatus.FAILED, RunStatus.UNKNOWN, RunStatus.KILLED, RunStatus.BLOCKED})


@dataclass(frozen=True)
class Stand:
    """A rollout at one moment. `open` is the index of the first batch that has not ended
    (`len(batches)`: every batch has ended); `resumes_at` is when the pause before the open
    batch ends, if that is still to come."""

    task: str
    batches: tuple[tuple[str, ...], ...]
    open: int
    failed: int
    budget: int
    resumes_at: datetime | None = None

    @property
    def halted(self) -> bool:
        return self.failed > self.budget

    @property
    def done(self) -> bool:
        return self.open >= len(self.batches)

    @property
    def state(self) -> str:
        """`halted`, `done`, `paused` (before the open batch) or `running` (the open batch)."""
        if self.halted:
            return "halted"
        if self.done:
            return "done"
        return "paused" if self.resumes_at is not None else "running"

    def batch_of(self, machine: str) -> int | None:
        return next((i for i, batch in enumerate(self.batches) if machine in batch), None)

    def hold_for(self, machine: str) -> Hold | None:
        """What holds a pending run of the version on `machine`: its batch waits for the one
        before it, or the pause before the open batch; None when it may start (or the rollout
        is halted: that is not a wait, see `halted`)."""
        index = self.batch_of(machine)
        if index is None or self.halted or index < self.open:
            return None
        where = f"batch {index + 1} of {len(self.batches)}"
        if index > self.open:
            return Hold(HoldKind.ROLLOUT, None, f"{where} waits for batch {index}")
        if self.resumes_at is not None:
            return Hold(HoldKind.ROLLOUT, self.resumes_at, f"{where} paused after batch {index}")
        return None

    def halt_reason(self) -> str:
        """Why the runs not started end `halted`."""
        return f"rollout {self._spent()}; `reconcile queue retry` on a halted run resumes it"

    def halted_hold(self) -> Hold:
        """How a plan shows a run it enqueues into a halted rollout (the dispatcher ends it
        `halted` at once)."""
        return Hold(HoldKind.ROLLOUT, None, self._spent())

    def _spent(self) -> str:
        allowed = f"{self.budget} allowed" if self.budget else "none allowed"
        failures = f"{self.failed} run{'s' if self.failed != 1 else ''}"
        return f"halted: {failures} of this version failed ({allowed} by max_failed)"

    def describe(self) -> str:
        """One line: `batch 2 of 3 running (1 failed, 1 allowed)`."""
        count = len(self.batches)
        budget = f"{self.failed} failed, {self.budget} allowed"
        if self.halted:
            return f"halted at batch {min(self.open + 1, count)} of {count} ({budget})"
        if self.done:
            return f"all {count} batch{'es' if count != 1 else ''} done ({budget})"
        if self.resumes_at is not None:
            return (
                f"batch {self.open + 1} of {count} paused until {_iso(self.resumes_at)} ({budget})"
            )
        return f"batch {self.open + 1} of {count} running ({budget})"

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "state": self.state,
            "batch": min(self.open + 1, len(self.batches)),
            "batches": [list(batch) for batch in self.batches],
            "failed": self.failed,
            "max_failed": self.budget,
            "paused_until": _iso(self.resumes_at),
        }


def stand_of(
    spec: TaskSpec,
    runs: Mapping[str, Run | None],
    now: datetime,
    planned: frozenset[str] = frozenset(),
    resumed: datetime | None = None,
) -> Stand | None:
    """Where `spec`'s rollout stands at `now`, given the latest run of its current version on
    each target (`runs`; a target missing or None has none yet) and the targets a plan is
    about to enqueue a run on (`planned`: pending as far as the rollout goes; `resumed`: the
    plan resumes the rollout at that time). None for a task without a rollout."""
    rollout = spec.rollout
    if rollout is None:
        return None
    now = utc(now)
    targets = sorted(spec.targets)
    sizes = rollout.sizes(len(targets))
    batches = tuple(tuple(targets[a:b]) for a, b in zip((0, *sizes), sizes))
    current = {m: (None if m in planned else runs.get(m)) for m in targets}
    resumed_at = [
        utc(r.created_at)
        for m, r in current.items()
        if r is not None and r.reason == Reason.RESUME.value and r.created_at is not None
    ]
    since = max([*resumed_at, *([utc(resumed)] if resumed else [])], default=None)
    failed = sum(
        1
        for r in current.values()
        if r is not None
        and r.status in COUNTED
        and (since is None or r.finished_at is None or utc(r.finished_at) > since)
    )

    def ended(machine: str) -> bool:  # a halted run never ran: its batch did not happen
        run = current[machine]
        return (
            machine not in planned
            and run is not None
            and run.status.is_final
            and run.status is not RunStatus.HALTED
        )

    open_batch = next(
        (i for i, batch in enumerate(batches) if not all(ended(m) for m in batch)), len(batches)
    )
    resumes_at = None
    if 0 < open_batch < len(batches) and rollout.pause:
        started = any(
            (r := current[m]) is not None and (r.started_at is not None or r.status.is_final)
            for m in batches[open_batch]
        )
        ends = [
            utc(r.finished_at)
            for m in batches[open_batch - 1]
            if (r := current[m]) is not None and r.finished_at is not None
        ]
        if ends and not started:
            # Up to the whole second: the time shown is the time the batch may start.
            until = _whole_second(max(ends) + timedelta(seconds=rollout.pause))
            resumes_at = until if until > now else None
    budget = rollout.budget(len(targets))
    return Stand(spec.id, batches, open_batch, failed, budget, resumes_at)


def _whole_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


__all__ = ["COUNTED", "Stand", "stand_of"]
