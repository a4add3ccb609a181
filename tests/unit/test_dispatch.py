"""dispatch.decide: which pending runs start now (SPEC §3)."""

from reconciler.core.dispatch import Decision, decide, dispatch_order
from reconciler.core.holds import Hold, HoldKind
from reconciler.core.model import Strategy, Window
from reconciler.core.state import RunStatus
from tests.support.plan_fixtures import NOW, desired, executed, machine, minutes, run, spec

S = RunStatus


def pend(run_id, task, m="m1", **fields):
    return run(run_id, task, m, status=S.PENDING, **fields)


def running(run_id, task, m="m1", **fields):
    return run(run_id, task, m, status=S.RUNNING, **fields)


def started(decision: Decision) -> list[int]:
    return [r.id for r in decision.start]


def go(pending, d, *, active_running=(), history=(), concurrency=16):
    e = executed(*history, *pending, *active_running)
    return decide(pending, list(active_running), d, e, NOW, concurrency)


# --- order -------------------------------------------------------------------------------------


def test_runs_are_taken_priority_1_first_then_oldest_first():
    d = desired(
        spec("prod/low", priority=3, targets=["m1", "m2", "m3"]),
        spec("prod/high", priority=1, targets=["m4"]),
    )
    pending = [
        pend(1, "prod/low", "m1", created_at=NOW - minutes(30)),
        pend(2, "prod/low", "m2", created_at=NOW - minutes(50)),
        pend(3, "prod/high", "m4", created_at=NOW - minutes(1)),
        pend(4, "prod/low", "m3", created_at=NOW - minutes(30)),
    ]
    assert started(go(pending, d, concurrency=3)) == [3, 2, 1]


def test_current_task_priority_orders_queued_runs():
    # A priority raised in git applies to runs already queued (no new version needed).
    d = desired(
        spec("prod/a", priority=1, targets=["m1"]), spec("prod/b", priority=2, targets=["m2"])
    )
    pending = [pend(1, "prod/b", "m2", priority=1), pend(2, "prod/a", "m1", priority=5)]
    assert [r.id for r in dispatch_order(pending, d)] == [2, 1]


def test_dependency_inherits_the_priority_of_its_waiting_dependent():
    d = desired(
        spec("prod/backup", priority=5, targets=["m1"]),
        spec("prod/deploy", priority=1, after=["prod/backup"], targets=["m1"]),
        spec("prod/other", priority=2, targets=["m2"]),
    )
    pending = [pend(1, "prod/other", "m2"), pend(2, "prod/backup"), pend(3, "prod/deploy")]
    assert started(go(pending, d, concurrency=1)) == [2]


def test_decision_does_not_depend_on_input_order():
    d = desired(spec("prod/a", targets=["m1", "m2"]), spec("prod/b", targets=["m1", "m2"]))
    pending = [
        pend(i, t, m)
        for i, (t, m) in enumerate(
            [("prod/a", "m1"), ("prod/b", "m1"), ("prod/a", "m2"), ("prod/b", "m2")], 1
        )
    ]
    assert go(pending, d) == go(list(reversed(pending)), d)


# --- capacity ----------------------------------------------------------------------------------


def test_max_parallel_limits_runs_per_machine_counting_running_ones():
    d = desired(
        spec("prod/a"),
        spec("prod/b"),
        spec("prod/c"),
        spec("prod/r"),
        machines=[machine("m1", max_parallel=2)],
    )
    pending = [pend(1, "prod/a"), pend(2, "prod/b"), pend(3, "prod/c")]
    assert started(go(pending, d)) == [1, 2]
    assert started(go(pending, d, active_running=[running(9, "prod/r")])) == [1]


def test_concurrency_limits_runs_in_total_counting_running_ones():
    d = desired(spec("prod/a", targets=["m1", "m2", "m3", "m4"]), spec("prod/r", targets=["m9"]))
    pending = [pend(i, "prod/a", f"m{i}") for i in (1, 2, 3, 4)]
    assert started(go(pending, d, concurrency=3)) == [1, 2, 3]
    assert started(go(pending, d, concurrency=3, active_running=[running(9, "prod/r", "m9")])) == [
        1,
        2,
    ]


def test_one_run_of_a_task_per_machine_at_a_time():
    d = desired(spec("prod/a", schedule="*/5 * * * *"), machines=[machine("m1", max_parallel=4)])
    pending = [pend(2, "prod/a")]
    assert started(go(pending, d, active_running=[running(1, "prod/a")])) == []


# --- held --------------------------------------------------------------------------------------


def test_run_with_future_not_before_is_held_until_then():
    d = desired(spec("prod/a"))
    later = NOW + minutes(2)
    decision = go([pend(1, "prod/a", not_before=later, attempt=2)], d)
    assert decision == Decision(
        start=(), block=(), held=((decision.held[0][0], Hold(HoldKind.RETRY, later)),)
    )


def test_run_whose_not_before_passed_starts():
    d = desired(spec("prod/a"))
    assert started(go([pend(1, "prod/a", not_before=NOW)], d)) == [1]


def test_run_inside_deny_window_is_held_until_it_ends_except_priority_1():
    window = Window(deny="0 8 * * *", duration=10 * 3600)
    d = desired(
        spec("prod/low", priority=2),
        spec("prod/urgent", priority=1),
        machines=[machine("m1", max_parallel=2, windows=[window])],
    )
    decision = go([pend(1, "prod/low"), pend(2, "prod/urgent")], d)
    assert started(decision) == [2]
    assert [(r.id, h.until) for r, h in decision.held] == [(1, NOW.replace(hour=18, minute=0))]


def test_retry_delay_ending_inside_a_window_is_held_to_the_window_end():
    window = Window(deny="30 10 * * *", duration=3600)  # 10:30-11:30; NOW is 10:20
    d = desired(spec("prod/a"), team_windows=[window])
    decision = go([pend(1, "prod/a", not_before=NOW + minutes(15))], d)
    assert [h.until for _, h in decision.held] == [NOW.replace(hour=11, minute=30)]


# --- after -------------------------------------------------------------------------------------


def test_dependent_waits_while_its_dependency_is_pending_or_running():
    d = desired(
        spec("prod/db"),
        spec("prod/web", after=["prod/db"]),
        machines=[machine("m1", max_parallel=4)],
    )
    assert started(go([pend(1, "prod/db"), pend(2, "prod/web")], d)) == [1]
    decision = go([pend(2, "prod/web")], d, active_running=[running(1, "prod/db")])
    assert decision == Decision()


def test_dependent_starts_once_its_dependency_succeeded():
    d = desired(spec("prod/db"), spec("prod/web", after=["prod/db"]))
    decision = go([pend(2, "prod/web")], d, history=[run(1, "prod/db", status=S.SUCCEEDED)])
    assert started(decision) == [2]


def test_skipped_dependency_counts_as_success():
    d = desired(spec("prod/db"), spec("prod/web", after=["prod/db"]))
    assert started(go([pend(2, "prod/web")], d, history=[run(1, "prod/db", status=S.SKIPPED)])) == [
        2
    ]


def test_dependent_is_blocked_when_its_dependency_failed():
    d = desired(
        spec("prod/backup-db", targets=["prod-01"]),
        spec("prod/web", after=["prod/backup-db"], targets=["prod-01"]),
    )
    decision = go(
        [pend(13, "prod/web", "prod-01")],
        d,
        history=[run(12, "prod/backup-db", "prod-01", status=S.FAILED)],
    )
    assert [(r.id, why) for r, why in decision.block] == [
        (13, "dependency prod/backup-db failed on prod-01 (run 12)")
    ]
    assert decision.start == ()


def test_dependent_is_blocked_by_blocked_unknown_or_cancelled_dependency():
    d = desired(spec("prod/db"), spec("prod/web", after=["prod/db"]))
    for status, words in [
        (S.BLOCKED, "was blocked"),
        (S.UNKNOWN, "ended unknown"),
        (S.CANCELLED, "was cancelled"),
    ]:
        decision = go([pend(2, "prod/web")], d, history=[run(1, "prod/db", status=status)])
        assert decision.block[0][1] == f"dependency prod/db {words} on m1 (run 1)"


def test_dependency_targeting_the_machine_that_never_ran_there_blocks():
    d = desired(spec("prod/db", targets=["m1", "m2"]), spec("prod/web", after=["prod/db"]))
    decision = go([pend(2, "prod/web")], d, history=[run(1, "prod/db", "m2")])
    assert decision.block[0][1] == "dependency prod/db has not succeeded on m1"


def test_dependency_not_targeting_the_machine_is_judged_by_its_newest_run_anywhere():
    d = desired(spec("prod/db", targets=["m2"]), spec("prod/web", after=["prod/db"]))
    assert started(go([pend(5, "prod/web")], d)) == [5]  # never ran, not here: fine
    assert started(go([pend(5, "prod/web")], d, history=[run(1, "prod/db", "m2")])) == [5]
    blocked = go([pend(5, "prod/web")], d, history=[run(1, "prod/db", "m2", status=S.FAILED)])
    assert blocked.block[0][1] == "dependency prod/db failed on m2 (run 1)"
    waiting = go([pend(5, "prod/web")], d, active_running=[running(1, "prod/db", "m2")])
    assert waiting == Decision()


def test_strategy_one_dependency_is_satisfied_by_its_run_on_any_machine():
    d = desired(
        spec("prod/db", targets=["m1", "m2"], strategy=Strategy.ONE),
        spec("prod/web", targets=["m1"], after=["prod/db"]),
    )
    assert started(go([pend(5, "prod/web")], d, history=[run(1, "prod/db", "m2")])) == [5]


def test_dependent_waits_for_a_dependency_retry_instead_of_blocking():
    d = desired(
        spec("prod/db"),
        spec("prod/web", after=["prod/db"]),
        machines=[machine("m1", max_parallel=2)],
    )
    retrying = pend(1, "prod/db", attempt=2, not_before=NOW + minutes(1))
    decision = go([retrying, pend(2, "prod/web")], d)
    assert decision.block == () and decision.start == ()
    assert [r.id for r, _ in decision.held] == [1]


def test_failed_dependency_blocks_even_inside_a_deny_window():
    window = Window(deny="0 8 * * *", duration=10 * 3600)
    d = desired(spec("prod/db"), spec("prod/web", after=["prod/db"]), team_windows=[window])
    decision = go([pend(2, "prod/web")], d, history=[run(1, "prod/db", status=S.FAILED)])
    assert len(decision.block) == 1 and decision.held == ()


def test_pending_run_of_removed_task_is_neither_started_nor_blocked():
    d = desired(spec("prod/a"))
    decision = go([pend(1, "prod/gone"), pend(2, "prod/a", version="old")], d)
    assert decision == Decision()


def test_only_the_current_version_of_a_dependency_counts():
    # v2 of the dependency failed, then git reverted it to v1, which had succeeded.
    d = desired(spec("prod/db", version="v1"), spec("prod/web", after=["prod/db"]))
    history = [run(1, "prod/db", version="v1"), run(2, "prod/db", version="v2", status=S.FAILED)]
    assert started(go([pend(3, "prod/web")], d, history=history)) == [3]


def test_a_dependency_of_a_priority_1_run_is_not_held_by_its_own_deny_window():
    window = Window("* * * * *", 3600)  # covers every instant
    d = desired(
        spec("prod/backup", priority=3),
        spec("prod/urgent", priority=1, after=["prod/backup"]),
        team_windows=[window],
    )
    decision = decide([pend(1, "prod/backup"), pend(2, "prod/urgent")], [], d, executed(), NOW, 16)
    assert [r.id for r in decision.start] == [1] and decision.held == ()


def test_a_priority_3_run_alone_is_held_by_the_window():
    window = Window("* * * * *", 3600)
    d = desired(spec("prod/backup", priority=3), team_windows=[window])
    decision = decide([pend(1, "prod/backup")], [], d, executed(), NOW, 16)
    assert decision.start == () and [r.id for r, _ in decision.held] == [1]
