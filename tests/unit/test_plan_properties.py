"""Properties of the planner and dispatcher over generated desired and executed states.

DESIGN §1: plans are deterministic; after every enqueued run succeeds a re-plan is empty
(but for drift checks); no run starts before its `after` dependencies have succeeded.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.dispatch import decide
from reconciler.core.model import DesiredState, Strategy, Window
from reconciler.core.plan import Plan, dependency_run, make_plan
from reconciler.core.state import ExecutedState, Reason, Run, RunStatus
from tests.support.plan_fixtures import NOW, machine, run, spec

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEDULES = [None, None, "*/15 * * * *", "0 3 * * *"]
SLOTS = [None, "2026-11-29T03:00:00Z", "2026-11-29T10:00:00Z", "2026-11-29T10:15:00Z"]
WINDOWS = [Window(deny="0 8 * * *", duration=4 * 3600), Window(deny="0 22 * * *", duration=3600)]


@st.composite
def desired_states(draw) -> DesiredState:
    """One or two teams, each with 1-3 machines and 1-5 tasks; `after` points only at
    earlier tasks of the same team, so the graph is acyclic by construction."""
    specs, machines = [], []
    for t in range(draw(st.integers(1, 2))):
        team = f"t{t}"
        names = [f"{team}-m{i}" for i in range(draw(st.integers(1, 3)))]
        for name in names:
            windows = draw(st.lists(st.sampled_from(WINDOWS), max_size=1))
            machines.append(
                machine(name, team=team, max_parallel=draw(st.integers(1, 2)), windows=windows)
            )
        team_ids: list[str] = []
        for i in range(draw(st.integers(1, 5))):
            task_id = f"{team}/task{i}"
            specs.append(
                spec(
                    task_id,
                    targets=draw(st.lists(st.sampled_from(names), min_size=1, unique=True)),
                    version=draw(st.sampled_from(["v1", "v2"])),
                    priority=draw(st.integers(1, 5)),
                    schedule=draw(st.sampled_from(SCHEDULES)),
                    after=draw(st.lists(st.sampled_from(team_ids), unique=True, max_size=2))
                    if team_ids
                    else (),
                    check=draw(st.sampled_from([None, None, "test -f /ok"])),
                    strategy=draw(st.sampled_from([Strategy.ALL, Strategy.ALL, Strategy.ONE])),
                    idempotent=draw(st.booleans()),
                )
            )
            team_ids.append(task_id)
    return DesiredState(
        tasks={s.id: s for s in specs}, machines={m.name: m for m in machines}, teams={}
    )


@st.composite
def worlds(draw) -> tuple[DesiredState, list[Run]]:
    """A desired state and a history of runs: current and old versions, removed tasks,
    foreign machines, every status, slots old and current, retries requested."""
    desired = draw(desired_states())
    tasks = sorted(desired.tasks) + ["t0/removed"]
    machines = sorted(desired.machines)
    runs = []
    for run_id in range(1, draw(st.integers(0, 12)) + 1):
        runs.append(
            run(
                run_id,
                draw(st.sampled_from(tasks)),
                draw(st.sampled_from(machines)),
                draw(st.sampled_from(["v1", "v2", "old"])),
                draw(st.sampled_from(list(RunStatus))),
                slot=draw(st.sampled_from(SLOTS)),
                retry_requested=draw(st.booleans()),
                reason=draw(st.sampled_from([r.value for r in Reason])),
            )
        )
    return desired, runs


def shuffled(desired: DesiredState, runs: list[Run], seed: int) -> tuple[DesiredState, list[Run]]:
    """The same inputs with every mapping and list in another order."""
    rng = random.Random(seed)

    def mix(mapping):
        items = list(mapping.items())
        rng.shuffle(items)
        return dict(items)

    runs = list(runs)
    rng.shuffle(runs)
    return DesiredState(mix(desired.tasks), mix(desired.machines), mix(desired.teams)), runs


def apply(plan: Plan, runs: list[Run], outcome=lambda e: RunStatus.SUCCEEDED) -> list[Run]:
    """The history after the pass: cancels applied, each enqueued run ended with `outcome`."""
    cancelled = {c.run for c in plan.cancel}
    after = [replace(r, status=RunStatus.CANCELLED) if r.id in cancelled else r for r in runs]
    next_id = max((r.id for r in runs), default=0) + 1
    for i, e in enumerate(plan.enqueue):
        after.append(
            Run(
                id=next_id + i,
                task=e.task,
                machine=e.machine,
                version=e.version,
                priority=e.priority,
                status=outcome(e),
                reason=e.reason.value,
                slot=e.slot,
                created_at=NOW + timedelta(seconds=i),
            )
        )
    return after


@PROPERTY
@given(worlds(), st.integers(0, 2**32))
def test_plans_are_deterministic_whatever_the_input_order(world, seed):
    desired, runs = world
    plan = make_plan(desired, ExecutedState.of(runs), NOW)
    desired2, runs2 = shuffled(desired, runs, seed)
    assert make_plan(desired2, ExecutedState.of(runs2), NOW) == plan
    assert make_plan(desired, ExecutedState.of(runs), NOW) == plan


@PROPERTY
@given(worlds())
def test_after_every_enqueued_run_succeeds_a_replan_is_empty_but_for_drift(world):
    desired, runs = world
    plan = make_plan(desired, ExecutedState.of(runs), NOW)
    replan = make_plan(desired, ExecutedState.of(apply(plan, runs)), NOW)
    assert replan.cancel == ()
    for e in replan.enqueue:
        assert e.reason is Reason.DRIFT and desired.tasks[e.task].check, e


@PROPERTY
@given(worlds())
def test_a_plan_never_enqueues_twice_where_a_run_is_active(world):
    desired, runs = world
    plan = make_plan(desired, ExecutedState.of(runs), NOW)
    cancelled = {c.run for c in plan.cancel}
    active = {
        (r.task, r.machine, r.version) for r in runs if r.status.is_active and r.id not in cancelled
    }
    keys = [(e.task, e.machine, e.version) for e in plan.enqueue]
    assert len(keys) == len(set(keys)) and not active & set(keys)


@PROPERTY
@given(worlds(), st.data())
def test_no_run_starts_before_its_after_dependencies_succeeded(world, data):
    desired, runs = world
    plan = make_plan(desired, ExecutedState.of(runs), NOW)
    history = {r.id: r for r in apply(plan, runs, outcome=lambda e: RunStatus.PENDING)}
    running = [r for r in history.values() if r.status is RunStatus.RUNNING]  # never end here
    for _ in range(100):
        executed = ExecutedState.of(history.values())
        pending = [r for r in history.values() if r.status is RunStatus.PENDING]
        decision = decide(pending, running, desired, executed, NOW, concurrency=3)
        for started in decision.start:
            assert_dependencies_succeeded(started, desired, executed)
            ended = data.draw(st.sampled_from([RunStatus.SUCCEEDED, RunStatus.FAILED]))
            history[started.id] = replace(started, status=ended)
        for blocked, _why in decision.block:
            history[blocked.id] = replace(blocked, status=RunStatus.BLOCKED)
        if not decision.start and not decision.block:
            break


def assert_dependencies_succeeded(
    started: Run, desired: DesiredState, executed: ExecutedState
) -> None:
    for dep in desired.tasks[started.task].after:
        scoped, last = dependency_run(dep, started.machine, desired, executed)
        if scoped:
            assert last is not None and last.status.is_success, (started, dep, last)
        else:
            assert last is None or last.status.is_success, (started, dep, last)
        assert not any(
            r.status.is_active and r.task == dep and (r.machine == started.machine or not scoped)
            for r in executed.active
        ), (started, dep)
