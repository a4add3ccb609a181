"""dispatch.fill: the runs that start when only capacity changed must be exactly those a whole
`decide` would start, so the engine may skip re-deciding the queue (issue 13)."""

import random
from dataclasses import replace

from reconciler.core.dispatch import decide, fill, release
from reconciler.core.model import Window
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
            got, still, opened = fill(first.waiting, running, d, NOW, concurrency)
            assert not opened
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
    got, still, _ = fill(decision.waiting, [], d, NOW, 1)
    assert [r.id for r in got] == [2] and [r.id for r, _ in still] == [3]


def test_fill_does_not_start_a_run_a_deny_window_opened_on_since_the_decision():
    window = Window(deny="0 8 * * *", duration=3600)
    d = desired(
        spec("prod/a", priority=2, targets=["m1"]),
        spec("prod/b", priority=2, targets=["m1"]),
        machines=[machine("m1", windows=[window])],
    )
    before = NOW.replace(hour=7, minute=59)
    pending = [
        run(i, task, "m1", status=S.PENDING, created_at=before - minutes(5 - i))
        for i, task in ((1, "prod/a"), (2, "prod/b"))
    ]
    decision = decide(pending, [], d, executed(*pending), before, 1)
    assert [r.id for r in decision.start] == [1] and decision.held == ()
    # Run 1 ended; the window opened meanwhile: run 2 must wait, and the caller must decide.
    got, still, opened = fill(decision.waiting, [], d, NOW.replace(hour=8, minute=1), 1)
    assert got == () and [r.id for r, _ in still] == [2] and opened


def test_fill_passes_over_the_runs_of_a_full_machine_without_judging_their_holds():
    """The runs of busy machines a round passes over grow with the queue (issue 13 row c:
    10,000 runs took more than twice 5,000): a run that could not start anyway is left
    waiting as it is, so a window on its machine is no reason to decide again either."""
    window = Window(deny="0 8 * * *", duration=3600)
    d = desired(
        spec("prod/a", priority=2, targets=["m1", "m2"]),
        spec("prod/b", priority=2, targets=["m1", "m2"]),
        machines=[machine("m1", windows=[window]), machine("m2")],
    )
    before = NOW.replace(hour=7, minute=59)
    pending = [
        run(i, task, m, status=S.PENDING, created_at=before - minutes(9 - i))
        for i, (task, m) in enumerate(
            (("prod/a", "m1"), ("prod/b", "m1"), ("prod/a", "m2"), ("prod/b", "m2")), start=1
        )
    ]
    decision = decide(pending, [], d, executed(*pending), before, 2)
    assert [r.id for r in decision.start] == [1, 3]
    # Run 3 ended once m1's window opened; m1 still runs run 1: run 2 could not start anyway.
    running = [r for r in decision.start if r.id == 1]
    got, still, opened = fill(decision.waiting, running, d, NOW.replace(hour=8, minute=1), 2)
    assert [r.id for r in got] == [4] and [r.id for r, _ in still] == [2] and not opened


def _chained_queue(rnd: random.Random):
    """Tasks over a few machines where most tasks run `after` an earlier one, each task
    queued once per machine it targets."""
    names = [f"m{i}" for i in range(rnd.randint(1, 4))]
    specs = []
    for i in range(rnd.randint(3, 14)):
        after = [f"prod/t{rnd.randrange(i)}"] if i and rnd.random() < 0.6 else []
        specs.append(spec(f"prod/t{i}", priority=rnd.randint(1, 5), targets=names, after=after))
    d = desired(*specs, machines=[machine(n, max_parallel=rnd.randint(1, 3)) for n in names])
    pending = [
        run(
            len(specs) * m + i + 1,
            s.id,
            name,
            status=S.PENDING,
            created_at=NOW - minutes(rnd.randint(0, 500)),
        )
        for m, name in enumerate(names)
        for i, s in enumerate(specs)
    ]
    return d, pending


def test_release_after_dependencies_succeed_starts_what_a_whole_decision_would():
    for seed in range(60):
        rnd = random.Random(seed)
        d, pending = _chained_queue(rnd)
        concurrency = rnd.randint(1, 6)
        decision = decide(pending, [], d, executed(*pending), NOW, concurrency)
        running, succeeded = list(decision.start), []
        left = [r for r in pending if r not in running]
        while running:
            ended = rnd.sample(running, k=rnd.randint(1, len(running)))
            succeeded += [replace(r, status=S.SUCCEEDED) for r in ended]
            running = [r for r in running if r not in ended]
            state = executed(*succeeded, *left, *running)
            wanted = decide(left, running, d, state, NOW, concurrency)
            tasks = {r.task for r in ended}
            released = release(decision, tasks, [*left, *running], d, state, NOW)
            assert released is not None, seed
            got, still, opened = fill(released.waiting, running, d, NOW, concurrency)
            assert not opened
            assert [r.id for r in got] == [r.id for r in wanted.start], seed
            assert [r.id for r, _ in still] == [r.id for r, _ in wanted.waiting], seed
            assert sorted(r.id for r, _ in released.awaiting) == sorted(
                r.id for r, _ in wanted.awaiting
            ), seed
            decision = replace(released, waiting=still)
            running += list(got)
            left = [r for r in left if r not in got]
        assert not left, seed  # every run started in the end


def test_release_asks_for_a_whole_decision_when_a_freed_run_is_held():
    window = Window(deny="0 8 * * *", duration=3600)
    d = desired(
        spec("prod/db", targets=["m1"]),
        spec("prod/web", priority=2, targets=["m1"], after=["prod/db"]),
        machines=[machine("m1", max_parallel=2, windows=[window])],
    )
    before = NOW.replace(hour=7, minute=59)
    db = run(1, "prod/db", "m1", status=S.RUNNING)
    web = run(2, "prod/web", "m1", status=S.PENDING)
    decision = decide([web], [db], d, executed(db, web), before, 4)
    assert [r.id for r, _ in decision.awaiting] == [2] and decision.held == ()
    # The dependency succeeded once the window had opened: only a whole decision says so.
    done = replace(db, status=S.SUCCEEDED)
    inside = NOW.replace(hour=8, minute=1)
    assert release(decision, {"prod/db"}, [web], d, executed(done, web), inside) is None
    assert [r.id for r, _ in decide([web], [], d, executed(done, web), inside, 4).held] == [2]
