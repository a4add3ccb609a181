"""What validate accepts, what a pass starts and what the other commands say about it agree.

Each test here reproduces a case of a pass that crashed, hung, starved work or said one thing
and did another (found by scenario testing through the CLI), on a scratch project with a
local machine and a SQLite store.
"""

from __future__ import annotations

import json
import sqlite3

import pytest


def _assert_refused(project, *fragments: str, args=("validate",)):
    """Exit 2, each fragment on stderr, no traceback, nothing ran, no store created."""
    result = project.run(*args, code=2)
    for fragment in fragments:
        assert fragment in result.err, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert project.ledger_lines() == []
    assert not project.state.exists()
    return result


# --- schedules that crashed every pass (issue 12, items 2 and 7) --------------------------------

NEVER_FIRES = "0 0 31 2 *"


@pytest.mark.parametrize("args", [("validate",), ("plan",), ("--once",)])
def test_a_task_schedule_that_never_fires_is_refused_located(project, args):
    project.task("good", f"command: {project.record('good')}\n")
    project.task("feb31", f"command: exit 0\nschedule: '{NEVER_FIRES}'\n")
    _assert_refused(project, "inventory/tasks/ops/feb31.yaml:4:11", "never fires", args=args)


@pytest.mark.parametrize("args", [("validate",), ("--once",)])
def test_a_deny_window_that_never_fires_is_refused_located(project, args):
    project.write(
        "teams/ops.yaml", f"name: ops\nwindows:\n  - deny: '{NEVER_FIRES}'\n    duration: 1h\n"
    )
    project.task("good", f"command: {project.record('good')}\n")
    _assert_refused(project, "inventory/teams/ops.yaml:3:11", "never fires", args=args)


@pytest.mark.parametrize("args", [("validate",), ("--once",)])
def test_a_schedule_with_a_stray_space_is_refused_located(project, args):
    project.task("daily", "command: exit 0\nschedule: '@daily '\n")
    project.write(
        "machines/box.yaml",
        "name: box\nteam: ops\ntransport: local\n"
        "windows:\n  - deny: ' @hourly'\n    duration: 5m\n",
    )
    result = _assert_refused(
        project,
        "inventory/tasks/ops/daily.yaml:4:11",
        "inventory/machines/box.yaml:5:11",
        "space",
        args=args,
    )
    assert len([item for item in result.err.splitlines() if item.startswith("error:")]) == 2, (
        result.err
    )


@pytest.mark.parametrize(
    "schedule, word",
    [
        ("R * * * *", "'R'"),  # croniter's random minute: a new one at every pass
        ("H * * * *", "'H'"),  # Jenkins' hashed minute
        ("0 0 L * *", "'L'"),  # Quartz' last day of the month
        ("0 0 * * 5#3", "'#'"),  # Quartz' n-th weekday
        ("0 0 ? * *", "'?'"),
        ("0 0 15W * *", "'W'"),
        ("* * * * * *", "6 fields"),  # a seconds field
        ("0 0 0 * * * *", "7 fields"),
        ("@reboot", "@reboot"),
        ("@every 5m", "@every"),
    ],
)
def test_only_standard_five_field_cron_and_the_documented_macros_are_accepted(
    project, schedule, word
):
    project.task("odd", f"command: exit 0\nschedule: '{schedule}'\n")
    _assert_refused(project, "inventory/tasks/ops/odd.yaml:4:11", word)


@pytest.mark.parametrize(
    "schedule",
    [
        "*/15 * * * *",
        "0 8-18/2 * * mon-fri",
        "5,35 0 1 jan,jul *",
        "0 0 29 2 *",
        "0 0 * * 7",
        "0 0 30 2 1",  # day 30 of February never comes, but every Monday in February does
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    ],
)
def test_standard_cron_and_the_documented_macros_still_validate(project, schedule):
    project.task("ok", f"command: exit 0\nschedule: '{schedule}'\n")
    project.run("validate", code=0)


# --- env names the reconciler sets (issue 12, item 6) --------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "RECONCILE_RUN_ID",
        "RECONCILE_TASK",
        "RECONCILE_MACHINE",
        "RECONCILE_ATTEMPT",
        "RECONCILE_VERSION",
        "RECONCILE_FUTURE",
    ],
)
@pytest.mark.parametrize("args", [("validate",), ("--once",)])
def test_env_may_not_set_a_name_the_reconciler_sets(project, name, args):
    project.task(
        "t",
        f"command: {project.record('t')}\nidempotent: true\nenv:\n  MODE: fast\n  {name}: '7'\n",
    )
    _assert_refused(project, "inventory/tasks/ops/t.yaml:7:3", f"'{name}' is reserved", args=args)


def test_every_name_the_executor_sets_is_one_validate_refuses():
    # The names a run gets come from the executor itself, so a new one cannot slip past.
    from reconciler.core.model import RetryPolicy, Strategy, TaskSpec
    from reconciler.core.state import Run, RunStatus
    from reconciler.inventory.loader import RESERVED_ENV_PREFIX
    from reconciler.pipeline.executor import run_environment

    spec = TaskSpec(
        id="ops/t",
        team="ops",
        name="t",
        run="true",
        check=None,
        env=(),
        priority=3,
        timeout=60,
        retry=RetryPolicy(),
        schedule=None,
        after=(),
        strategy=Strategy.ALL,
        targets=("box",),
        versions={"box": "v"},
    )
    run = Run(1, "ops/t", "box", "v", 3, RunStatus.RUNNING)
    names = set(run_environment(run, spec, lambda team, ref: None))
    assert names and all(n.startswith(RESERVED_ENV_PREFIX) for n in names)


def test_env_names_that_only_look_alike_are_fine(project):
    project.task("t", "command: exit 0\nenv: {reconcile_mode: x, MY_RECONCILE_RUN_ID: y}\n")
    project.run("validate", code=0)


# --- validate: every problem in one run, and a JSON verdict (issue 12 item 14, issue 18 item 3) ---


def _broken_everywhere(project):
    """One problem of each stage: schema, schedule, reference, cycle, cross-team target."""
    project.write("teams/web.yaml", "name: web\n")
    project.write("machines/front.yaml", "name: front\nteam: web\ntransport: local\n")
    project.task("typo", "prioritty: 2\ncommand: exit 0\n")  # schema
    project.task("cron", "command: exit 0\nschedule: '0 0 31 2 *'\n")  # schedule
    project.task("ref", "command: exit 0\nafter: [nothing-like-it]\n")  # reference
    project.task("a", "command: exit 0\nafter: [b]\n")  # cycle
    project.task("b", "command: exit 0\nafter: [a]\n")
    project.write("tasks/ops/cross.yaml", "name: cross\nmachines: [front]\ncommand: exit 0\n")


EVERY_PROBLEM = [
    ("inventory/tasks/ops/typo.yaml", 3, "unknown key 'prioritty'"),
    ("inventory/tasks/ops/cron.yaml", 4, "never fires"),
    ("inventory/tasks/ops/ref.yaml", 4, "unknown task 'nothing-like-it'"),
    ("inventory/tasks/ops/a.yaml", 4, "dependency cycle: ops/a -> ops/b -> ops/a"),
    ("inventory/tasks/ops/cross.yaml", 2, "machine 'front' of team 'web'"),
]


def test_validate_reports_schema_schedule_reference_cycle_and_target_errors_in_one_run(project):
    _broken_everywhere(project)
    result = _assert_refused(project)
    lines = [item for item in result.err.splitlines() if item.startswith("error:")]
    for path, line, words in EVERY_PROBLEM:
        assert any(item.startswith(f"error: {path}:{line}:") and words in item for item in lines), (
            path,
            words,
            result.err,
        )
    # Nothing else about the tasks (rules about machines may add their own lines).
    assert len([item for item in lines if "inventory/tasks/" in item]) == len(EVERY_PROBLEM), (
        result.err
    )


def test_a_reference_to_an_object_with_errors_of_its_own_is_not_called_unknown(project):
    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 0\n")
    project.task("base", "command: exit 0\npriority: 9\n")
    project.task("next", "command: exit 0\nafter: [base]\n")
    result = _assert_refused(project)
    assert "unknown" not in result.err, result.err
    assert "inventory/machines/box.yaml:4:" in result.err
    assert "inventory/tasks/ops/base.yaml:4:" in result.err


def test_validate_json_on_an_invalid_inventory_prints_the_verdict_with_every_problem_located(
    project,
):
    _broken_everywhere(project)
    project.write("stray.yaml", "a: 1\n")  # a warning
    result = _assert_refused(project, args=("validate", "--format", "json"))
    verdict = json.loads(result.out)
    assert verdict["valid"] is False
    found = {(e["path"], e["line"]) for e in verdict["errors"]}
    assert {(path, line) for path, line, _ in EVERY_PROBLEM} <= found, verdict
    for error in verdict["errors"]:
        assert error["column"] >= 1 and error["message"] and error["text"].startswith(error["path"])
    assert any("inventory/stray.yaml" in w for w in verdict["warnings"]), verdict


def test_validate_json_on_a_valid_inventory_has_no_errors(project):
    project.task("t", "command: exit 0\n")
    verdict = project.run("validate", "--format", "json", code=0).json()
    assert verdict["valid"] is True and verdict["errors"] == [] and verdict["tasks"] == 1


# --- trailing whitespace of shell text is not a change (issue 12, item 13) ----------------------


def _stored_versions(project) -> list[str]:
    with sqlite3.connect(project.state) as db:
        return [row[0] for row in db.execute("SELECT version FROM runs ORDER BY id")]


def _version_as_released_before(text: str, machine: str = "box", check=None) -> str:
    """A task's version as the release before this one computed it (the shell text hashed
    byte for byte): what existing stores hold."""
    import hashlib

    executes = {
        "run": text,
        "env": [],
        "check": check,
        "target": {"machine": machine, "transport": "local"},
    }
    canonical = json.dumps(executes, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_writing_a_command_as_a_block_or_with_trailing_blanks_reruns_nothing(project):
    line = project.record("ran")
    project.task("t", f"command: {line}\n")
    project.run("--once", code=0)
    assert project.ledger_lines() == ["ran"]
    for body in (
        f"command: |\n  {line}\n",
        f"command: |+\n  {line}\n\n\n",
        f"command: '{line}   '\n",
    ):
        project.task("t", body)
        assert project.run("plan", "--format", "json", code=0).json()["enqueue"] == [], body
        project.run("--once", code=0)
        assert project.ledger_lines() == ["ran"], body


def test_a_check_written_as_a_block_is_the_same_version(project):
    project.task("t", "command: exit 0\ncheck: test -d /\n")
    project.run("--once", code=0)
    project.task("t", "command: exit 0\ncheck: |\n  test -d /\n")
    reasons = [
        e["reason"] for e in project.run("plan", "--format", "json", code=0).json()["enqueue"]
    ]
    assert reasons == ["drift"]  # re-checked as at every pass, not a new version


def test_a_command_without_trailing_whitespace_keeps_the_version_it_had(project):
    project.task("t", "command: echo same\n")
    project.run("--once", code=0)
    assert _stored_versions(project) == [_version_as_released_before("echo same")]


def test_a_script_that_ran_under_the_old_version_does_not_rerun_after_the_upgrade(project):
    script = f"{project.record('ran')}\n"
    project.task("t", f"script: |\n  {script}")
    project.run("--once", code=0)
    assert project.ledger_lines() == ["ran"]
    # The store as the release before this one left it: the run under the old hash.
    with sqlite3.connect(project.state) as db:
        db.execute("UPDATE runs SET version = ?", (_version_as_released_before(script),))
    assert project.run("plan", "--format", "json", code=0).json()["enqueue"] == []
    project.run("--once", code=0)
    assert project.ledger_lines() == ["ran"]
    # A real change still runs.
    project.task("t", f"script: |\n  {project.record('changed')}\n")
    project.run("--once", code=0)
    assert project.ledger_lines() == ["ran", "changed"]


# --- drift detection for scheduled tasks (issue 12, item 8) --------------------------------------


def test_a_scheduled_task_with_a_check_is_rechecked_between_its_slots(project):
    marker = project.root / "marker"
    project.task(
        "converge",
        f"schedule: '@yearly'\ncheck: test -f {marker}\n"
        f"command: {project.record('repaired')} && touch {marker}\n",
    )
    project.run("--once", code=0)
    assert project.ledger_lines() == ["repaired"] and marker.exists()
    # Still converged: the next pass checks again, and the check holds.
    second = project.run("--once", "--format", "json", code=0).json()
    assert [r["status"] for r in second["runs"]] == ["skipped"]
    assert project.ledger_lines() == ["repaired"]
    marker.unlink()  # drift, long before the next slot
    project.run("--once", code=0)
    assert project.ledger_lines() == ["repaired", "repaired"] and marker.exists()


def test_a_scheduled_task_without_a_check_still_runs_once_per_slot(project):
    project.task("yearly", f"schedule: '@yearly'\ncommand: {project.record('ran')}\n")
    project.run("--once", code=0)
    project.run("--once", code=0)
    assert project.ledger_lines() == ["ran"]


# --- diff says what the next pass starts (issue 12, item 4) ---------------------------------------


def _git(project, *args: str) -> str:
    import subprocess

    return subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=project.root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _commit(project, message: str) -> None:
    _git(project, "add", "-A", "inventory")
    _git(project, "commit", "-q", "-m", message)


@pytest.mark.parametrize(
    "before, after",
    [
        (None, "@yearly"),  # a schedule added to a task that already succeeded
        ("0 0 1 1 *", "* * * * *"),  # a rarer schedule made frequent: a new slot is due now
    ],
)
@pytest.mark.parametrize("with_state", [False, True])
def test_diff_reports_the_runs_a_schedule_change_makes_the_next_pass_start(
    project, before, after, with_state
):
    _git(project, "init", "-q")
    line = project.record("ran")
    project.task("t", f"command: {line}\n" + (f"schedule: '{before}'\n" if before else ""))
    _commit(project, "base")
    project.run("--once", code=0)
    project.task("t", f"command: {line}\nschedule: '{after}'\n")
    _commit(project, "head")
    state = ("--state", str(project.state)) if with_state else ()
    diff = project.run("diff", "HEAD~1", "HEAD", "--format", "json", *state, code=0).json()
    [change] = diff["tasks"]["changed"]
    assert change["fields"] == ["schedule"]
    planned = project.run("plan", "--format", "json", code=0).json()["enqueue"]
    project.run("--once", code=0)
    started = len(project.ledger_lines()) - 1
    assert started == 1 and [e["reason"] for e in planned] == ["schedule"]
    assert change["reruns"] is True, diff
    text = project.run("diff", "HEAD~1", "HEAD", *state, code=0).out
    assert "no re-run" not in text, text


def test_diff_of_a_schedule_change_that_makes_no_slot_due_says_no_rerun(project):
    _git(project, "init", "-q")
    project.task("t", f"command: {project.record('ran')}\nschedule: '@yearly'\n")
    _commit(project, "base")
    project.run("--once", code=0)
    project.task("t", f"command: {project.record('ran')}\nschedule: '0 0 1 jan *'\n")
    _commit(project, "head")
    diff = project.run("diff", "HEAD~1", "HEAD", "--format", "json", code=0).json()
    assert diff["tasks"]["changed"][0]["reruns"] is False
    assert project.run("plan", "--format", "json", code=0).json()["enqueue"] == []


# --- queue retry keeps its word (issue 12, item 5) -------------------------------------------------


def _runs(project) -> list[dict]:
    return sorted(
        project.run("queue", "list", "--format", "json", code=0).json(), key=lambda r: r["id"]
    )


def test_retrying_a_failed_once_run_whose_retry_also_failed_really_runs_again(project):
    project.task("t", f"command: {project.record('try')}; exit 1\n")
    project.run("--once", code=1)
    first = _runs(project)[0]["id"]
    project.run("queue", "retry", str(first), code=0)
    project.run("--once", code=1)  # the retry fails as well
    assert project.ledger_lines() == ["try", "try"]
    result = project.run("queue", "retry", str(first), code=0)  # the older of the two
    assert "retrying run" in result.err, result.err
    project.run("--once", code=1)
    assert project.ledger_lines() == ["try", "try", "try"]


def _scheduled_run_moved_to_last_year(project, status_after: str):
    """A @yearly task whose run failed in last year's slot, then ran this year's."""
    ok = project.root / "ok"
    project.task("t", f"schedule: '@yearly'\ncommand: {project.record('try')}; test -f {ok}\n")
    project.run("--once", code=1)
    with sqlite3.connect(project.state) as db:  # the failure was last year's slot
        db.execute("UPDATE runs SET slot = '2025-01-01T00:00:00Z'")
    if status_after == "succeeded":
        ok.touch()
    project.run("--once", code=0 if status_after == "succeeded" else 1)
    runs = _runs(project)
    assert [r["status"] for r in runs] == ["failed", status_after]
    return runs[0]["id"]


def test_retrying_a_failed_run_of_an_older_slot_after_a_later_slot_succeeded_is_refused(project):
    old = _scheduled_run_moved_to_last_year(project, "succeeded")
    result = project.run("queue", "retry", str(old), code=2)
    assert f"run {old} will not run again" in result.err and "succeeded" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert [r["status"] for r in _runs(project)] == ["failed", "succeeded"]  # nothing flagged
    project.run("--once", code=0)
    assert project.ledger_lines() == ["try", "try"]


def test_retrying_a_failed_run_of_an_older_slot_after_a_later_slot_failed_really_runs(project):
    old = _scheduled_run_moved_to_last_year(project, "failed")
    project.run("queue", "retry", str(old), code=0)
    project.run("--once", code=1)
    assert project.ledger_lines() == ["try", "try", "try"]


# --- priorities and deny windows: what status says, what the dispatcher does (12.15, 12.18, 12.19) --

ALWAYS_DENIED = "windows:\n  - deny: '* * * * *'\n    duration: 1h\n"  # covers every instant


def test_status_shows_a_held_run_at_the_priority_git_says_now(project):
    project.write("teams/ops.yaml", "name: ops\n" + ALWAYS_DENIED)
    project.task("t", f"priority: 3\ncommand: {project.record('ran')}\n")
    project.run("--once", code=0)  # held by the window: stays pending
    status = project.run("status", "--format", "json", code=0).json()
    assert status["queue_depth"]["3"] == 1 and len(status["held"]) == 1
    project.task("t", f"priority: 1\ncommand: {project.record('ran')}\n")  # no new version
    status = project.run("status", "--format", "json", code=0).json()
    assert status["queue_depth"]["1"] == 1 and status["queue_depth"]["3"] == 0, status
    assert status["held"] == [], status  # priority 1 is never held
    assert "held by deny window" not in project.run("status", code=0).out
    project.run("--once", code=0)  # ... and the dispatcher agrees: it runs now
    assert project.ledger_lines() == ["ran"]


def test_a_dependency_of_a_priority_1_task_runs_inside_its_own_deny_window(project):
    project.write("teams/ops.yaml", "name: ops\n" + ALWAYS_DENIED)
    project.task("backup", f"priority: 3\ncommand: {project.record('backup')}\n")
    project.task("urgent", f"priority: 1\nafter: [backup]\ncommand: {project.record('urgent')}\n")
    plan = project.run("plan", "--format", "json", code=0).json()["enqueue"]
    assert [(e["task"], "held_until" in e) for e in plan] == [
        ("ops/backup", False),
        ("ops/urgent", False),
    ]
    project.run("--once", code=0)
    assert project.ledger_lines() == ["backup", "urgent"]


def test_strategy_one_prefers_a_target_that_can_run_now(project):
    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\n" + ALWAYS_DENIED)
    project.write("machines/free.yaml", "name: free\nteam: ops\ntransport: local\n")
    project.write(
        "tasks/ops/t.yaml",
        f"name: t\nmachines: [box, free]\nstrategy: one\ncommand: {project.record('ran')}\n",
    )
    [enqueue] = project.run("plan", "--format", "json", code=0).json()["enqueue"]
    assert enqueue["machine"] == "free" and "held_until" not in enqueue
    result = project.run("--once", "--format", "json", code=0).json()
    assert [(r["machine"], r["status"]) for r in result["runs"]] == [("free", "succeeded")]


# --- retry jitter (issue 18, item 2) ----------------------------------------------------------------


def test_runs_that_fail_together_do_not_all_retry_at_the_same_instant(project):
    from datetime import datetime

    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 8\n")
    for n in range(8):
        project.task(f"t{n}", "retry: {count: 1, delay: 2s}\ncommand: exit 1\n")
    project.run("--once", code=1)
    entries = [json.loads(line) for line in project.run("audit", "export", code=0).out.splitlines()]
    waits = []
    for entry in entries:
        if entry.get("action") == "run.retrying":
            at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
            retry_at = datetime.fromisoformat(entry["detail"]["not_before"])
            waits.append((retry_at - at).total_seconds())
    assert len(waits) == 8, entries
    # Never earlier than the delay (2 s; the entry is written a moment after the failure),
    # never later than 3 x the delay, and spread out rather than one instant for all.
    assert all(1.5 <= w <= 6.0 for w in waits), waits
    assert max(waits) - min(waits) > 1.0, waits
