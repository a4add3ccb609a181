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
    project.write("teams/ops.yaml", f"name: ops\nwindows:\n  - deny: '{NEVER_FIRES}'\n"
                  "    duration: 1h\n")
    project.task("good", f"command: {project.record('good')}\n")
    _assert_refused(project, "inventory/teams/ops.yaml:3:11", "never fires", args=args)


@pytest.mark.parametrize("args", [("validate",), ("--once",)])
def test_a_schedule_with_a_stray_space_is_refused_located(project, args):
    project.task("daily", "command: exit 0\nschedule: '@daily '\n")
    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\n"
                  "windows:\n  - deny: ' @hourly'\n    duration: 5m\n")
    result = _assert_refused(project, "inventory/tasks/ops/daily.yaml:4:11",
                             "inventory/machines/box.yaml:5:11", "space", args=args)
    assert len([l for l in result.err.splitlines() if l.startswith("error:")]) == 2, result.err


@pytest.mark.parametrize("schedule, word", [
    ("R * * * *", "'R'"),          # croniter's random minute: a new one at every pass
    ("H * * * *", "'H'"),          # Jenkins' hashed minute
    ("0 0 L * *", "'L'"),          # Quartz' last day of the month
    ("0 0 * * 5#3", "'#'"),        # Quartz' n-th weekday
    ("0 0 ? * *", "'?'"),
    ("0 0 15W * *", "'W'"),
    ("* * * * * *", "6 fields"),   # a seconds field
    ("0 0 0 * * * *", "7 fields"),
    ("@reboot", "@reboot"),
    ("@every 5m", "@every"),
])
def test_only_standard_five_field_cron_and_the_documented_macros_are_accepted(
        project, schedule, word):
    project.task("odd", f"command: exit 0\nschedule: '{schedule}'\n")
    _assert_refused(project, "inventory/tasks/ops/odd.yaml:4:11", word)


@pytest.mark.parametrize("schedule", [
    "*/15 * * * *", "0 8-18/2 * * mon-fri", "5,35 0 1 jan,jul *", "0 0 29 2 *", "0 0 * * 7",
    "0 0 30 2 1",  # day 30 of February never comes, but every Monday in February does
    "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually",
])
def test_standard_cron_and_the_documented_macros_still_validate(project, schedule):
    project.task("ok", f"command: exit 0\nschedule: '{schedule}'\n")
    project.run("validate", code=0)


# --- env names the reconciler sets (issue 12, item 6) --------------------------------------------

@pytest.mark.parametrize("name", ["RECONCILE_RUN_ID", "RECONCILE_TASK", "RECONCILE_MACHINE",
                                  "RECONCILE_ATTEMPT", "RECONCILE_VERSION", "RECONCILE_FUTURE"])
@pytest.mark.parametrize("args", [("validate",), ("--once",)])
def test_env_may_not_set_a_name_the_reconciler_sets(project, name, args):
    project.task("t", f"command: {project.record('t')}\nidempotent: true\nenv:\n"
                 f"  MODE: fast\n  {name}: '7'\n")
    _assert_refused(project, "inventory/tasks/ops/t.yaml:7:3", f"'{name}' is reserved", args=args)


def test_every_name_the_executor_sets_is_one_validate_refuses():
    # The names a run gets come from the executor itself, so a new one cannot slip past.
    from reconciler.executor import run_environment
    from reconciler.loader import RESERVED_ENV_PREFIX
    from reconciler.model import RetryPolicy, Strategy, TaskSpec
    from reconciler.state import Run, RunStatus

    spec = TaskSpec(id="ops/t", team="ops", name="t", run="true", check=None, env=(),
                    priority=3, timeout=60, retry=RetryPolicy(), schedule=None, after=(),
                    strategy=Strategy.ALL, targets=("box",), versions={"box": "v"})
    run = Run(1, "ops/t", "box", "v", 3, RunStatus.RUNNING)
    names = set(run_environment(run, spec, lambda team, ref: None))
    assert names and all(n.startswith(RESERVED_ENV_PREFIX) for n in names)


def test_env_names_that_only_look_alike_are_fine(project):
    project.task("t", "command: exit 0\nenv: {reconcile_mode: x, MY_RECONCILE_RUN_ID: y}\n")
    project.run("validate", code=0)
