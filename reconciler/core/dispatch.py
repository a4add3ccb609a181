"""Pure dispatch order: which pending runs may start now.

`decide` is called by the engine each time a run could start (a pass begins, a run ends, a
`not_before` or a deny window passes). It reads no clock and touches no store: it returns a
`Decision` that the engine applies with compare-and-set claims, so two workers deciding at
once cannot both start a run (the store's claim settles it).

Rules (SPEC §3), in the order they are applied to each pending run:
1. a run of a task that left the desired state (or whose target or version changed) is left
   alone: the plan cancels it;
2. `after`: a failed/blocked/unknown/cancelled dependency blocks the run (final, with a
   reason); an active dependency makes it wait;
3. a run with `not_before` in the future, inside a deny window for its priority, or covered
   by a freeze (`suspend:`), is held (`holds.hold_of`);
4. a run of a task with a `rollout:` whose failure budget is spent ends `halted` (final); one
   of a later batch, or of a batch in the pause before it, is held (`rollout.Stand`);
5. capacity: `concurrency` runs in total, `max_parallel` per machine, one run of a task per
   machine at a time;
runs are considered priority first (with inheritance along `after`, see
`plan.order_enqueues`), then oldest (created_at, id) first.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from reconciler.core.holds import Hold, hold_of
from reconciler.core.model import DesiredState
from reconciler.core.plan import (
    cancel_reason,
    dependency_depth,
    dependency_run,
    depends_on_machine,
    holds_behind_dependencies,
    inherited_priorities,
    rollout_stands,
)
from reconciler.core.schedule import utc
from reconciler.core.state import ExecutedState, Run, RunStatus

_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Decision:
    """What to do with the pending runs now.

    `start`: claim and run these, in this order. `block`: mark these blocked, with the
    reason (a dependency failed). `held`: these wait, pending, for what holds them (their
    `not_before`, a deny window or a freeze: `holds.Hold`). Runs in none of them wait for a dependency or capacity.
    """

    start: tuple[Run, ...] = ()
    block: tuple[tuple[Run, str], ...] = ()
    held: tuple[tuple[Run, Hold], ...] = ()
    # These end `halted`, with the reason: their rollout's failure budget is spent.
    halt: tuple[tuple[Run, str], ...] = ()
    # The runs that wait for capacity only (no dependency, no hold), in dispatch order with
    # the priority they are dispatched at: until something else changes, the next runs to
    # start come from here, in this order (see `fill`).
    waiting: tuple[tuple[Run, int], ...] = ()
    # The runs that wait for a dependency still queued or running, in dispatch order with
    # their priority: when one of those dependencies succeeds, `release` moves the runs it
    # frees into `waiting` without deciding on the whole queue again. Implied by the rest
    # (a run in no other field waits for a dependency or capacity), so not compared.
    awaiting: tuple[tuple[Run, int], ...] = field(default=(), compare=False)


def decide(
    pending: Sequence[Run],
    running: Sequence[Run],
    desired: DesiredState,
    executed: ExecutedState,
    now: datetime,
    concurrency: int,
    queued_elsewhere: Sequence[Run] = (),
) -> Decision:
    """Choose which of `pending` start now, which are blocked and which are held.

    `running` are the runs executing now (they count against capacity); `executed` gives
    the latest outcome of each dependency. `queued_elsewhere` are pending runs that another
    pass will start: a run that depends on one waits for it, but they are neither started,
    blocked, held nor counted against capacity here. Deterministic: the result does not
    depend on the order of `pending` or `running`. Raises ValueError for a naive `now`.
    """
    now = utc(now)
    live = [r for r in pending if cancel_reason(r, desired) is None]
    deps = _Dependencies(desired, executed, [*pending, *queued_elsewhere, *running])
    capacity = _Capacity(desired, running, concurrency)
    stands = rollout_stands({r.task for r in live}, desired, executed, now)
    start: list[Run] = []
    block: list[tuple[Run, str]] = []
    halt: list[tuple[Run, str]] = []
    held: list[tuple[Run, Hold]] = []
    waiting: list[tuple[Run, int]] = []
    awaiting: list[tuple[Run, int]] = []
    for run, priority in prioritised(live, desired):
        verdict = deps.verdict(run)
        stand = stands.get(run.task)
        if verdict is not None and verdict is not _WAIT:
            block.append((run, verdict))
        elif stand is not None and stand.halted:
            halt.append((run, stand.halt_reason()))
        elif (hold := run_hold(run, desired, now, priority)) is not None:
            held.append((run, hold))
        elif stand is not None and (hold := stand.hold_for(run.machine)) is not None:
            held.append((run, hold))
        elif verdict is None:
            if capacity.take(run):
                start.append(run)
            else:
                waiting.append((run, priority))
        else:
            awaiting.append((run, priority))
    if held:  # a run waiting for a held dependency is held as long, and says why
        holds = {run.id: hold for run, hold in held}
        settled = {run.id for run in start} | {run.id for run, _ in [*block, *halt]}
        undecided = [run for run in live if run.id not in settled]
        derived = held_dependents(undecided, holds, desired)
        held += [(run, derived[run.id]) for run in undecided if run.id in derived.keys() - holds]
        held_ids = {run.id for run, _ in held}
        awaiting = [(run, priority) for run, priority in awaiting if run.id not in held_ids]
    return Decision(
        start=tuple(start),
        block=tuple(block),
        held=tuple(held),
        waiting=tuple(waiting),
        halt=tuple(halt),
        awaiting=tuple(awaiting),
    )


def release(
    decision: Decision,
    succeeded: set[str],
    active: Sequence[Run],
    desired: DesiredState,
    executed: ExecutedState,
    now: datetime,
) -> Decision | None:
    """`decision` once runs of the tasks `succeeded` succeeded: the runs of its `awaiting`
    that those successes free join `waiting` at the place `decide` would give them, the
    others keep waiting. What `decide` would choose if nothing else changed since it made
    `decision` (no run was added, none ended badly, no hold expired), at the cost of the
    runs that waited for those tasks, not of the queue: a chain of `after` dependencies
    releases its runs one by one without a look at every pending run each time.

    `active` are the runs queued or running anywhere (as `decide` judged dependencies
    against). None when one of the freed runs needs a whole decision: a dependency of it
    failed meanwhile, something holds it, or a rollout governs it (its batches and budget
    are judged on the whole task)."""
    now = utc(now)
    if any((spec := desired.tasks.get(task)) is None or spec.rollout for task in succeeded):
        return None  # a rollout's success may open its next batch: judged on the whole task
    freed: list[tuple[Run, int]] = []
    still: list[tuple[Run, int]] = []
    deps: _Dependencies | None = None
    for run, priority in decision.awaiting:
        spec = desired.tasks.get(run.task)
        if spec is None or spec.rollout is not None:
            return None
        if succeeded.isdisjoint(spec.after):
            still.append((run, priority))
            continue
        if deps is None:
            deps = _Dependencies(desired, executed, active)
        verdict = deps.verdict(run)
        if verdict is _WAIT:
            still.append((run, priority))
        elif verdict is not None or run_hold(run, desired, now, priority) is not None:
            return None
        else:
            freed.append((run, priority))
    if not freed:
        return replace(decision, start=(), awaiting=tuple(still))
    waiting = list(decision.waiting)
    for item in freed:
        insort(waiting, item, key=_order_key)
    return replace(decision, start=(), waiting=tuple(waiting), awaiting=tuple(still))


def _order_key(item: tuple[Run, int]) -> tuple[int, datetime, int]:
    """Where a run stands in dispatch order (see `prioritised`): by the priority it is
    dispatched at, then oldest, then lowest id."""
    run, priority = item
    return priority, _age(run), run.id


def held_dependents(
    pending: Sequence[Run], holds: Mapping[int, Hold], desired: DesiredState
) -> dict[int, Hold]:
    """`holds` (by run id), plus a hold for each of the `pending` runs that waits only for
    held dependencies (`plan.holds_behind_dependencies`)."""
    derived = holds_behind_dependencies(
        [(run.task, run.machine) for run in pending],
        [holds.get(run.id) for run in pending],
        desired,
    )
    return {**holds, **{run.id: h for run, h in zip(pending, derived) if h is not None}}


def fill(
    waiting: Sequence[tuple[Run, int]],
    running: Sequence[Run],
    desired: DesiredState,
    now: datetime,
    concurrency: int,
) -> tuple[tuple[Run, ...], tuple[tuple[Run, int], ...], bool]:
    """The runs of `waiting` (a `Decision.waiting`) that start now that capacity freed up,
    those that still wait, in order, and whether a hold (a deny window) began on one it
    would have started. What `decide` would choose as long as nothing but capacity and time changed
    since it made `waiting` (no run was added, ended badly, no dependency ended, no hold
    expired): the cost follows the runs started, not the queue. A run a window now holds is
    not started and stays waiting; `decide` then settles its hold."""
    now = utc(now)
    capacity = _Capacity(desired, running, concurrency)
    start: list[Run] = []
    still: list[tuple[Run, int]] = []
    window_opened = False
    for index, (run, priority) in enumerate(waiting):
        if capacity.free <= 0:  # the rest waits as it was: one copy of it, not two
            return tuple(start), tuple(still) + tuple(waiting[index:]), window_opened
        # Capacity first: it is a few lookups, a hold is a look at freezes and windows, and
        # the runs of busy machines a round passes over grow with the queue.
        if not capacity.fits(run):
            still.append((run, priority))
        elif run_hold(run, desired, now, priority) is not None:
            window_opened = True
            still.append((run, priority))
        else:
            capacity.take(run)
            start.append(run)
    return tuple(start), tuple(still), window_opened


def dispatch_order(runs: Sequence[Run], desired: DesiredState) -> list[Run]:
    """`runs` in the order they are considered: inherited priority, oldest, lowest id."""
    return [run for run, _ in prioritised(runs, desired)]


def prioritised(runs: Sequence[Run], desired: DesiredState) -> list[tuple[Run, int]]:
    """`runs` in dispatch order, each with the priority it is dispatched at.

    The priority is the task's current one (a priority change applies to queued runs
    without a new version); a dependency inherits the priority of its waiting dependents
    so a priority-1 run never waits behind priority-2 work for its own dependency — nor
    inside a deny window its dependency's own priority would respect (the window is
    judged at the inherited priority too). `status` shows runs at this same priority.
    """
    runs = sorted(runs, key=lambda r: r.id)  # a stable base whatever the input order
    items = [_Item(r.task, r.machine, _priority(r, desired)) for r in runs]
    effective = inherited_priorities(items, desired, _depth_of(desired))
    order = sorted(range(len(runs)), key=lambda i: _order_key((runs[i], effective[i])))
    return [(runs[i], effective[i]) for i in order]


def run_hold(
    run: Run, desired: DesiredState, now: datetime, priority: int | None = None
) -> Hold | None:
    """What holds `run` pending now (`holds.hold_of`): a freeze, a deny window, or its own
    `not_before`; None if nothing does. `priority` is the one the run is dispatched at (see
    `prioritised`); by default its task's current one."""
    if priority is None:
        priority = _priority(run, desired)
    return hold_of(run.task, run.machine, priority, desired, now, run.not_before)


# The `after` depths of the last desired state decided on: a drain decides every round with
# the same (immutable) desired state, and computing them took a third of a round's time.
# One slot, replaced whole, so threads deciding at once at worst compute it twice.
_last_depth: tuple[DesiredState, dict[str, int]] | None = None


def _depth_of(desired: DesiredState) -> dict[str, int]:
    """`dependency_depth(desired)`, computed once per desired state object."""
    global _last_depth
    cached = _last_depth
    if cached is not None and cached[0] is desired:
        return cached[1]
    depth = dependency_depth(desired)
    _last_depth = (desired, depth)
    return depth


@dataclass(frozen=True)
class _Item:
    task: str
    machine: str
    priority: int


def _priority(run: Run, desired: DesiredState) -> int:
    spec = desired.tasks.get(run.task)
    return spec.priority if spec is not None else run.priority


def _age(run: Run) -> datetime:
    """The run's creation time for "oldest first"; a naive time is read as UTC."""
    if run.created_at is None:
        return _OLDEST
    if run.created_at.tzinfo is None:
        return run.created_at.replace(tzinfo=UTC)
    return utc(run.created_at)


class _Wait:
    """Sentinel verdict: a dependency is still active, the run waits for it."""


_WAIT = _Wait()


class _Dependencies:
    """Judges a run's `after` dependencies against the queue and the executed state."""

    def __init__(
        self, desired: DesiredState, executed: ExecutedState, active: Sequence[Run]
    ) -> None:
        self.desired = desired
        self.executed = executed
        self.active_on = {(r.task, r.machine) for r in active}
        self.active_tasks = {r.task for r in active}

    def verdict(self, run: Run) -> str | _Wait | None:
        """None if every dependency holds, `_WAIT` if one is active, else the block reason.

        A failed dependency blocks even while another waits: blocked is final, so the run
        is settled at once rather than after the other dependency ends.
        """
        spec = self.desired.tasks[run.task]
        verdicts = [self._one(dep, run.machine) for dep in spec.after]
        reasons = [v for v in verdicts if isinstance(v, str)]
        if reasons:
            return reasons[0]
        return _WAIT if any(v is _WAIT for v in verdicts) else None

    def _one(self, dep: str, machine: str) -> str | _Wait | None:
        scoped = depends_on_machine(dep, machine, self.desired)
        if (dep, machine) in self.active_on if scoped else dep in self.active_tasks:
            return _WAIT
        _, last = dependency_run(dep, machine, self.desired, self.executed)
        if last is None:
            # Never ran: fine for a dependency that does not run here; one that does must
            # have succeeded here first, and nothing is queued that could make it so.
            return f"dependency {dep} has not succeeded on {machine}" if scoped else None
        if last.status.is_success:
            return None
        if last.status.is_active:
            return _WAIT  # the snapshot is older than the queue: wait rather than guess
        return f"dependency {dep} {_OUTCOME[last.status]} on {last.machine} (run {last.id})"


_OUTCOME: Mapping[RunStatus, str] = {
    RunStatus.FAILED: "failed",
    RunStatus.BLOCKED: "was blocked",
    RunStatus.UNKNOWN: "ended unknown",
    RunStatus.KILLED: "was killed",
    RunStatus.CANCELLED: "was cancelled",
    RunStatus.HALTED: "was halted",
}


class _Capacity:
    """Free run slots: in total, per machine, and per (task, machine)."""

    def __init__(self, desired: DesiredState, running: Sequence[Run], concurrency: int) -> None:
        self.desired = desired
        self.free = concurrency - len(running)
        self.per_machine: dict[str, int] = {}
        for run in running:
            self.per_machine[run.machine] = self.per_machine.get(run.machine, 0) + 1
        self.busy = {(r.task, r.machine) for r in running}

    def fits(self, run: Run) -> bool:
        """Whether a slot is free for `run` (nothing reserved).

        One run of a task per machine at a time: a retry or a new version queued while the
        previous run still executes must not run beside it.
        """
        machine = self.desired.machines.get(run.machine)
        limit = machine.max_parallel if machine is not None else 1
        if self.free <= 0 or self.per_machine.get(run.machine, 0) >= limit:
            return False
        return (run.task, run.machine) not in self.busy

    def take(self, run: Run) -> bool:
        """Reserve a slot for `run` if there is one; False leaves it waiting for capacity."""
        if not self.fits(run):
            return False
        self.free -= 1
        self.per_machine[run.machine] = self.per_machine.get(run.machine, 0) + 1
        self.busy.add((run.task, run.machine))
        return True
