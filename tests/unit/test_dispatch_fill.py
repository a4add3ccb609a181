"""dispatch.fill: the runs that start when only capacity changed must be exactly those a whole
`decide` would start, so the engine may skip re-deciding the queue (issue 13)."""

import random

from reconciler.core.dispatch import decide, fill
from reconciler.core.state import RunStatus
from tests.support.plan_fixtures import NOW, desired, executed, machine, minutes, run, spec

S = RunStatus


def _queue(rnd: random.Random, machines: int, runs: int):
    names = [f"m{i}" for i in range(machines)]
    specs = [
        spec(f"prod/t{i}", priority=rnd.randint(1, 5), targets=names) for i in range(runs // 2)
    ]
    d = desired(*specs, machines=[machine(n, max_parallel=rnd.randint(1, 3)) for n in names])
    pending = [
        run(
            i,
            f"prod/t{rnd.randrange(len(specs))}",
            rnd.choice(names),
            status=S.PENDING,
            created_at=NOW - minutes(rnd.randint(0, 500)),
        )
        for i in range(1, runs + 1)
    ]
    return d, pending


def test_fill_after_runs_succeed_starts_what_a_whole_decision_would():
    for seed in range(40):
        rnd = random.Random(seed)
        d, pending = _queue(rnd, machines=rnd.randint(1, 6), runs=rnd.randint(5, 60))
        concurrency = rnd.randint(1, 8)
        first = decide(pending, [], d, executed(*pending), NOW, concurrency)
        running = list(first.start)
        left = [r for r in pending if r not in running]
        for _ in range(6):  # some runs end well: only capacity changed
            ended = rnd.sample(running, k=rnd.randint(0, len(running)))
            running = [r for r in running if r not in ended]
            wanted = decide(left, running, d, executed(*left, *running), NOW, concurrency)
            got, still = fill(first.waiting, running, d, concurrency)
            assert [r.id for r in got] == [r.id for r in wanted.start], seed
            assert [r.id for r, _ in still] == [r.id for r, _ in wanted.waiting], seed
            first = wanted
            running += list(got)
            left = [r for r in left if r not in got]


def test_fill_stops_at_the_concurrency_limit_and_keeps_the_rest_in_order():
    d = desired(
        spec("prod/a", targets=["m1", "m2", "m3"]),
        machines=[machine("m1"), machine("m2"), machine("m3")],
    )
    pending = [
        run(i, "prod/a", f"m{i}", status=S.PENDING, created_at=NOW - minutes(10 - i))
        for i in (1, 2, 3)
    ]
    decision = decide(pending, [], d, executed(*pending), NOW, 1)
    assert [r.id for r in decision.start] == [1]
    assert [r.id for r, _ in decision.waiting] == [2, 3]
    got, still = fill(decision.waiting, [], d, 1)
    assert [r.id for r in got] == [2] and [r.id for r, _ in still] == [3]
