"""The desired-state change between two revisions, as a value (`reconcile diff`, SPEC §4).

Pure: two `Side`s (what each revision holds: inventory, compiled desired state, vault bytes,
and optionally the digests of the decrypted vault values) and an optional executed state go
in, a `Diff` comes out. No git, no files, no clock: `source.revision` reads the revisions,
`cli.diff_cmd` decrypts the vaults, `diff_views` renders the value.

What re-runs is decided by the planner itself: the HEAD desired state is planned, at `now`,
against an executed state in which every BASE version succeeded on every BASE target (a
scheduled task at its latest BASE slot due by then). The runs enqueued as `new`, `changed`,
`new-target` or `schedule` are exactly the runs a pass would start once the change is merged,
in the order it would start them (priority, then `after` order): `schedule` when the change
makes a slot due that BASE had not (a schedule added to a task that already ran, `@daily` made
`@hourly`). Drift re-checks happen at every pass with or without the change: not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from reconciler.core.approval_rules import protected, rules_of
from reconciler.core.model import (
    DesiredState,
    Freeze,
    Inventory,
    Member,
    Task,
    TaskSpec,
    Team,
)
from reconciler.core.plan import current_run, make_plan
from reconciler.core.rollout import stand_of
from reconciler.core.schedule import latest_slot, slot_key
from reconciler.core.state import ExecutedState, Reason, Run, RunStatus

# The default `now` of a diff (tests); `reconcile diff` passes the real time, since whether a
# schedule change makes a slot due depends on it, as it does for the pass itself.
_PLANNING_NOW = datetime(2000, 1, 1, tzinfo=UTC)
_RERUN_REASONS = frozenset({Reason.NEW, Reason.CHANGED, Reason.NEW_TARGET, Reason.SCHEDULE})
# Fields whose change makes a new version by itself (SPEC §1); see `_task_fields`.
_EXECUTES = frozenset({"command", "script", "env", "check", "params", "strategy"})


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Revision:
    """A revision as the user named it (`origin/main`) and the commit it resolved to."""

    label: str
    commit: str | None = None

    @property
    def short(self) -> str | None:
        return self.commit[:7] if self.commit else None


@dataclass(frozen=True)
class Side:
    """What one revision holds.

    `vaults` maps a team to the bytes of `vaults/<team>.age`. `vault_keys` maps a team to
    {key name: digest of its value} for the vaults that could be decrypted (digests, so no
    secret value ever enters a diff); `vault_errors` says why a vault could not be.
    """

    revision: Revision
    inventory: Inventory
    desired: DesiredState
    vaults: Mapping[str, bytes] = field(default_factory=dict)
    vault_keys: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    vault_errors: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- the value


@dataclass(frozen=True)
class TaskChange:
    """A task present at both revisions whose definition changed; `fields` in SPEC order."""

    task: str
    fields: tuple[str, ...]
    reruns: bool
    priority: int = 0  # at HEAD (defaults applied)
    previous_priority: int = 0  # at BASE


@dataclass(frozen=True)
class TaskDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[TaskChange, ...] = ()


@dataclass(frozen=True)
class Rerun:
    """One run merging the change causes; `order` is its 1-based place among them."""

    order: int
    task: str
    machine: str
    priority: int
    reason: str  # new | changed | new-target | schedule
    held: str | None = None  # what holds it pending at HEAD (a deny window, a freeze)


@dataclass(frozen=True)
class RolloutPlan:
    """How the runs a change causes for `task` roll out at HEAD: its targets in batches (in
    order), the failure budget as a number of runs, the pause (seconds) and the verify
    command; `stand` says where the HEAD version's rollout stands in the store (None without
    one, or when it has no run yet)."""

    task: str
    batches: tuple[tuple[str, ...], ...]
    max_failed: int
    pause: int
    verify: str | None
    stand: str | None = None


@dataclass(frozen=True)
class FreezeChange:
    """A freeze (`suspend:`) set, lifted or changed on a team, machine or task (`scope`:
    `team ops`, `machine db-01`, `task ops/migrate`). `freeze` is the HEAD one, the BASE
    one when lifted; the change is audited as its commit (and signer, under git.verify)."""

    scope: str
    change: str  # set | lifted | changed
    freeze: Freeze
    ended: bool = False  # its `until` has passed at the time of the diff: it holds nothing


@dataclass(frozen=True)
class Ran:
    """The latest run of a task's HEAD version on one machine in the state store, if any."""

    task: str
    machine: str
    run: int | None = None
    status: RunStatus | None = None


@dataclass(frozen=True)
class ObjectChange:
    """A machine, team or settings file present at both revisions with changed fields."""

    name: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class ObjectDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[ObjectChange, ...] = ()


@dataclass(frozen=True)
class RoleChange:
    """A member of a team gained, lost or changed a role, or changed their keys.

    `change` is `added`, `removed`, `role` or `keys` (their `age`/`ssh` key: the vault
    recipients change with it). Members of an added team appear as `added`.
    """

    team: str
    member: str
    change: str
    before: str | None = None  # role at BASE
    after: str | None = None  # role at HEAD


@dataclass(frozen=True)
class KeyDiff:
    """Vault key names added, removed and changed (by value); never the values."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class VaultChange:
    """A vault file whose bytes differ. `file` is `added`, `removed` or `changed`; `keys` is
    known when both sides could be read (a missing file has no keys); `note` says why not."""

    team: str
    file: str
    keys: KeyDiff | None = None
    note: str | None = None


@dataclass(frozen=True)
class Diff:
    """Everything that differs between BASE and HEAD. `ran` is None without a state store."""

    base: Revision
    head: Revision
    tasks: TaskDiff
    runs: tuple[Rerun, ...]
    machines: ObjectDiff
    teams: ObjectDiff
    roles: tuple[RoleChange, ...]
    vaults: tuple[VaultChange, ...]
    settings: tuple[str, ...] = ()  # changed fields of reconciler.yaml
    ran: tuple[Ran, ...] | None = None
    freezes: tuple[FreezeChange, ...] = ()
    rollouts: tuple[RolloutPlan, ...] = ()  # of the tasks the change re-runs, by task
    # Roles a signer needs for this change under `git.verify` (SPEC §6), judged with BASE's
    # roles; filled in by the command, which can read git (this module cannot).
    requires: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when the two revisions hold the same desired state."""
        return not (
            self.tasks.added
            or self.tasks.removed
            or self.tasks.changed
            or self.machines.added
            or self.machines.removed
            or self.machines.changed
            or self.teams.added
            or self.teams.removed
            or self.teams.changed
            or self.vaults
            or self.settings
        )

    def runs_of(self, task: str) -> tuple[Rerun, ...]:
        """The runs the change causes for `task`, in order."""
        return self._runs_by_task.get(task, ())

    def ran_of(self, task: str) -> tuple[Ran, ...]:
        """What the state store knows of `task`'s HEAD version, by machine (empty without)."""
        return self._ran_by_task.get(task, ())

    @cached_property
    def _runs_by_task(self) -> dict[str, tuple[Rerun, ...]]:
        return _group(self.runs)

    @cached_property
    def _ran_by_task(self) -> dict[str, tuple[Ran, ...]]:
        return _group(self.ran or ())


def _group(items) -> dict:
    """Items (with a `task`) by task, each group in the original order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(item.task, []).append(item)
    return {task: tuple(found) for task, found in groups.items()}


# --------------------------------------------------------------------------- computing it


def diff_sides(
    base: Side, head: Side, executed: ExecutedState | None = None, now: datetime = _PLANNING_NOW
) -> Diff:
    """The `Diff` from `base` to `head` at `now`; with `executed`, also what already ran."""
    tasks = _task_diff(base, head)
    runs = planned_reruns(base.desired, head.desired, now)
    rerunning = {r.task for r in runs}
    tasks = TaskDiff(
        tasks.added,
        tasks.removed,
        tuple(replace(c, reruns=c.task in rerunning) for c in tasks.changed),
    )
    ran = None if executed is None else _ran(tasks, head.desired, executed)
    return Diff(
        base=base.revision,
        head=head.revision,
        tasks=tasks,
        runs=runs,
        machines=_object_diff(base.inventory.machines, head.inventory.machines, _fields_of),
        teams=_object_diff(base.inventory.teams, head.inventory.teams, _fields_of),
        roles=role_changes(base.inventory.teams, head.inventory.teams),
        vaults=vault_changes(base, head),
        settings=_fields_of(base.inventory.settings, head.inventory.settings),
        ran=ran,
        freezes=freeze_changes(base.inventory, head.inventory, now),
        rollouts=rollout_plans(head.desired, rerunning, executed, now),
    )


def rollout_plans(
    head: DesiredState, tasks: set[str], executed: ExecutedState | None, now: datetime
) -> tuple[RolloutPlan, ...]:
    """The rollouts of `tasks` (those the change re-runs) that have one, by task id; with
    `executed`, where each stands."""
    found = []
    for task in sorted(tasks):
        spec = head.tasks.get(task)
        if spec is None or spec.rollout is None:
            continue
        stand = stand_of(spec, {}, now)
        assert stand is not None
        where = None
        if executed is not None:
            runs = {m: current_run(executed, spec, m) for m in spec.targets}
            if any(runs.values()):
                where = stand_of(spec, runs, now).describe()  # type: ignore[union-attr]
        rollout = spec.rollout
        found.append(
            RolloutPlan(task, stand.batches, stand.budget, rollout.pause, rollout.verify, where)
        )
    return tuple(found)


def planned_reruns(
    base: DesiredState, head: DesiredState, now: datetime = _PLANNING_NOW
) -> tuple[Rerun, ...]:
    """The runs a pass at HEAD would start at `now` after a pass at BASE succeeded
    everywhere, in the order it would start them (the planner's own order). Held by the
    approval rules a pass would judge them by: none weaker than BASE's (a change does not
    lower its own rule, see core/approval_rules.py)."""
    executed = ExecutedState.of(_succeeded_everywhere(base, now))
    plan = make_plan(protected(head, rules_of(base)), executed, now)
    wanted = [e for e in plan.enqueue if e.reason in _RERUN_REASONS]
    return tuple(
        Rerun(
            i,
            e.task,
            e.machine,
            e.priority,
            e.reason.value,
            e.hold.describe() if e.hold is not None else None,
        )
        for i, e in enumerate(wanted, 1)
    )


def freeze_changes(
    base: Inventory, head: Inventory, now: datetime = _PLANNING_NOW
) -> tuple[FreezeChange, ...]:
    """The freezes HEAD sets, lifts or changes compared with BASE, by scope; one whose
    `until` has passed at `now` is marked `ended` (it holds nothing)."""
    before, after = _freezes(base), _freezes(head)
    changes = []
    for scope in sorted(before.keys() | after.keys()):
        old, new = before.get(scope), after.get(scope)
        if old == new:
            continue
        if new is None:
            changes.append(FreezeChange(scope, "lifted", old))
        else:
            ended = new.until is not None and new.until <= now
            changes.append(FreezeChange(scope, "set" if old is None else "changed", new, ended))
    return tuple(changes)


def _freezes(inventory: Inventory) -> dict[str, Freeze]:
    found = {f"team {t.name}": t.suspend for t in inventory.teams.values()}
    found |= {f"machine {m.name}": m.suspend for m in inventory.machines.values()}
    found |= {f"task {t.id}": t.suspend for t in inventory.tasks.values()}
    return {scope: freeze for scope, freeze in found.items() if freeze is not None}


def _succeeded_everywhere(desired: DesiredState, now: datetime) -> list[Run]:
    """One succeeded run of every task's version on every one of its targets; a scheduled
    task's run is of its latest slot due at `now` (none due: a run without a slot)."""
    runs: list[Run] = []
    for task_id in sorted(desired.tasks):
        spec = desired.tasks[task_id]
        fire = latest_slot(spec.schedule, now, spec.timezone) if spec.schedule else None
        for machine in spec.targets:
            runs.append(
                Run(
                    id=len(runs) + 1,
                    task=task_id,
                    machine=machine,
                    version=spec.version_for(machine),
                    priority=spec.priority,
                    status=RunStatus.SUCCEEDED,
                    slot=slot_key(fire) if fire is not None else None,
                )
            )
    return runs


# --------------------------------------------------------------------------- tasks


def _task_diff(base: Side, head: Side) -> TaskDiff:
    """Added, removed and changed task ids (changed: fields only; re-runs come later)."""
    before, after = base.desired.tasks, head.desired.tasks
    changed = []
    for task_id in sorted(set(before) & set(after)):
        names = _task_fields(base, head, task_id)
        if names:
            changed.append(
                TaskChange(task_id, names, False, after[task_id].priority, before[task_id].priority)
            )
    return TaskDiff(
        added=tuple(sorted(set(after) - set(before))),
        removed=tuple(sorted(set(before) - set(after))),
        changed=tuple(changed),
    )


# Each compared field: its name (as written in YAML) and how to read it from the task as
# written and as compiled. Effective values (defaults applied) are compared where defaults
# exist, so a team default that changes a task's priority shows on the task.
_TASK_FIELDS: tuple[tuple[str, Callable[[Task, TaskSpec], Any]], ...] = (
    ("command", lambda t, s: t.command),
    ("script", lambda t, s: t.script),
    ("env", lambda t, s: s.env),
    ("check", lambda t, s: s.check),
    ("params", lambda t, s: s.params),
    ("machines", lambda t, s: t.machines),
    ("selector", lambda t, s: dict(t.selector) if t.selector is not None else None),
    ("strategy", lambda t, s: s.strategy),
    ("priority", lambda t, s: s.priority),
    ("schedule", lambda t, s: s.schedule),
    ("timezone", lambda t, s: s.timezone),
    ("retry", lambda t, s: s.retry),
    ("rollout", lambda t, s: s.rollout),
    ("timeout", lambda t, s: s.timeout),
    ("after", lambda t, s: s.after),
    ("description", lambda t, s: s.description),
    ("idempotent", lambda t, s: s.idempotent),
)
# The order fields are listed in: what executes, where, then how.
FIELD_ORDER = (
    "command",
    "script",
    "env",
    "check",
    "params",
    "machines",
    "selector",
    "targets",
    "strategy",
    "priority",
    "schedule",
    "timezone",
    "retry",
    "rollout",
    "timeout",
    "after",
    "description",
    "idempotent",
)


def _task_fields(base: Side, head: Side, task_id: str) -> tuple[str, ...]:
    """The names of the fields of `task_id` that differ, plus `targets` when the resolved
    targets differ or a target moved (its transport, host or port: a new version)."""
    old_spec, new_spec = base.desired.tasks[task_id], head.desired.tasks[task_id]
    old_task, new_task = base.inventory.tasks[task_id], head.inventory.tasks[task_id]
    names = {
        name for name, read in _TASK_FIELDS if read(old_task, old_spec) != read(new_task, new_spec)
    }
    moved = old_spec.versions != new_spec.versions and not _EXECUTES & names
    if old_spec.targets != new_spec.targets or moved:
        names.add("targets")
    return tuple(n for n in FIELD_ORDER if n in names)


def _ran(tasks: TaskDiff, head: DesiredState, executed: ExecutedState) -> tuple[Ran, ...]:
    """For every added or changed task and HEAD target: the latest run of its HEAD version."""
    found = []
    for task_id in sorted([*tasks.added, *(c.task for c in tasks.changed)]):
        spec = head.tasks[task_id]
        for machine in spec.targets:
            run = current_run(executed, spec, machine)
            found.append(
                Ran(task_id, machine, run.id if run else None, run.status if run else None)
            )
    return tuple(found)


# --------------------------------------------------------------------------- machines, teams


def _fields_of(old: Any, new: Any) -> tuple[str, ...]:
    """Names of the dataclass fields that differ (locations and names never count)."""
    return tuple(
        f.name
        for f in fields(old)
        if f.compare and f.name != "name" and getattr(old, f.name) != getattr(new, f.name)
    )


def _object_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], compare: Callable[[Any, Any], tuple[str, ...]]
) -> ObjectDiff:
    changed = []
    for name in sorted(set(old) & set(new)):
        names = compare(old[name], new[name])
        if names:
            changed.append(ObjectChange(name, names))
    return ObjectDiff(
        added=tuple(sorted(set(new) - set(old))),
        removed=tuple(sorted(set(old) - set(new))),
        changed=tuple(changed),
    )


def role_changes(old: Mapping[str, Team], new: Mapping[str, Team]) -> tuple[RoleChange, ...]:
    """Every member added, removed, re-roled or re-keyed, team by team (removed teams' members
    are not listed: the team itself is removed)."""
    changes: list[RoleChange] = []
    for name in sorted(new):
        before = {m.name: m for m in old[name].members} if name in old else {}
        after = {m.name: m for m in new[name].members}
        for member in sorted(set(before) | set(after)):
            change = _member_change(name, before.get(member), after.get(member))
            if change is not None:
                changes.append(change)
    return tuple(changes)


def _member_change(team: str, old: Member | None, new: Member | None) -> RoleChange | None:
    name = (old or new).name  # type: ignore[union-attr]
    role = lambda m: m.role.value if m else None  # noqa: E731
    if old is None or new is None:
        return RoleChange(team, name, "added" if old is None else "removed", role(old), role(new))
    if old.role != new.role:
        return RoleChange(team, name, "role", role(old), role(new))
    if (old.age, old.ssh) != (new.age, new.ssh):
        return RoleChange(team, name, "keys", role(old), role(new))
    return None


# --------------------------------------------------------------------------- vaults


def vault_changes(base: Side, head: Side) -> tuple[VaultChange, ...]:
    """Vault files whose bytes differ, with the keys that changed where both sides are known."""
    changes = []
    for team in sorted(set(base.vaults) | set(head.vaults)):
        old, new = base.vaults.get(team), head.vaults.get(team)
        if old == new:
            continue
        kind = "added" if old is None else "removed" if new is None else "changed"
        keys, note = _key_diff(team, base, head, old is not None, new is not None)
        changes.append(VaultChange(team, kind, keys, note))
    return tuple(changes)


def _key_diff(
    team: str, base: Side, head: Side, in_base: bool, in_head: bool
) -> tuple[KeyDiff | None, str | None]:
    """The key changes of one vault, or None and why they are unknown."""
    old = base.vault_keys.get(team) if in_base else {}
    new = head.vault_keys.get(team) if in_head else {}
    if old is not None and new is not None:
        return KeyDiff(
            added=tuple(sorted(set(new) - set(old))),
            removed=tuple(sorted(set(old) - set(new))),
            changed=tuple(sorted(k for k in set(old) & set(new) if old[k] != new[k])),
        ), None
    side = base if old is None else head
    return None, side.vault_errors.get(team)


__all__ = [
    "Diff",
    "KeyDiff",
    "ObjectChange",
    "ObjectDiff",
    "Ran",
    "Rerun",
    "Revision",
    "RoleChange",
    "Side",
    "TaskChange",
    "TaskDiff",
    "VaultChange",
    "diff_sides",
    "planned_reruns",
    "role_changes",
    "vault_changes",
]
