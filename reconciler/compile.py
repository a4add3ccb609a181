"""Inventory -> DesiredState: references checked, defaults applied, targets and versions resolved.

Pure: no clock, no I/O. Every problem is collected (all at once) and raised as `InputError`.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Mapping

from .diagnostics import Diagnostics, did_you_mean
from .errors import InputError
from .model import (
    DEFAULT_PRIORITY,
    DEFAULT_TIMEOUT,
    DesiredState,
    Inventory,
    Machine,
    RetryPolicy,
    RetrySpec,
    Strategy,
    Task,
    TaskSpec,
    Team,
    VaultRef,
)

if TYPE_CHECKING:
    from .loader import Unresolved


def compile_inventory(inventory: Inventory, unresolved: "Unresolved | None" = None) -> DesiredState:
    """Resolve the inventory into the desired state the planner compares against.

    Raises `InputError` with every problem found: unknown teams, machines or `after` tasks,
    machines of another team, dependency cycles. `unresolved` (from `loader.read_inventory`)
    names objects that exist but had errors of their own: a reference to one of them is not
    reported as unknown.
    """
    diags = Diagnostics()
    may_exist = unresolved.may_exist if unresolved is not None else _nothing_more
    _check_machine_teams(inventory, diags, may_exist)
    labels = _LabelIndex(inventory.machines.values())
    specs: dict[str, TaskSpec] = {}
    for task_id in sorted(inventory.tasks):
        task = inventory.tasks[task_id]
        team = inventory.teams.get(task.team)
        if team is None:
            if not may_exist("team", task.team):
                diags.error(task.where("team"), f"task '{task.id}' names unknown team "
                            f"'{task.team}'", did_you_mean(task.team, inventory.teams)
                            or "add teams/<team>.yaml")
            continue
        targets = _resolve_targets(task, inventory, labels, diags, may_exist)
        after = _resolve_after(task, inventory, diags, may_exist)
        specs[task_id] = _spec(task, team, targets, after, inventory.machines)
    _check_cycles(specs, inventory.tasks, diags)
    diags.raise_if_errors()
    return DesiredState(tasks=specs, machines=dict(inventory.machines), teams=dict(inventory.teams))


def compile_collecting(inventory: Inventory, unresolved: "Unresolved",
                       diags: Diagnostics) -> DesiredState | None:
    """`compile_inventory`, adding its errors to `diags` instead of raising (None then), so
    one run reports the problems of every file and every reference together."""
    try:
        return compile_inventory(inventory, unresolved)
    except InputError as exc:
        diags.extend(exc.diagnostics.items)
        return None


def _nothing_more(kind: str, key: str) -> bool:
    return False  # the inventory is complete: whatever it lacks is unknown


def _check_machine_teams(inventory: Inventory, diags: Diagnostics, may_exist=_nothing_more) -> None:
    for machine in inventory.machines.values():
        if machine.team not in inventory.teams and not may_exist("team", machine.team):
            diags.error(machine.location, f"machine '{machine.name}' names unknown team "
                        f"'{machine.team}'", did_you_mean(machine.team, inventory.teams)
                        or "add teams/<team>.yaml or fix 'team'")


class _LabelIndex:
    """Machine names by (team, label, value): a selector is the intersection of its labels'
    sets, so resolving every selector costs what it matches, not tasks x machines."""

    def __init__(self, machines):
        self.by_team: dict[str, set[str]] = {}
        self.by_label: dict[tuple[str, str, str], set[str]] = {}
        for m in machines:
            self.by_team.setdefault(m.team, set()).add(m.name)
            for key, value in m.labels.items():
                self.by_label.setdefault((m.team, key, value), set()).add(m.name)

    def select(self, team: str, selector: Mapping[str, str]) -> tuple[str, ...]:
        matches = self.by_team.get(team, set())
        for key, value in selector.items():
            matches = matches & self.by_label.get((team, key, value), set())
        return tuple(sorted(matches))


def _resolve_targets(task: Task, inventory: Inventory, labels: _LabelIndex,
                     diags: Diagnostics, may_exist=_nothing_more) -> tuple[str, ...]:
    """The machines a task runs on: its explicit list, or its team's machines whose labels
    include the selector."""
    if task.machines is not None:
        return _explicit_targets(task, inventory.machines, diags, may_exist)
    return labels.select(task.team, task.selector or {})


def _explicit_targets(task: Task, machines: Mapping[str, Machine], diags: Diagnostics,
                      may_exist=_nothing_more) -> tuple[str, ...]:
    where = task.where("machines")
    for name in task.machines or ():
        machine = machines.get(name)
        if machine is None and may_exist("machine", name):
            continue  # its own file has errors, reported there
        if machine is None:
            own = (n for n, m in machines.items() if m.team == task.team)
            diags.error(where, f"task '{task.id}' targets unknown machine '{name}'",
                        did_you_mean(name, own) or "add it under machines/ or fix the name")
        elif machine.team != task.team:
            diags.error(where, f"task '{task.id}' targets machine '{name}' of team "
                        f"'{machine.team}'; a task targets machines of its own team only",
                        "move the task to that team or target a machine of team " f"'{task.team}'")
    return tuple(sorted({n for n in task.machines or () if n in machines
                         and machines[n].team == task.team}))


def _resolve_after(task: Task, inventory: Inventory, diags: Diagnostics,
                   may_exist=_nothing_more) -> tuple[str, ...]:
    """`after` names tasks of the same team; written as `name` (or `team/name`)."""
    resolved = []
    for name in task.after:
        dep_id = name if "/" in name else f"{task.team}/{name}"
        if dep_id not in inventory.tasks and may_exist("task", dep_id):
            continue  # its own file has errors, reported there
        if dep_id not in inventory.tasks:
            same_team = (t.name for t in inventory.tasks.values() if t.team == task.team)
            diags.error(task.where("after"), f"task '{task.id}' runs after unknown task '{name}'",
                        did_you_mean(name, same_team) or "name a task of the same team")
        elif dep_id.split("/", 1)[0] != task.team:
            diags.error(task.where("after"), f"task '{task.id}' runs after '{dep_id}' of another "
                        "team; `after` names tasks of the same team")
        elif dep_id == task.id:
            diags.error(task.where("after"), f"task '{task.id}' cannot run after itself")
        else:
            resolved.append(dep_id)
    return tuple(sorted(set(resolved)))


def _check_cycles(specs: Mapping[str, TaskSpec], tasks: Mapping[str, Task], diags: Diagnostics) -> None:
    """Report each dependency cycle once, at the `after` of its first task (sorted)."""
    done: set[str] = set()
    reported: set[frozenset[str]] = set()

    def visit(task_id: str, path: list[str]) -> None:
        if task_id in path:
            cycle = path[path.index(task_id):]
            if frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                first = min(cycle)
                ring = cycle[cycle.index(first):] + cycle[:cycle.index(first)] + [first]
                diags.error(tasks[first].where("after"), "dependency cycle: " + " -> ".join(ring),
                            "remove one of these `after` entries")
            return
        if task_id in done or task_id not in specs:
            return
        path.append(task_id)
        for dep in specs[task_id].after:
            visit(dep, path)
        path.pop()
        done.add(task_id)

    for task_id in sorted(specs):
        visit(task_id, [])


def _spec(task: Task, team: Team, targets: tuple[str, ...], after: tuple[str, ...],
          machines: Mapping[str, Machine]) -> TaskSpec:
    run = task.command if task.command is not None else (task.script or "")
    versions = _versions(run, task, targets, machines)
    return TaskSpec(
        id=task.id, team=task.team, name=task.name, run=run, check=task.check,
        env=tuple(sorted(task.env, key=lambda item: item[0])),
        priority=task.priority or team.defaults.priority or DEFAULT_PRIORITY,
        timeout=task.timeout or team.defaults.timeout or DEFAULT_TIMEOUT,
        retry=resolve_retry(task.retry, team.defaults.retry),
        schedule=task.schedule, after=after, strategy=task.strategy, targets=targets,
        versions=versions, idempotent=task.idempotent, description=task.description,
        location=task.location,
    )


def resolve_retry(task_retry: RetrySpec | None, team_retry: RetrySpec | None) -> RetryPolicy:
    """Merge field by field: the task's value, else the team default's, else the built-in."""
    builtin = RetryPolicy()
    fields = {}
    for name in ("count", "delay", "backoff", "max_delay", "failure_action"):
        for layer in (task_retry, team_retry):
            value = getattr(layer, name) if layer is not None else None
            if value is not None:
                fields[name] = value
                break
        else:
            fields[name] = getattr(builtin, name)
    return RetryPolicy(**fields)


def _versions(run: str, task: Task, targets: tuple[str, ...],
              machines: Mapping[str, Machine]) -> dict[str, str]:
    """One version per target machine (SPEC §1).

    Hashed: the shell text (command and script alike: same text, same execution), env names
    with their plain values or vault *references* (never secret values; order-insensitive),
    the check, and the resolved target — the machine's name and address for `strategy: all`,
    the whole candidate set for `strategy: one` (any of them may run it). Priority, retry,
    timeout, description and schedule are not hashed: changing them re-runs nothing.
    """
    executes = {
        "run": run,
        "env": sorted([name, {"vault": v.name} if isinstance(v, VaultRef) else v]
                      for name, v in task.env),
        "check": task.check,
    }
    if task.strategy is Strategy.ONE:
        target = {"one_of": [_identity(machines[m]) for m in targets]}
        version = _digest({**executes, "target": target})
        return {m: version for m in targets}
    return {m: _digest({**executes, "target": _identity(machines[m])}) for m in targets}


def _identity(machine: Machine) -> dict:
    """Where a run executes: renaming or moving a machine makes it a new target."""
    if machine.transport == "local":
        return {"machine": machine.name, "transport": "local"}
    return {"machine": machine.name, "transport": machine.transport, "host": machine.host,
            "port": machine.port}


def _digest(value: dict) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


__all__ = ["compile_inventory", "resolve_retry", "InputError"]
