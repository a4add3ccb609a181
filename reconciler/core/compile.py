"""Inventory -> DesiredState: references checked, defaults applied, targets and versions resolved.

Pure: no clock, no I/O. Every problem is collected (all at once) and raised as `InputError`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache

from reconciler.core.diagnostics import Diagnostic, Diagnostics, Location, Severity, did_you_mean
from reconciler.core.errors import InputError, raise_if_errors
from reconciler.core.model import (
    DEFAULT_GRACE,
    DEFAULT_PRIORITY,
    DEFAULT_TIMEOUT,
    DesiredState,
    Inventory,
    Machine,
    RetryPolicy,
    RetrySpec,
    Rollout,
    RolloutSpec,
    Strategy,
    Task,
    TaskSpec,
    Team,
    Unresolved,
    VaultRef,
    Window,
)


def compile_inventory(inventory: Inventory, unresolved: Unresolved | None = None) -> DesiredState:
    """Resolve the inventory into the desired state the planner compares against.

    Raises `InputError` with every problem found: unknown teams, machines or `after` tasks,
    machines of another team, dependency cycles. `unresolved` (from `loader.read_inventory`)
    names objects that exist but had errors of their own: a reference to one of them is not
    reported as unknown.
    """
    diags = Diagnostics()
    may_exist = unresolved.may_exist if unresolved is not None else _nothing_more
    _check_machine_teams(inventory, diags, may_exist)
    _check_credentials(inventory, diags)
    _check_http_teams(inventory, diags)
    _check_local_users(inventory, diags)
    labels = _LabelIndex(inventory.machines.values())
    specs: dict[str, TaskSpec] = {}
    for task_id in sorted(inventory.tasks):
        task = inventory.tasks[task_id]
        team = inventory.teams.get(task.team)
        if team is None:
            if not may_exist("team", task.team):
                diags.error(
                    task.where("team"),
                    f"task '{task.id}' names unknown team '{task.team}'",
                    did_you_mean(task.team, inventory.teams) or "add teams/<team>.yaml",
                )
            continue
        targets = _resolve_targets(task, inventory, labels, diags, may_exist)
        after = _resolve_after(task, inventory, diags, may_exist)
        specs[task_id] = _spec(task, team, targets, after, inventory.machines)
    _check_cycles(specs, inventory.tasks, diags)
    raise_if_errors(diags)
    teams, machines = _zoned_windows(inventory)
    return DesiredState(tasks=specs, machines=machines, teams=teams)


def compile_collecting(
    inventory: Inventory, unresolved: Unresolved, diags: Diagnostics
) -> DesiredState | None:
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
            diags.error(
                machine.location,
                f"machine '{machine.name}' names unknown team '{machine.team}'",
                did_you_mean(machine.team, inventory.teams)
                or "add teams/<team>.yaml or fix 'team'",
            )


SETTINGS_FILE = "reconciler.yaml"  # of the inventory


def _check_credentials(inventory: Inventory, diags: Diagnostics) -> None:
    """An ssh machine authenticates with its own team vault's key, or with a key file or the
    ssh-agent that the admin-owned settings grant to its team: without the grant, a team
    could borrow another team's credentials by naming its key path (or leaving the key out)
    on a machine of its own that points at the other team's host."""
    grants = inventory.settings.credentials
    _check_granted_teams(inventory, diags)
    granted = {_normal_path(path): teams for path, teams in grants.key_files.items()}
    for machine in inventory.machines.values():
        if machine.transport != "ssh" or machine.key is not None:
            continue
        if machine.key_file:
            teams = granted.get(_normal_path(machine.key_file), ())
            if machine.team not in teams:
                diags.error(
                    machine.where("key_file"),
                    _key_file_refusal(machine, teams),
                    f"store the key in the {machine.team} vault and write key: "
                    "{vault: NAME}, or an admin grants the file in "
                    f"{SETTINGS_FILE}: credentials: {{key_files: "
                    f"{{{json.dumps(machine.key_file)}: [{machine.team}]}}}}",
                )
        elif machine.team not in grants.agent:
            diags.error(
                machine.where("key"),
                f"machine '{machine.name}' has neither key nor "
                "key_file, so it would authenticate with the reconciler's ssh-agent, "
                f"which the settings do not grant to team {machine.team}",
                f"store its key in the {machine.team} vault and write key: "
                "{vault: NAME}, or an admin adds the team in "
                f"{SETTINGS_FILE}: credentials: {{agent: [{machine.team}]}}",
            )


def _key_file_refusal(machine: Machine, teams: tuple[str, ...]) -> str:
    owners = (
        f"the settings grant it to {', '.join(teams)} only"
        if teams
        else "the settings grant it to no team"
    )
    return (
        f"machine '{machine.name}' of team {machine.team} may not use key_file "
        f"{machine.key_file}: {owners}"
    )


def _check_granted_teams(inventory: Inventory, diags: Diagnostics) -> None:
    grants = inventory.settings.credentials
    named = [(path, teams) for path, teams in grants.key_files.items()]
    named.append(("agent", grants.agent))
    for key, teams in named:
        where = grants.locations.get(key) or inventory.settings.location
        for team in teams:
            if team not in inventory.teams:
                diags.error(
                    where or Location(SETTINGS_FILE),
                    f"credentials: grants {key} to unknown team '{team}'",
                    did_you_mean(team, inventory.teams) or "name a team of teams/",
                )


def _check_http_teams(inventory: Inventory, diags: Diagnostics) -> None:
    """`http.token` and `http.hook_secret` name the team whose vault holds them."""
    http = inventory.settings.http
    for field_name, ref in (("token", http.token), ("hook_secret", http.hook_secret)):
        if ref is not None and ref.team not in inventory.teams:
            diags.error(
                ref.location or http.location or Location(SETTINGS_FILE),
                f"http.{field_name}: unknown team '{ref.team}' (the team whose vault holds it)",
                did_you_mean(ref.team, inventory.teams) or "name a team of teams/",
            )


def _normal_path(path: str) -> str:
    """A path as written, with `.`/`..` and doubled slashes folded, so `/k/../k/x` cannot
    pass for a different grant than `/k/x`. Not resolved on disk: validation does no I/O."""
    return posixpath.normpath(path)


def _check_local_users(inventory: Inventory, diags: Diagnostics) -> None:
    """With more than one team, a local machine must name the OS `user:` its commands run as
    (or the admins allow the shared user): otherwise one team's tasks run with the
    reconciler's own rights, read its identity and so every team's vault."""
    if len(inventory.teams) < 2 or inventory.settings.local_machines.allow_shared_user:
        return
    for machine in _shared_user_machines(inventory):
        diags.error(
            machine.where("user"),
            f"machine '{machine.name}' runs its tasks with the "
            "reconciler's own rights (" + _shared_reason(machine) + "): they could read "
            f"its identity and every team's vault, and the inventory has "
            f"{len(inventory.teams)} teams",
            "add user: OS_USER (an unprivileged account) to the machine, or an admin "
            f"allows it in {SETTINGS_FILE}: local_machines: {{allow_shared_user: true}}",
        )


def shared_user_warnings(inventory: Inventory) -> list[Diagnostic]:
    """For `validate`: each local machine whose tasks run with the reconciler's own rights."""
    return [
        Diagnostic(
            m.where("user"),
            f"machine '{m.name}' runs its tasks with the "
            f"reconciler's own rights ({_shared_reason(m)}): they can read its "
            "identity, its state store and every vault it can open",
            "add user: OS_USER to run them as an unprivileged account",
            severity=Severity.WARNING,
        )
        for m in _shared_user_machines(inventory)
    ]


def _shared_user_machines(inventory: Inventory) -> list[Machine]:
    return [
        m
        for m in inventory.machines.values()
        if m.transport == "local" and (not m.user or m.user in SHARED_USERS)
    ]


# `user: root` is the reconciler's own rights wherever it can switch users at all.
SHARED_USERS = ("root",)


def _shared_reason(machine: Machine) -> str:
    return "user: root" if machine.user else "no user:"


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


def _resolve_targets(
    task: Task,
    inventory: Inventory,
    labels: _LabelIndex,
    diags: Diagnostics,
    may_exist=_nothing_more,
) -> tuple[str, ...]:
    """The machines a task runs on: its explicit list, or its team's machines whose labels
    include the selector."""
    if task.machines is not None:
        return _explicit_targets(task, inventory.machines, diags, may_exist)
    return labels.select(task.team, task.selector or {})


def _explicit_targets(
    task: Task, machines: Mapping[str, Machine], diags: Diagnostics, may_exist=_nothing_more
) -> tuple[str, ...]:
    where = task.where("machines")
    for name in task.machines or ():
        machine = machines.get(name)
        if machine is None and may_exist("machine", name):
            continue  # its own file has errors, reported there
        if machine is None:
            own = (n for n, m in machines.items() if m.team == task.team)
            diags.error(
                where,
                f"task '{task.id}' targets unknown machine '{name}'",
                did_you_mean(name, own) or "add it under machines/ or fix the name",
            )
        elif machine.team != task.team:
            diags.error(
                where,
                f"task '{task.id}' targets machine '{name}' of team "
                f"'{machine.team}'; a task targets machines of its own team only",
                f"move the task to that team or target a machine of team '{task.team}'",
            )
    return tuple(
        sorted({n for n in task.machines or () if n in machines and machines[n].team == task.team})
    )


def _resolve_after(
    task: Task, inventory: Inventory, diags: Diagnostics, may_exist=_nothing_more
) -> tuple[str, ...]:
    """`after` names tasks of the same team; written as `name` (or `team/name`)."""
    resolved = []
    for name in task.after:
        dep_id = name if "/" in name else f"{task.team}/{name}"
        if dep_id not in inventory.tasks and may_exist("task", dep_id):
            continue  # its own file has errors, reported there
        if dep_id not in inventory.tasks:
            same_team = (t.name for t in inventory.tasks.values() if t.team == task.team)
            diags.error(
                task.where("after"),
                f"task '{task.id}' runs after unknown task '{name}'",
                did_you_mean(name, same_team) or "name a task of the same team",
            )
        elif dep_id.split("/", 1)[0] != task.team:
            diags.error(
                task.where("after"),
                f"task '{task.id}' runs after '{dep_id}' of another "
                "team; `after` names tasks of the same team",
            )
        elif dep_id == task.id:
            diags.error(task.where("after"), f"task '{task.id}' cannot run after itself")
        else:
            resolved.append(dep_id)
    return tuple(sorted(set(resolved)))


def _check_cycles(
    specs: Mapping[str, TaskSpec], tasks: Mapping[str, Task], diags: Diagnostics
) -> None:
    """Report each dependency cycle once, at the `after` of its first task (sorted)."""
    done: set[str] = set()
    reported: set[frozenset[str]] = set()

    def visit(task_id: str, path: list[str]) -> None:
        if task_id in path:
            cycle = path[path.index(task_id) :]
            if frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                first = min(cycle)
                ring = cycle[cycle.index(first) :] + cycle[: cycle.index(first)] + [first]
                diags.error(
                    tasks[first].where("after"),
                    "dependency cycle: " + " -> ".join(ring),
                    "remove one of these `after` entries",
                )
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


def _spec(
    task: Task,
    team: Team,
    targets: tuple[str, ...],
    after: tuple[str, ...],
    machines: Mapping[str, Machine],
) -> TaskSpec:
    run = task.command if task.command is not None else (task.script or "")
    versions = _versions(_shell_text(run), task, targets, machines, _shell_text(task.check))
    # Versions hashed before trailing whitespace was ignored: runs recorded under them are
    # still runs of this version, so an unchanged task does not re-run after an upgrade.
    # Text without trailing whitespace hashes the same both ways: nothing to compute twice.
    unchanged = run == _shell_text(run) and task.check == _shell_text(task.check)
    legacy = versions if unchanged else _versions(run, task, targets, machines, task.check)
    return TaskSpec(
        id=task.id,
        team=task.team,
        name=task.name,
        run=run,
        check=task.check,
        env=tuple(sorted(task.env, key=lambda item: item[0])),
        priority=task.priority or team.defaults.priority or DEFAULT_PRIORITY,
        timeout=task.timeout or team.defaults.timeout or DEFAULT_TIMEOUT,
        alert_after=task.alert_after or team.defaults.alert_after,
        grace=DEFAULT_GRACE if task.grace is None else task.grace,
        retry=resolve_retry(task.retry, team.defaults.retry),
        schedule=task.schedule,
        timezone=task.timezone or team.defaults.timezone,
        after=after,
        strategy=task.strategy,
        targets=targets,
        versions=versions,
        idempotent=task.idempotent,
        description=task.description,
        suspend=task.suspend,
        approval=task.approval,
        rollout=resolve_rollout(task, team.defaults.rollout),
        params=task.params,
        legacy_versions={m: v for m, v in legacy.items() if v != versions[m]},
        location=task.location,
    )


def _zoned_windows(inventory: Inventory) -> tuple[dict[str, Team], dict[str, Machine]]:
    """The teams and machines, each deny window without a `timezone` of its own given its
    team's default zone (`defaults.timezone`). Nothing changes for a team without one."""
    zones = {n: t.defaults.timezone for n, t in inventory.teams.items() if t.defaults.timezone}
    teams, machines = dict(inventory.teams), dict(inventory.machines)
    if not zones:
        return teams, machines
    for name, zone in zones.items():
        teams[name] = replace(teams[name], windows=_in_zone(teams[name].windows, zone))
    for name, machine in machines.items():
        zone = zones.get(machine.team)
        if zone and machine.windows:
            machines[name] = replace(machine, windows=_in_zone(machine.windows, zone))
    return teams, machines


def _in_zone(windows: tuple[Window, ...], zone: str) -> tuple[Window, ...]:
    return tuple(w if w.timezone else replace(w, timezone=zone) for w in windows)


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


def resolve_rollout(task: Task, team_rollout: RolloutSpec | None) -> Rollout | None:
    """The task's rollout, field by field: the task's value, else its team default's, else
    the built-in (all at once, no failure allowed, no verify, no pause); None when neither
    the task nor its team asks for one, or the task runs on one machine (strategy `one`: the
    loader refuses a rollout written on such a task)."""
    layers = [layer for layer in (task.rollout, team_rollout) if layer is not None]
    if not layers or task.strategy is Strategy.ONE:
        return None
    builtin = Rollout()
    fields = {}
    for name in ("batches", "max_failed", "verify", "pause"):
        values = [getattr(layer, name) for layer in layers if getattr(layer, name) is not None]
        fields[name] = values[0] if values else getattr(builtin, name)
    return Rollout(**fields)


def _shell_text(text: str | None) -> str | None:
    """Shell text as versioned: trailing whitespace (the newline `command: |` adds) runs the
    same, so it is not a change. Text without any keeps its exact version of before."""
    return text.rstrip() if text is not None else None


def _versions(
    run: str,
    task: Task,
    targets: tuple[str, ...],
    machines: Mapping[str, Machine],
    check: str | None,
) -> dict[str, str]:
    """One version per target machine (SPEC §1).

    Hashed: the shell text (command and script alike: same text, same execution), env names
    with their plain values or vault *references* (never secret values; order-insensitive),
    the check, the parameters' defaults (when any), and the resolved target — the machine's name and address for `strategy: all`,
    the whole candidate set for `strategy: one` (any of them may run it). Priority, retry,
    timeout, description and schedule are not hashed: changing them re-runs nothing.
    """
    executes = {
        "run": run,
        "env": sorted(
            [name, {"vault": v.name} if isinstance(v, VaultRef) else v] for name, v in task.env
        ),
        "check": check,
    }
    if any(p.default is not None for p in task.params):
        # A default is in every run's environment: changing it changes what runs. Bounds
        # (`allowed`, `pattern`) are not, and a task without defaults hashes as before.
        executes["params"] = sorted(
            [p.name, p.default] for p in task.params if p.default is not None
        )
    if task.strategy is Strategy.ONE:
        target = {"one_of": [_identity(machines[m]) for m in targets]}
        version = _digest({**executes, "target": target})
        return {m: version for m in targets}
    # The canonical JSON of {**executes, "target": ...} is the task's part, the same for
    # every target, then the target's: written once, not once per machine (`_digest`).
    head = _canonical(executes)[:-1] + ',"target":'
    return {m: _hash(head + _identity_json(machines[m]) + "}") for m in targets}


def _identity(machine: Machine) -> dict:
    """Where a run executes: renaming or moving a machine makes it a new target."""
    if machine.transport == "local":
        return {"machine": machine.name, "transport": "local"}
    return {
        "machine": machine.name,
        "transport": machine.transport,
        "host": machine.host,
        "port": machine.port,
    }


def _digest(value: dict) -> str:
    return _hash(_canonical(value))


# What json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes,
# without building an encoder for each call (two per task).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: dict) -> str:
    return _ENCODER.encode(value)


@lru_cache(maxsize=4096)
def _identity_json(machine: Machine) -> str:
    """`_identity` as canonical JSON: the same few machines are the targets of many tasks."""
    return _canonical(_identity(machine))


def _hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


__all__ = ["compile_inventory", "resolve_retry", "InputError"]
