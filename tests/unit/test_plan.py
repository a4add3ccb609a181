"""make_plan: one test per planning rule of SPEC §1-§2."""

import pytest

from reconciler.core.model import Strategy, Window
from reconciler.core.plan import Cancel, Plan, Reslot, make_plan
from reconciler.core.state import RunStatus
from tests.support.plan_fixtures import NOW, desired, executed, machine, minutes, pairs, run, spec

S = RunStatus
EVERY_15 = "*/15 * * * *"  # NOW is 10:20, so the due slot is 10:15
SLOT = "2026-11-29T10:15:00Z"


# --- once tasks --------------------------------------------------------------------------------


def test_new_task_is_enqueued_with_reason_new():
    plan = make_plan(desired(spec("prod/a")), executed(), NOW)
    assert pairs(plan) == [("prod/a", "m1", "new")]
    assert plan.enqueue[0].version == "v1" and plan.enqueue[0].slot is None


def test_succeeded_once_task_enqueues_nothing():
    assert make_plan(desired(spec("prod/a")), executed(run(1, "prod/a")), NOW).is_empty


def test_skipped_once_task_without_check_enqueues_nothing():
    assert make_plan(
        desired(spec("prod/a")), executed(run(1, "prod/a", status=S.SKIPPED)), NOW
    ).is_empty


def test_changed_version_enqueues_with_reason_changed():
    plan = make_plan(desired(spec("prod/a", version="v2")), executed(run(1, "prod/a")), NOW)
    assert pairs(plan) == [("prod/a", "m1", "changed")]
    assert plan.enqueue[0].version == "v2"


def test_changed_priority_enqueues_nothing():
    # Priority is not part of the version: raising it must not re-run the task.
    plan = make_plan(
        desired(spec("prod/a", priority=1)), executed(run(1, "prod/a", priority=3)), NOW
    )
    assert plan.is_empty


def test_new_target_machine_enqueues_only_there_with_reason_new_target():
    plan = make_plan(
        desired(spec("prod/a", targets=["m1", "m2"])), executed(run(1, "prod/a", "m1")), NOW
    )
    assert pairs(plan) == [("prod/a", "m2", "new-target")]


def test_active_run_of_the_version_enqueues_nothing():
    for status in (S.PENDING, S.RUNNING):
        assert make_plan(
            desired(spec("prod/a")), executed(run(1, "prod/a", status=status)), NOW
        ).is_empty


def test_failed_once_run_is_not_rerun_until_version_changes():
    failed = executed(run(1, "prod/a", status=S.FAILED))
    assert make_plan(desired(spec("prod/a")), failed, NOW).is_empty
    assert pairs(make_plan(desired(spec("prod/a", version="v2")), failed, NOW)) == [
        ("prod/a", "m1", "changed")
    ]


def test_failed_run_with_retry_requested_is_enqueued_with_reason_retry():
    plan = make_plan(
        desired(spec("prod/a")),
        executed(run(1, "prod/a", status=S.FAILED, retry_requested=True)),
        NOW,
    )
    assert pairs(plan) == [("prod/a", "m1", "retry")]


def test_unknown_run_is_left_alone_unless_task_is_idempotent():
    unknown = executed(run(1, "prod/a", status=S.UNKNOWN))
    assert make_plan(desired(spec("prod/a")), unknown, NOW).is_empty
    assert pairs(make_plan(desired(spec("prod/a", idempotent=True)), unknown, NOW)) == [
        ("prod/a", "m1", "retry")
    ]


def test_unknown_run_with_retry_requested_is_retried():
    plan = make_plan(
        desired(spec("prod/a")),
        executed(run(1, "prod/a", status=S.UNKNOWN, retry_requested=True)),
        NOW,
    )
    assert pairs(plan) == [("prod/a", "m1", "retry")]


def test_cancelled_run_is_enqueued_again_with_its_original_reason():
    plan = make_plan(
        desired(spec("prod/a", version="v2")),
        executed(
            run(1, "prod/a"), run(2, "prod/a", version="v2", status=S.CANCELLED, reason="changed")
        ),
        NOW,
    )
    assert pairs(plan) == [("prod/a", "m1", "changed")]


def test_cancelled_first_run_of_a_new_task_is_enqueued_again_as_new():
    plan = make_plan(
        desired(spec("prod/a")), executed(run(1, "prod/a", status=S.CANCELLED, reason="new")), NOW
    )
    assert pairs(plan) == [("prod/a", "m1", "new")]


def test_succeeded_check_task_is_rechecked_every_pass_as_drift():
    plan = make_plan(
        desired(spec("prod/a", check="test -f /ok")),
        executed(run(1, "prod/a", status=S.SKIPPED)),
        NOW,
    )
    assert pairs(plan) == [("prod/a", "m1", "drift")]


def test_check_task_with_active_run_is_not_enqueued_twice():
    plan = make_plan(
        desired(spec("prod/a", check="test -f /ok")),
        executed(run(1, "prod/a"), run(2, "prod/a", status=S.PENDING)),
        NOW,
    )
    assert plan.is_empty


def test_failed_check_task_is_not_rechecked():
    plan = make_plan(
        desired(spec("prod/a", check="test -f /ok")),
        executed(run(1, "prod/a", status=S.FAILED)),
        NOW,
    )
    assert plan.is_empty


# --- blocked runs and after --------------------------------------------------------------------


def test_blocked_run_stays_blocked_while_its_dependency_failed():
    d = desired(spec("prod/db"), spec("prod/web", after=["prod/db"]))
    e = executed(run(1, "prod/db", status=S.FAILED), run(2, "prod/web", status=S.BLOCKED))
    assert make_plan(d, e, NOW).is_empty


def test_retry_requested_blocked_dependent_reenqueued_with_dependency():
    # `queue retry` of the failed dependency: the dependency and its blocked dependent come
    # back in the same plan, the dependency first.
    d = desired(spec("prod/db", priority=4), spec("prod/web", priority=1, after=["prod/db"]))
    e = executed(
        run(1, "prod/db", status=S.FAILED, retry_requested=True),
        run(2, "prod/web", status=S.BLOCKED),
    )
    assert pairs(make_plan(d, e, NOW)) == [("prod/db", "m1", "retry"), ("prod/web", "m1", "retry")]


def test_blocked_dependents_follow_a_retried_dependency_down_the_chain():
    d = desired(spec("prod/a"), spec("prod/b", after=["prod/a"]), spec("prod/c", after=["prod/b"]))
    e = executed(
        run(1, "prod/a", status=S.FAILED, retry_requested=True),
        run(2, "prod/b", status=S.BLOCKED),
        run(3, "prod/c", status=S.BLOCKED),
    )
    assert [t for t, _, _ in pairs(make_plan(d, e, NOW))] == ["prod/a", "prod/b", "prod/c"]


def test_blocked_run_is_retried_once_its_dependency_succeeded():
    d = desired(spec("prod/db"), spec("prod/web", after=["prod/db"]))
    e = executed(
        run(1, "prod/db", status=S.FAILED),
        run(2, "prod/web", status=S.BLOCKED),
        run(3, "prod/db", status=S.SUCCEEDED),
    )
    assert pairs(make_plan(d, e, NOW)) == [("prod/web", "m1", "retry")]


def test_blocked_run_is_retried_when_dependency_changes_version():
    d = desired(spec("prod/db", version="v2"), spec("prod/web", after=["prod/db"]))
    e = executed(run(1, "prod/db", status=S.FAILED), run(2, "prod/web", status=S.BLOCKED))
    assert pairs(make_plan(d, e, NOW)) == [
        ("prod/db", "m1", "changed"),
        ("prod/web", "m1", "retry"),
    ]


def test_blocked_run_with_retry_requested_is_retried_even_if_dependency_still_failed():
    d = desired(spec("prod/db"), spec("prod/web", after=["prod/db"]))
    e = executed(
        run(1, "prod/db", status=S.FAILED),
        run(2, "prod/web", status=S.BLOCKED, retry_requested=True),
    )
    assert pairs(make_plan(d, e, NOW)) == [("prod/web", "m1", "retry")]


def test_dependency_is_enqueued_before_its_dependent_even_with_lower_priority():
    d = desired(
        spec("prod/backup", priority=5),
        spec("prod/deploy", priority=1, after=["prod/backup"]),
        spec("prod/other", priority=2),
    )
    assert [t for t, _, _ in pairs(make_plan(d, executed(), NOW))] == [
        "prod/backup",
        "prod/deploy",
        "prod/other",
    ]


def test_enqueues_are_ordered_by_priority_then_task_then_machine():
    d = desired(
        spec("prod/b", priority=2, targets=["m2", "m1"]),
        spec("prod/a", priority=2),
        spec("prod/z", priority=1),
        spec("prod/c", priority=5),
    )
    assert [(t, m) for t, m, _ in pairs(make_plan(d, executed(), NOW))] == [
        ("prod/z", "m1"),
        ("prod/a", "m1"),
        ("prod/b", "m1"),
        ("prod/b", "m2"),
        ("prod/c", "m1"),
    ]


def test_enqueue_priority_is_the_task_priority():
    plan = make_plan(desired(spec("prod/a", priority=4)), executed(), NOW)
    assert plan.enqueue[0].priority == 4


# --- scheduled tasks ---------------------------------------------------------------------------


def test_new_scheduled_task_runs_its_latest_due_slot_at_once():
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), executed(), NOW)
    assert pairs(plan) == [("prod/s", "m1", "new")]
    assert plan.enqueue[0].slot == SLOT


def test_scheduled_task_enqueues_the_next_due_slot():
    e = executed(run(1, "prod/s", slot="2026-11-29T10:00:00Z"))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW)
    assert pairs(plan) == [("prod/s", "m1", "schedule")]
    assert plan.enqueue[0].slot == SLOT


def test_scheduled_slot_that_already_ran_enqueues_nothing_whatever_its_outcome():
    for status in (S.SUCCEEDED, S.FAILED, S.SKIPPED, S.UNKNOWN, S.CANCELLED):
        e = executed(run(1, "prod/s", status=status, slot=SLOT))
        assert make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW).is_empty, status


def test_missed_schedule_slots_collapse_into_one_run():
    # Last ran at 06:00; 17 slots were missed: one run, for the latest slot.
    e = executed(run(1, "prod/s", slot="2026-11-29T06:00:00Z"))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW)
    assert len(plan.enqueue) == 1 and plan.enqueue[0].slot == SLOT


def test_queued_scheduled_run_absorbs_later_slots_and_takes_the_latest():
    e = executed(run(1, "prod/s", status=S.PENDING, slot="2026-11-29T09:00:00Z"))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW)
    assert plan.is_empty and plan.reslot == (Reslot(1, SLOT),)


def test_a_scheduled_run_that_started_keeps_its_slot():
    started = NOW - minutes(30)
    for status in (S.RUNNING, S.PENDING):  # pending: waiting out a retry back-off
        e = executed(
            run(1, "prod/s", status=status, slot="2026-11-29T09:00:00Z", started_at=started)
        )
        plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW)
        assert plan.is_empty and plan.reslot == (), status


def test_a_waiting_run_of_its_latest_slot_or_of_an_old_version_is_not_reslotted():
    e = executed(
        run(1, "prod/s", status=S.PENDING, slot=SLOT),
        run(2, "prod/o", status=S.PENDING, slot="2026-11-29T09:00:00Z", version="v0"),
    )
    specs = desired(spec("prod/s", schedule=EVERY_15), spec("prod/o", schedule=EVERY_15))
    assert make_plan(specs, e, NOW).reslot == ()


def test_failed_scheduled_slot_with_retry_requested_is_retried_for_the_same_slot():
    e = executed(run(1, "prod/s", status=S.FAILED, slot=SLOT, retry_requested=True))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW)
    assert pairs(plan) == [("prod/s", "m1", "retry")] and plan.enqueue[0].slot == SLOT


def test_failed_scheduled_run_of_an_older_slot_runs_the_new_slot():
    e = executed(run(1, "prod/s", status=S.FAILED, slot="2026-11-29T10:00:00Z"))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW)
    assert pairs(plan) == [("prod/s", "m1", "schedule")]


def test_changed_scheduled_task_runs_now_even_if_the_slot_ran_with_the_old_version():
    e = executed(run(1, "prod/s", slot=SLOT))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15, version="v2")), e, NOW)
    assert pairs(plan) == [("prod/s", "m1", "changed")] and plan.enqueue[0].slot == SLOT


def test_scheduled_check_task_is_rechecked_between_slots_keeping_the_slot_that_ran():
    # SPEC §1: tasks with a check are re-checked at every pass (drift detection).
    e = executed(run(1, "prod/s", status=S.SKIPPED, slot=SLOT))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15, check="true")), e, NOW)
    assert pairs(plan) == [("prod/s", "m1", "drift")] and plan.enqueue[0].slot == SLOT


def test_scheduled_check_task_whose_slot_failed_is_not_rechecked():
    e = executed(run(1, "prod/s", status=S.FAILED, slot=SLOT))
    assert make_plan(desired(spec("prod/s", schedule=EVERY_15, check="true")), e, NOW).is_empty


def test_scheduled_task_without_check_follows_the_schedule_only():
    e = executed(run(1, "prod/s", status=S.SUCCEEDED, slot=SLOT))
    assert make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW).is_empty


def test_task_given_a_schedule_after_a_once_run_runs_its_due_slot():
    e = executed(run(1, "prod/s"))
    plan = make_plan(desired(spec("prod/s", schedule=EVERY_15)), e, NOW)
    assert pairs(plan) == [("prod/s", "m1", "schedule")]


# --- deny windows ------------------------------------------------------------------------------


def test_run_inside_deny_window_is_held_until_window_ends_except_priority_1():
    window = Window(deny="0 8 * * *", duration=10 * 3600)  # 08:00-18:00; NOW is 10:20
    d = desired(
        spec("prod/low", priority=3), spec("prod/urgent", priority=1), team_windows=[window]
    )
    held = {e.task: e.held_until for e in make_plan(d, executed(), NOW).enqueue}
    assert held == {"prod/urgent": None, "prod/low": NOW.replace(hour=18, minute=0)}


def test_machine_window_holds_only_runs_on_that_machine():
    window = Window(deny="0 10 * * *", duration=3600)
    d = desired(
        spec("prod/a", targets=["m1", "m2"]),
        machines=[machine("m1", windows=[window]), machine("m2")],
    )
    held = {e.machine: e.held_until for e in make_plan(d, executed(), NOW).enqueue}
    assert held == {"m1": NOW.replace(hour=11, minute=0), "m2": None}


# --- cancels -----------------------------------------------------------------------------------


def test_pending_run_of_removed_task_is_cancelled():
    plan = make_plan(desired(), executed(run(7, "prod/gone", status=S.PENDING)), NOW)
    assert plan == Plan((), (Cancel(7, "prod/gone", "m1", "removed"),), freezes=())


def test_running_run_is_never_cancelled():
    assert make_plan(desired(), executed(run(7, "prod/gone", status=S.RUNNING)), NOW).is_empty


def test_pending_run_on_a_machine_no_longer_targeted_is_cancelled():
    d = desired(spec("prod/a", targets=["m2"]))
    plan = make_plan(
        d, executed(run(3, "prod/a", "m1", status=S.PENDING), run(4, "prod/a", "m2")), NOW
    )
    assert [c.to_json() for c in plan.cancel] == [
        {"run": 3, "task": "prod/a", "machine": "m1", "reason": "target-removed"}
    ]
    assert plan.enqueue == ()


def test_pending_run_of_an_old_version_is_cancelled_and_the_new_version_enqueued():
    plan = make_plan(
        desired(spec("prod/a", version="v2")), executed(run(5, "prod/a", status=S.PENDING)), NOW
    )
    assert [(c.run, c.reason) for c in plan.cancel] == [(5, "changed")]
    assert pairs(plan) == [("prod/a", "m1", "changed")]


def test_cancels_are_sorted_by_run_id():
    e = executed(
        run(9, "prod/x", status=S.PENDING),
        run(2, "prod/y", status=S.PENDING),
        run(5, "prod/z", status=S.PENDING),
    )
    assert [c.run for c in make_plan(desired(), e, NOW).cancel] == [2, 5, 9]


# --- strategy one ------------------------------------------------------------------------------


def test_strategy_one_picks_the_least_loaded_target_ties_by_name():
    d = desired(
        spec("prod/one", targets=["m1", "m2", "m3"], strategy=Strategy.ONE),
        spec("prod/busy", targets=["m1"]),
    )
    e = executed(run(1, "prod/busy", "m1", status=S.PENDING))
    assert pairs(make_plan(d, e, NOW)) == [("prod/one", "m2", "new")]


def test_strategy_one_task_that_succeeded_somewhere_is_done():
    d = desired(spec("prod/one", targets=["m1", "m2"], strategy=Strategy.ONE))
    assert make_plan(d, executed(run(1, "prod/one", "m2")), NOW).is_empty


def test_strategy_one_failed_run_does_not_hop_to_another_machine():
    d = desired(spec("prod/one", targets=["m1", "m2"], strategy=Strategy.ONE))
    assert make_plan(d, executed(run(1, "prod/one", "m1", status=S.FAILED)), NOW).is_empty


def test_strategy_one_pending_run_on_any_target_is_kept():
    d = desired(spec("prod/one", targets=["m1", "m2"], strategy=Strategy.ONE))
    assert make_plan(d, executed(run(1, "prod/one", "m2", status=S.PENDING)), NOW).is_empty


# --- purity ------------------------------------------------------------------------------------


def test_plan_is_a_value_and_equal_for_equal_inputs():
    d = desired(spec("prod/a"), spec("prod/b", targets=["m1", "m2"], after=["prod/a"]))
    e = executed(run(1, "prod/a", status=S.FAILED))
    assert make_plan(d, e, NOW) == make_plan(d, e, NOW)


def test_naive_now_is_refused():
    with pytest.raises(ValueError):
        make_plan(desired(spec("prod/a")), executed(), NOW.replace(tzinfo=None))


def test_plan_json_has_the_documented_shape():
    plan = make_plan(desired(spec("prod/a")), executed(run(3, "prod/gone", status=S.PENDING)), NOW)
    assert plan.to_json() == {
        "enqueue": [{"task": "prod/a", "machine": "m1", "priority": 3, "reason": "new"}],
        "cancel": [{"run": 3, "task": "prod/gone", "machine": "m1", "reason": "removed"}],
    }


def test_blocked_run_is_retried_when_dependency_is_reverted_to_a_version_that_succeeded():
    d = desired(spec("prod/db", version="v1"), spec("prod/web", after=["prod/db"]))
    e = executed(
        run(1, "prod/db", version="v1"),
        run(2, "prod/db", version="v2", status=S.FAILED),
        run(3, "prod/web", status=S.BLOCKED),
    )
    assert pairs(make_plan(d, e, NOW)) == [("prod/web", "m1", "retry")]


# --- a schedule that cannot be evaluated stops nothing else --------------------------------------


@pytest.mark.parametrize("schedule", ["0 0 31 2 *", "@daily ", "not cron at all", "R R R R R"])
def test_a_schedule_with_no_due_slot_plans_nothing_for_its_task_and_the_rest_as_usual(schedule):
    # Validation refuses these; should one reach the planner, only its own task is affected.
    plan = make_plan(
        desired(spec("prod/odd", schedule=schedule), spec("prod/other")), executed(), NOW
    )
    assert ("prod/other", "m1", "new") in pairs(plan)
    assert all(
        t != "prod/odd" or schedule == "@daily " for t, _, _ in pairs(plan)
    )  # a stray space is forgiven here


@pytest.mark.parametrize("deny", ["0 0 31 2 *", "not cron", "@hourly "])
def test_a_deny_window_that_cannot_be_evaluated_does_not_stop_the_plan(deny):
    plan = make_plan(desired(spec("prod/a"), team_windows=[Window(deny, 3600)]), executed(), NOW)
    assert pairs(plan) == [("prod/a", "m1", "new")]


# --- queue retry: which run to flag -----------------------------------------------------------


def test_retry_of_the_latest_failed_run_flags_it():
    from reconciler.core.plan import retry_target

    failed = run(1, "prod/a", status=S.FAILED)
    assert retry_target(failed, spec("prod/a"), executed(failed)) == (failed, "")


def test_retry_of_an_older_failed_run_moves_to_the_latest_that_failed_too():
    from reconciler.core.plan import retry_target

    old, new = run(1, "prod/a", status=S.FAILED), run(2, "prod/a", status=S.FAILED)
    target, why = retry_target(old, spec("prod/a"), executed(old, new))
    assert target == new and "retrying run 2" in why


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.SKIPPED, S.PENDING, S.RUNNING])
def test_retry_of_an_older_run_after_a_later_one_succeeded_or_is_queued_is_refused(status):
    from reconciler.core.plan import retry_target

    old, new = run(1, "prod/a", status=S.FAILED), run(2, "prod/a", status=status)
    target, why = retry_target(old, spec("prod/a"), executed(old, new))
    assert target is None and "run 2" in why


def test_strategy_one_prefers_a_target_outside_a_deny_window():
    held_box = machine("m1", windows=[Window("* * * * *", 3600)])
    d = desired(spec("prod/a", targets=("m1", "m2"), strategy=Strategy.ONE), machines=[held_box])
    plan = make_plan(d, executed(), NOW)
    assert pairs(plan) == [("prod/a", "m2", "new")] and plan.enqueue[0].held_until is None


def test_a_dependency_enqueued_with_a_priority_1_dependent_is_not_shown_held():
    d = desired(
        spec("prod/backup", priority=3),
        spec("prod/urgent", priority=1, after=["prod/backup"]),
        team_windows=[Window("* * * * *", 3600)],
    )
    plan = make_plan(d, executed(), NOW)
    assert [(e.task, e.held_until) for e in plan.enqueue] == [
        ("prod/backup", None),
        ("prod/urgent", None),
    ]
