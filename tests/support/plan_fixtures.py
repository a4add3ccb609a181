"""Small builders of desired and executed states for the planner and dispatcher tests.

Defaults describe the common case (team `prod`, machine `m1`, version `v1`, priority 3) so a
test only spells out what it is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from reconciler.core.model import (
    DesiredState,
    Machine,
    RetryPolicy,
    Strategy,
    TaskSpec,
    Team,
    Window,
)
from reconciler.core.state import ExecutedState, Run, RunStatus

NOW = datetime(2026, 11, 29, 10, 20, tzinfo=UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def spec(
    task_id: str,
    *,
    targets: Iterable[str] = ("m1",),
    version: str = "v1",
    versions: dict[str, str] | None = None,
    priority: int = 3,
    schedule: str | None = None,
    after: Iterable[str] = (),
    check: str | None = None,
    strategy: Strategy = Strategy.ALL,
    idempotent: bool = False,
) -> TaskSpec:
    """A compiled task; every target gets `version` unless `versions` says otherwise."""
    team, name = task_id.split("/", 1)
    targets = tuple(sorted(targets))
    return TaskSpec(
        id=task_id,
        team=team,
        name=name,
        run=f"echo {name}",
        check=check,
        env=(),
        priority=priority,
        timeout=600,
        retry=RetryPolicy(),
        schedule=schedule,
        after=tuple(after),
        strategy=strategy,
        targets=targets,
        versions=versions or {m: version for m in targets},
        idempotent=idempotent,
    )


def machine(
    name: str, *, team: str = "prod", max_parallel: int = 1, windows: Iterable[Window] = ()
) -> Machine:
    return Machine(
        name=name, team=team, transport="local", max_parallel=max_parallel, windows=tuple(windows)
    )


def desired(
    *specs: TaskSpec, machines: Iterable[Machine] = (), team_windows: Iterable[Window] = ()
) -> DesiredState:
    """A desired state; machines named by targets but not given are added with defaults."""
    by_name = {m.name: m for m in machines}
    for s in specs:
        for m in s.targets:
            by_name.setdefault(m, machine(m, team=s.team))
    teams = {m.team for m in by_name.values()} | {s.team for s in specs}
    return DesiredState(
        tasks={s.id: s for s in specs},
        machines=by_name,
        teams={t: Team(name=t, windows=tuple(team_windows)) for t in sorted(teams)},
    )


def run(
    run_id: int,
    task: str,
    machine: str = "m1",
    version: str = "v1",
    status: RunStatus = RunStatus.SUCCEEDED,
    *,
    priority: int = 3,
    **fields,
) -> Run:
    """A run; `created_at` defaults to `run_id` minutes before NOW so ids order by age."""
    fields.setdefault("created_at", NOW - minutes(1000 - run_id))
    return Run(
        id=run_id,
        task=task,
        machine=machine,
        version=version,
        priority=priority,
        status=status,
        **fields,
    )


def executed(*runs: Run) -> ExecutedState:
    return ExecutedState.of(runs)


def pairs(plan) -> list[tuple[str, str, str]]:
    """The plan's enqueues as (task, machine, reason), in order."""
    return [(e.task, e.machine, e.reason.value) for e in plan.enqueue]
