"""The pure planner: desired state + executed state + now -> Plan.

`make_plan` has no clock, no I/O and no logging; it is a function of its inputs, and a `Plan`
is a value that can be printed, recorded or compared.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from reconciler.core.holds import Hold, HoldKind, hold_of
from reconciler.core.model import DesiredState, Freeze, Strategy, TaskSpec
from reconciler.core.rollout import Stand, stand_of
from reconciler.core.schedule import latest_slot, parse_slot, slot_key, utc
from reconciler.core.state import ExecutedState, Reason, Run, RunStatus


@dataclass(frozen=True)
class Enqueue:
    """A run the pass will add to the queue.

    `slot` is the due cron slot (ISO 8601 UTC) of a scheduled task, else None.
    `hold` is set when a deny window or a freeze covers the run now: it waits, pending.
    """

    task: str
    machine: str
    version: str
    priority: int
    reason: Reason
    slot: str | None = None
    hold: Hold | None = None

    @property
    def held_until(self) -> datetime | None:
        return self.hold.until if self.hold is not None else None

    def to_json(self) -> dict:
        data = {
            "task": self.task,
            "machine": self.machine,
            "priority": self.priority,
            "reason": self.reason.value,
        }
        if self.hold is not None:
            if self.hold.until is not None:
                data["held_until"] = self.hold.until.isoformat().replace("+00:00", "Z")
            data["held"] = self.hold.describe()
        return data


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
class Reslot:
    """A scheduled run still waiting to start (held by a freeze, a window, a full queue) when
    a later slot of its task came due: it becomes that slot's run, so the slots it waited
    through collapse into it and the next pass does not run the task again for the latest."""

    run: int
    slot: str


@dataclass(frozen=True)
class Plan:
    """What a pass enqueues and cancels; `enqueue` is in the order the runs would start.
    `reslot` moves waiting scheduled runs to their task's latest due slot (bookkeeping: no
    run more or less, so not shown as a change)."""

    enqueue: tuple[Enqueue, ...] = ()
    cancel: tuple[Cancel, ...] = ()
    reslot: tuple[Reslot, ...] = ()
    # The freezes in force at the plan's `now` (what each is on, the freeze), recorded with
    # it for workers to honour (`DesiredState.reconciled_freezes`); None: record none.
    freezes: tuple[tuple[str, Freeze], ...] | None = None

    @property
    def is_empty(self) -> bool:
        return not self.enqueue and not self.cancel

    def to_json(self) -> dict:
        return {
            "enqueue": [e.to_json() for e in self.enqueue],
            "cancel": [c.to_json() for c in self.cancel],
        }


# --- the plan ---------------------------------------------------------------------------------


def make_plan(desired: DesiredState, executed: ExecutedState, now: datetime) -> Plan:
    """Compare desired with executed state at `now` and return what a pass should do.

    Pure and deterministic: the same inputs give an equal `Plan` whatever the order of the
    mappings and runs inside them. See SPEC §1-§2 for the rules; each one is a small function
    below. Raises ValueError for a naive `now`.
    """
    now = utc(now)
    cancels = sorted(_cancels(desired, executed), key=lambda c: c.run)
    load = _machine_load(executed, {c.run for c in cancels})
    planned: dict[tuple[str, str], Enqueue] = {}
    # A manual run in the queue does not stand for the version: a pass enqueues beside it.
    active = frozenset((r.task, r.machine, r.version) for r in executed.active if not r.manual)
    ctx = _Context(desired, executed, active, planned)
    # Dependencies are decided before their dependents: a blocked dependent is retried when
    # its dependency is re-enqueued by this very plan (`queue retry` of the dependency).
    for task_id in topological_order(desired):
        spec = desired.tasks[task_id]
        for machine in _plan_machines(spec, executed, load, desired, now):
            enqueue = _decide(spec, machine, ctx, now)
            if enqueue is not None:
                planned[(task_id, machine)] = enqueue
    ordered = order_enqueues(planned.values(), desired)
    held = _held_at_inherited_priority(ordered, desired, now)
    held = _held_behind_dependencies(_held_by_rollouts(held, desired, executed, now), desired)
    reslots = _reslots(desired, executed, {c.run for c in cancels}, now)
    freezes = tuple((s, f) for s, f in desired.freezes() if f.until is None or f.until > now)
    return Plan(held, tuple(cancels), reslots, freezes)


def _reslots(
    desired: DesiredState, executed: ExecutedState, cancelled: set[int], now: datetime
) -> tuple[Reslot, ...]:
    """The scheduled runs that have not started yet while a later slot of their task came
    due, moved to the latest due slot: one run for the slots missed while it waited, as for
    slots missed while nothing was passing. Never a run that started (running, or waiting
    out a retry back-off): it ran for its own slot, and the next slot gets its own run."""
    moved = []
    for run in executed.active:
        spec = desired.tasks.get(run.task)
        if (
            run.status is not RunStatus.PENDING
            or run.started_at is not None
            or run.attempt > 1
            or run.slot is None
            or run.id in cancelled
            or spec is None
            or spec.schedule is None
            or not spec.accepts(run.machine, run.version)
        ):
            continue
        fire = latest_slot(spec.schedule, now, spec.timezone)
        if fire is not None and not _slot_at_or_after(run.slot, slot_key(fire)):
            moved.append(Reslot(run.id, slot_key(fire)))
    return tuple(sorted(moved, key=lambda r: r.run))


def planned_rollouts(
    enqueues: Iterable[Enqueue], desired: DesiredState
) -> dict[str, dict[str, str]]:
    """The enqueues of tasks with a rollout: machine -> reason (`Reason` value), by task."""
    planned: dict[str, dict[str, str]] = {}
    for e in enqueues:
        if (spec := desired.tasks.get(e.task)) is not None and spec.rollout is not None:
            planned.setdefault(e.task, {})[e.machine] = e.reason.value
    return planned


def _held_by_rollouts(
    enqueues: tuple[Enqueue, ...], desired: DesiredState, executed: ExecutedState, now: datetime
) -> tuple[Enqueue, ...]:
    """The enqueues, each of a rollout's later batch (or of a batch in its pause) held
    "rollout: ..." unless something else holds it already; those of a rollout whose budget
    is spent held "rollout: halted ..." (the dispatcher ends them `halted`)."""
    planned = planned_rollouts(enqueues, desired)
    if not planned:
        return enqueues
    stands = rollout_stands(planned, desired, executed, now)
    result = []
    for e in enqueues:
        stand = stands.get(e.task)
        if e.hold is None and stand is not None:
            if stand.halted:
                e = replace(e, hold=stand.halted_hold())
            elif (hold := stand.hold_for(e.machine)) is not None:
                e = replace(e, hold=hold)
        result.append(e)
    return tuple(result)


def rollout_stands(
    tasks: Mapping[str, Mapping[str, str]] | Iterable[str],
    desired: DesiredState,
    executed: ExecutedState,
    now: datetime,
) -> dict[str, Stand]:
    """Where the rollout of each of `tasks` (that has one) stands at `now`, from the latest
    run of its current version on each target. `tasks` may map each task to the machines a
    plan is about to enqueue it on, with the reason (`resume` forgives earlier failures)."""
    stands = {}
    for task in tasks:
        spec = desired.tasks.get(task)
        if spec is None or spec.rollout is None:
            continue
        runs = {m: current_run(executed, spec, m) for m in spec.targets}
        planned = tasks[task] if isinstance(tasks, Mapping) else {}
        resumed = now if Reason.RESUME.value in planned.values() else None
        stand = stand_of(spec, runs, now, frozenset(planned), resumed)
        if stand is not None:
            stands[task] = stand
    return stands


def _held_behind_dependencies(
    enqueues: tuple[Enqueue, ...], desired: DesiredState
) -> tuple[Enqueue, ...]:
    """The enqueues, each that waits only for dependencies this plan enqueues held (a
    freeze, a window) held as long (`holds_behind_dependencies`)."""
    holds = holds_behind_dependencies(
        [(e.task, e.machine) for e in enqueues], [e.hold for e in enqueues], desired
    )
    return tuple(e if h is e.hold else replace(e, hold=h) for e, h in zip(enqueues, holds))


def holds_behind_dependencies(
    items: Sequence[tuple[str, str]], holds: Sequence[Hold | None], desired: DesiredState
) -> list[Hold | None]:
    """`holds` (of the pending `items`, each a (task, machine)), plus a hold for each item
    that waits only for dependencies among `items` which are themselves held (a freeze, a
    window, an approval; not a back-off): it waits as long as they do, and says so (`after
    ops/migrate, held by freeze on ...`) instead of showing as about to run. Along `after`
    chains too. The dispatcher judges the queue with it, the planner its enqueues."""
    by_task: dict[str, list[int]] = {}
    for index, (task, _) in enumerate(items):
        by_task.setdefault(task, []).append(index)
    result = list(holds)
    changed = True
    while changed:
        changed = False
        for index, (task, machine) in enumerate(items):
            spec = desired.tasks.get(task)
            if result[index] is not None or spec is None or not spec.after:
                continue
            waits = [
                other
                for dep in spec.after
                for other in by_task.get(dep, ())
                if not depends_on_machine(dep, machine, desired) or items[other][1] == machine
            ]
            lasting = [result[other] for other in waits]
            if waits and all(h is not None and h.kind is not HoldKind.RETRY for h in lasting):
                result[index] = replace(lasting[0], after=items[waits[0]][0])
                changed = True
    return result


def _held_at_inherited_priority(
    enqueues: tuple[Enqueue, ...], desired: DesiredState, now: datetime
) -> tuple[Enqueue, ...]:
    """The enqueues with their hold judged at their inherited priority, as the dispatcher
    judges it: a dependency of a priority-1 task is not held by a window that its own
    priority would respect (its dependent could never run otherwise)."""
    effective = inherited_priorities(list(enqueues), desired, dependency_depth(desired))
    return tuple(
        e if p == e.priority else replace(e, hold=hold_of(e.task, e.machine, p, desired, now))
        for e, p in zip(enqueues, effective)
    )


@dataclass(frozen=True)
class _Context:
    """What one decision may look at besides its task: the states and the plan so far."""

    desired: DesiredState
    executed: ExecutedState
    active: frozenset[tuple[str, str, str]]  # (task, machine, version) with a queued run
    planned: Mapping[tuple[str, str], Enqueue]

    def planned_anywhere(self, task: str) -> bool:
        return any(t == task for t, _ in self.planned)


def _decide(spec: TaskSpec, machine: str, ctx: _Context, now: datetime) -> Enqueue | None:
    """The Enqueue for (spec, machine), or None when nothing is due there."""
    version = spec.version_for(machine)
    if any((spec.id, machine, v) in ctx.active for v in versions_of(spec, machine)):
        # At most one active run per task, machine and version: missed slots and repeated
        # passes collapse into it. Checked on every active run, not only the latest one.
        return None
    last = current_run(ctx.executed, spec, machine)
    if spec.schedule is None:
        reason, slot = _once_reason(spec, machine, last, ctx), None
    else:
        reason, slot = _scheduled_reason(spec, machine, last, ctx, now)
    if reason is None:
        return None
    hold = hold_of(spec.id, machine, spec.priority, ctx.desired, now)
    return Enqueue(spec.id, machine, version, spec.priority, reason, slot, hold)


def _once_reason(spec: TaskSpec, machine: str, last: Run | None, ctx: _Context) -> Reason | None:
    """Why a once task must run on `machine` now, given its version's latest run there."""
    if last is None:
        return _fresh_reason(spec.id, machine, ctx.executed)
    if last.status.is_active:
        return None  # already queued or running: one active run per task/machine/version
    if last.status is RunStatus.CANCELLED:
        return _reason_after_cancel(spec.id, machine, last, ctx.executed)
    if last.status.is_success:
        # A check task is re-checked at every pass (drift detection); the executor records
        # `skipped` when the check holds, so a converged target costs one check per pass.
        return Reason.DRIFT if spec.check else None
    if not _final_run_retries(spec, machine, last, ctx):
        return None
    return Reason.RESUME if last.status is RunStatus.HALTED else Reason.RETRY


def _scheduled_reason(
    spec: TaskSpec, machine: str, last: Run | None, ctx: _Context, now: datetime
) -> tuple[Reason | None, str | None]:
    """Why a scheduled task must run on `machine` now, and for which slot.

    Only the latest due slot is considered, so missed slots collapse into one run.
    """
    fire = latest_slot(spec.schedule or "", now, spec.timezone)
    if fire is None:
        # Never due (validation refuses such schedules): nothing to run, and nothing to
        # stop the other tasks from being planned.
        return None, None
    slot = slot_key(fire)
    if last is None:
        # A brand new scheduled task (or version, or target) runs its latest due slot at once.
        return _fresh_reason(spec.id, machine, ctx.executed), slot
    if last.status.is_active:
        return None, None  # missed slots collapse into the run already queued
    if _slot_at_or_after(last.slot, slot):
        # This slot already has its run, whatever its outcome; only a retry repeats it.
        if last.status.is_problem and _final_run_retries(spec, machine, last, ctx):
            resumed = last.status is RunStatus.HALTED
            return (Reason.RESUME if resumed else Reason.RETRY), last.slot
        if last.status.is_success and spec.check:
            # Between slots a task with a check is re-checked at every pass, as a once
            # task is (drift detection); the run keeps the slot that already ran.
            return Reason.DRIFT, last.slot
        return None, None
    return Reason.SCHEDULE, slot


def _slot_at_or_after(run_slot: str | None, slot: str) -> bool:
    """Whether a run's slot is the due `slot` or later. No slot (a once run) is older."""
    if run_slot is None:
        return False
    try:
        return parse_slot(run_slot) >= parse_slot(slot)
    except ValueError:
        return False  # an unreadable slot cannot prove the due slot already ran


def _fresh_reason(task: str, machine: str, executed: ExecutedState) -> Reason:
    """The reason for a first run of the current version on `machine` (SPEC §4 `plan`)."""
    if not executed.has_seen(task):
        return Reason.NEW
    if executed.latest_on(task, machine) is None:
        return Reason.NEW_TARGET
    return Reason.CHANGED


def _reason_after_cancel(task: str, machine: str, last: Run, executed: ExecutedState) -> Reason:
    """The reason to enqueue again a run that was cancelled before it started.

    The cancelled run hides the history behind it (it is the latest run there), so it keeps
    the reason it was enqueued with; `schedule` is not carried (the task may no longer have
    one) and falls back to the reason of a first run.
    """
    try:
        reason = Reason(last.reason)
    except ValueError:
        reason = Reason.SCHEDULE
    return reason if reason is not Reason.SCHEDULE else _fresh_reason(task, machine, executed)


def _final_run_retries(spec: TaskSpec, machine: str, last: Run, ctx: _Context) -> bool:
    """Whether a failed, unknown, blocked or halted run is enqueued again (reason `retry`, or
    `resume` for a halted one).

    Failed and halted are final for their version (SPEC §4) until `queue retry`; unknown re-runs only
    if the task is idempotent (it may have executed); blocked re-runs once what blocked
    it no longer holds.
    """
    if last.retry_requested:
        return True
    if last.status is RunStatus.UNKNOWN:
        return spec.idempotent
    if last.status is RunStatus.BLOCKED:
        return all(_dependency_recovered(dep, machine, ctx) for dep in spec.after)
    return False


def _dependency_recovered(dep: str, machine: str, ctx: _Context) -> bool:
    """Whether dependency `dep` no longer blocks a run on `machine`.

    True when its relevant latest run (see `dependency_run`) succeeded or is active, or when
    this plan enqueues it: the dispatcher then makes the dependent wait for it.
    """
    scoped, last = dependency_run(dep, machine, ctx.desired, ctx.executed)
    if (dep, machine) in ctx.planned if scoped else ctx.planned_anywhere(dep):
        return True
    if last is None:
        return not scoped  # a dependency that never targets here cannot block
    return last.status.is_success or last.status.is_active


# --- strategy `one` -----------------------------------------------------------------------------


def _plan_machines(
    spec: TaskSpec,
    executed: ExecutedState,
    load: Mapping[str, int],
    desired: DesiredState,
    now: datetime,
) -> tuple[str, ...]:
    """The machines a task is planned on: every target, or one for strategy `one`."""
    if spec.strategy is not Strategy.ONE or not spec.targets:
        return spec.targets
    return (_sticky_machine(spec, executed) or _best_target(spec, load, desired, now),)


def _sticky_machine(spec: TaskSpec, executed: ExecutedState) -> str | None:
    """The target a strategy-`one` task already chose for its current version, if any.

    An active run wins, then the newest non-cancelled run of the version. Sticking to a
    machine whose run failed keeps "failed is final for its version": the task must not
    hop to the next machine at every pass.
    """
    runs = [
        r
        for m in spec.targets
        if (r := current_run(executed, spec, m)) is not None and r.status is not RunStatus.CANCELLED
    ]
    if not runs:
        return None
    return max(runs, key=lambda r: (r.status.is_active, r.id)).machine


def _best_target(
    spec: TaskSpec, load: Mapping[str, int], desired: DesiredState, now: datetime
) -> str:
    """A target that can run now (no deny window or freeze holds the task's priority there)
    before one that cannot; then the one with the fewest active runs; ties go to the first
    name."""

    def held(machine: str) -> bool:
        return hold_of(spec.id, machine, spec.priority, desired, now) is not None

    return min(spec.targets, key=lambda m: (held(m), load.get(m, 0), m))


def _machine_load(executed: ExecutedState, cancelled: set[int]) -> dict[str, int]:
    """Active runs per machine, not counting the runs this plan cancels."""
    load: dict[str, int] = {}
    for run in executed.active:
        if run.id not in cancelled:
            load[run.machine] = load.get(run.machine, 0) + 1
    return load


# --- cancels ------------------------------------------------------------------------------------


def _cancels(desired: DesiredState, executed: ExecutedState) -> list[Cancel]:
    """A Cancel for every pending run the desired state no longer wants.

    Running runs are never cancelled: they may already have changed the machine.
    """
    cancels = []
    for run in executed.active:
        reason = cancel_reason(run, desired)
        if run.status is RunStatus.PENDING and reason is not None:
            cancels.append(Cancel(run.id, run.task, run.machine, reason))
    return cancels


def cancel_reason(run: Run, desired: DesiredState) -> str | None:
    """Why `run` is no longer wanted (`removed`, `target-removed`, `changed`), or None.

    Shared with the dispatcher, which must not start a run the plan is about to cancel.
    """
    spec = desired.tasks.get(run.task)
    if spec is None:
        return "removed"
    if run.machine not in spec.targets:
        return "target-removed"  # for strategy `one`, any current target is fine
    if not spec.accepts(run.machine, run.version):
        return "changed"
    return None


# --- versions -----------------------------------------------------------------------------------


def versions_of(spec: TaskSpec, machine: str) -> tuple[str, ...]:
    """The version hashes that count as the task's current version on `machine`."""
    legacy = spec.legacy_versions.get(machine)
    return (spec.version_for(machine),) + ((legacy,) if legacy else ())


def current_run(executed: ExecutedState, spec: TaskSpec, machine: str) -> Run | None:
    """The latest run of the task's current version on `machine`, under any of its hashes."""
    runs = [
        r
        for v in versions_of(spec, machine)
        if (r := executed.latest_run(spec.id, machine, v)) is not None
    ]
    return max(runs, key=lambda r: r.id, default=None)


# --- `queue retry` ----------------------------------------------------------------------------


def retry_target(run: Run, spec: TaskSpec, executed: ExecutedState) -> tuple[Run | None, str]:
    """Which run `queue retry RUN` must flag so that the next pass really runs the task again
    on `run`'s machine, as (run to flag, why), or (None, why not).

    The planner looks only at the latest run of a (task, machine, version): flagging an
    older one would promise a run that never happens. So a retry of an older run moves to
    the latest one when that one did not succeed either (a once run whose retry failed too,
    a later slot that failed), and is refused when a later run succeeded or is queued.
    """
    latest = current_run(executed, spec, run.machine)
    if latest is None or latest.id == run.id:
        return run, ""
    where = f"{spec.id} on {run.machine}"
    if latest.status.is_active:
        return None, (
            f"run {latest.id} of the same version of {where} is already "
            f"{latest.status.value}: that run is the one that runs"
        )
    if latest.status.is_success:
        slot = f" (slot {latest.slot})" if latest.slot and latest.slot != run.slot else ""
        return None, (
            f"a later run of the same version of {where}, run {latest.id}{slot}, "
            f"{latest.status.value}: there is nothing left to retry"
        )
    if latest.status is RunStatus.CANCELLED:
        return run, ""  # the next pass enqueues the cancelled run's work again anyway
    return latest, (
        f"run {run.id} was followed by run {latest.id} of the same version, which "
        f"{latest.status.value} too: retrying run {latest.id}"
    )


# --- dependencies (shared with dispatch) --------------------------------------------------------


def depends_on_machine(dep: str, machine: str, desired: DesiredState) -> bool:
    """Whether dependency `dep` must have succeeded on `machine` itself.

    That is the case when it runs on every one of its targets and `machine` is one. A
    dependency that does not target `machine`, or runs on one target only (strategy `one`),
    is judged by its newest run on any of its targets.
    """
    spec = desired.tasks.get(dep)
    return spec is not None and spec.strategy is Strategy.ALL and machine in spec.targets


def dependency_run(
    dep: str, machine: str, desired: DesiredState, executed: ExecutedState
) -> tuple[bool, Run | None]:
    """(scoped, run): whether `dep` is judged on `machine` only, and the run that decides.

    The deciding run is the latest run of the dependency's *current* version: on `machine`
    when scoped, else the newest over its targets. An older version's outcome does not
    count, so reverting a dependency to a version that succeeded unblocks its dependents.
    """
    spec = desired.tasks.get(dep)
    if spec is None:
        return False, None  # compile rejects unknown `after` tasks; nothing to wait for
    if depends_on_machine(dep, machine, desired):
        return True, current_run(executed, spec, machine)
    runs = [r for m in spec.targets if (r := current_run(executed, spec, m)) is not None]
    return False, max(runs, key=lambda r: r.id, default=None)


def topological_order(desired: DesiredState) -> tuple[str, ...]:
    """Task ids, every dependency before its dependents, ties by id (Kahn's algorithm).

    `after` is acyclic once compiled; should a cycle slip through, its tasks follow in id
    order rather than vanish.
    """
    deps = {t: {d for d in s.after if d in desired.tasks} for t, s in desired.tasks.items()}
    dependents: dict[str, list[str]] = {t: [] for t in deps}
    for task, ds in deps.items():
        for d in ds:
            dependents[d].append(task)
    remaining = {t: len(ds) for t, ds in deps.items()}
    ready = sorted(t for t, n in remaining.items() if n == 0)
    order: list[str] = []
    while ready:
        task = heapq.heappop(ready)
        order.append(task)
        for child in dependents[task]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, child)
    done = set(order)
    return tuple(order) + tuple(sorted(t for t in deps if t not in done))


def dependency_depth(desired: DesiredState) -> dict[str, int]:
    """Per task, the length of its longest `after` chain (0 for a task with no dependency)."""
    depth: dict[str, int] = {}
    for task in topological_order(desired):
        deps = [depth.get(d, 0) + 1 for d in desired.tasks[task].after if d in depth]
        depth[task] = max(deps, default=0)
    return depth


# --- order --------------------------------------------------------------------------------------


def order_enqueues(enqueues: Iterable[Enqueue], desired: DesiredState) -> tuple[Enqueue, ...]:
    """Enqueues in the order they would run: priority, then dependencies first, task, machine.

    A dependency inherits the priority of its most urgent dependent enqueued with it: a
    priority-1 task after a priority-3 backup cannot run before the backup, so listing the
    backup at priority 3 would misstate the order. Sorting by (inherited priority, `after`
    depth) then puts every dependency before its dependents. The dispatcher applies the same
    inheritance and still enforces `after` when the runs start.
    """
    items = list(enqueues)
    depth = dependency_depth(desired)
    effective = inherited_priorities(items, desired, depth)
    keyed = sorted(
        range(len(items)),
        key=lambda i: (effective[i], depth.get(items[i].task, 0), items[i].task, items[i].machine),
    )
    return tuple(items[i] for i in keyed)


def inherited_priorities(items: list, desired: DesiredState, depth: Mapping[str, int]) -> list[int]:
    """Per item (anything with task, machine, priority), its priority after inheritance.

    Items are visited dependents first (deepest first), so a chain passes the most urgent
    priority all the way down to its roots.
    """
    effective = [item.priority for item in items]
    by_task: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_task.setdefault(item.task, []).append(i)
    for i in sorted(range(len(items)), key=lambda i: -depth.get(items[i].task, 0)):
        spec = desired.tasks.get(items[i].task)
        for dep in spec.after if spec else ():
            scoped = depends_on_machine(dep, items[i].machine, desired)
            for j in by_task.get(dep, ()):
                if not scoped or items[j].machine == items[i].machine:
                    effective[j] = min(effective[j], effective[i])
    return effective
