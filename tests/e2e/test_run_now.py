"""`reconcile run TASK` (issue 16 §3) through the CLI on local machines and SQLite: a run of
the task's current version now, with validated parameters in its environment, recorded with
trigger `manual`, who asked and why, audited, and outside what passes decide."""

from __future__ import annotations

import json

import pytest

from tests.support.project import Project
from tests.support.vault_project import SECRET

PARAMS = """\
params:
  MODE: {default: fast, allowed: [fast, full]}
  TARGET_DATE: {pattern: '^\\d{4}-\\d{2}-\\d{2}$'}
"""


@pytest.fixture
def deploy(project: Project) -> Project:
    """Task ops/deploy (a once task) that writes its parameters to the ledger."""
    project.task(
        "deploy",
        f'command: echo "run=$RECONCILE_RUN_ID mode=$MODE day=${{TARGET_DATE-unset}}" '
        f'| tee -a "{project.ledger}"\n' + PARAMS,
    )
    return project


def audit(project: Project, action: str) -> list[dict]:
    lines = [json.loads(line) for line in project.run("audit", "export", code=0).out.splitlines()]
    return [e for e in lines if e.get("type") == "audit" and e["action"] == action]


def test_a_once_task_that_succeeded_runs_again_with_its_param_and_the_plan_stays_empty(deploy):
    deploy.run("--once", code=0)
    assert deploy.ledger_lines() == ["run=1", "mode=fast", "day=unset"]
    result = deploy.run(
        "run",
        "ops/deploy",
        "--param",
        "MODE=full",
        "--param",
        "TARGET_DATE=2026-12-06",
        "--reason",
        "INC-7 re-run",
        "--wait",
        code=0,
    )
    assert deploy.ledger_lines()[3:] == ["run=2", "mode=full", "day=2026-12-06"]
    assert "[ops/deploy@box] run=2 mode=full day=2026-12-06" in result.err  # streamed
    assert "run 2 ops/deploy on box: succeeded" in result.out
    # The next pass decides as if the manual run never happened: nothing to do.
    assert deploy.run("plan", "--format", "json", code=0).json() == {"enqueue": [], "cancel": []}
    deploy.run("--once", code=0)
    assert len(deploy.ledger_lines()) == 6


def test_a_manual_run_of_a_failed_version_does_not_make_the_plan_think_it_succeeded(project):
    flag = project.root / "works"
    project.task("fix", f'command: test -f "{flag}" && echo fixed >> "{project.ledger}"\n')
    project.run("--once", code=1)  # failed: final for its version until a retry
    project.run("run", "ops/fix", "--reason", "still broken?", "--wait", code=1)
    refused = project.run("queue", "retry", "2", code=2)
    assert "run 2 was run on demand (trigger manual)" in refused.err
    flag.touch()
    project.run("run", "ops/fix", "--reason", "try by hand", "--wait", code=0)
    assert project.ledger_lines() == ["fixed"]
    listed = project.run("queue", "list", "--format", "json", code=0).json()
    assert [(r["id"], r["status"], r["trigger"]) for r in listed] == [
        (3, "succeeded", "manual"),
        (2, "failed", "manual"),
        (1, "failed", "plan"),
    ]
    assert project.run("plan", "--format", "json", code=0).json()["enqueue"] == []
    project.run("queue", "retry", "1", code=0)  # the planned run is still the one to retry
    (retry,) = project.run("plan", "--format", "json", code=0).json()["enqueue"]
    assert retry["reason"] == "retry"


def test_without_wait_it_prints_the_run_ids_and_the_next_pass_runs_them(deploy):
    result = deploy.run("run", "ops/deploy", "--reason", "warm up", "--format", "json", code=0)
    assert result.json() == [1]
    assert deploy.ledger_lines() == []
    shown = deploy.run("queue", "show", "1", "--format", "json", code=0).json()
    assert (shown["status"], shown["trigger"], shown["reason"]) == ("pending", "manual", "warm up")
    assert shown["params"] == {"MODE": "fast"} and shown["actor"]
    # The pass plans the task's own first run beside it (no collision) and runs both.
    once = deploy.run("--once", "--format", "json", code=0).json()
    assert sorted((r["id"], r["trigger"], r["status"]) for r in once["runs"]) == [
        (1, "manual", "succeeded"),
        (2, "plan", "succeeded"),
    ]
    assert sorted(deploy.ledger_lines()) == sorted(
        ["run=1", "mode=fast", "day=unset", "run=2", "mode=fast", "day=unset"]
    )
    text = deploy.run("queue", "list", code=0).out
    assert "TRIGGER" in text.splitlines()[0] and "manual by " in text and ": warm up" in text


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (
            ["--param", "MODE=slow"],
            "--param MODE: 'slow' is not one of the allowed values: fast, full",
        ),
        (["--param", "TARGET_DATE=06.12.2026"], "does not match the pattern"),
        (["--param", "COLOR=red"], "--param COLOR: the task declares no such parameter"),
        (["--param", "MODE"], "--param 'MODE': write NAME=VALUE"),
        (["--machine", "other"], "'other' is no target of task 'ops/deploy'"),
        (["--priority", "9"], "--priority: must be 1..5"),
    ],
)
def test_a_bad_request_is_exit_2_with_why_and_queues_nothing(deploy, args, why):
    result = deploy.run("run", "ops/deploy", "--reason", "x", *args, code=2)
    assert why in result.err and "Traceback" not in result.err
    assert deploy.run_count() == 0


def test_reason_is_required_and_an_unknown_task_is_refused(deploy):
    assert "--reason" in deploy.run("run", "ops/deploy", code=2).err
    assert "no task 'ops/nope'" in deploy.run("run", "ops/nope", "--reason", "x", code=2).err
    assert deploy.run_count() == 0


def test_wait_exits_1_when_a_run_fails_and_shows_its_output(project):
    project.task("broken", "command: echo about to fail; exit 3\n")
    result = project.run("run", "ops/broken", "--reason", "see it fail", "--wait", code=1)
    assert "[ops/broken@box] about to fail" in result.err
    assert "run 1 ops/broken on box: failed (exit 3)" in result.out
    data = project.run(
        "run", "ops/broken", "--reason", "again", "--wait", "--format", "json", code=1
    ).json()
    assert data["ok"] is False
    assert [(r["id"], r["status"], r["exit_code"]) for r in data["runs"]] == [(2, "failed", 3)]
    assert data["errors"] == [
        {"run": 2, "message": "run 2 ops/broken on box: failed (exit 3): exit code 3"}
    ]


def test_the_request_is_audited_with_actor_reason_and_params(deploy):
    deploy.run(
        "run",
        "ops/deploy",
        "--param",
        "MODE=full",
        "--priority",
        "1",
        "--reason",
        "INC-9",
        code=0,
    )
    (entry,) = audit(deploy, "run.manual")
    assert entry["detail"] | {"version": None} == {
        "run": 1,
        "task": "ops/deploy",
        "machine": "box",
        "version": None,
        "priority": 1,
        "reason": "INC-9",
        "trigger": "manual",
        "params": {"MODE": "full"},
    }
    assert entry["actor"] == deploy.run("queue", "show", "1", "--format", "json").json()["actor"]
    assert deploy.run("audit", "verify", code=0)


def test_a_param_value_that_is_a_vault_secret_is_masked_in_output_and_audit(vaulted):
    vaulted.task("echo", 'command: echo "token=$TOKEN"\nparams:\n  TOKEN: {}\n')
    result = vaulted.run(
        "run",
        "ops/echo",
        "--param",
        f"TOKEN={SECRET}",
        "--reason",
        "careless",
        "--identity",
        str(vaulted.alice),
        "--wait",
        "--format",
        "json",
        code=0,
    )
    assert SECRET not in result.out + result.err
    assert result.json()["runs"][0]["output"] == "token=***\n"
    (entry,) = audit(vaulted, "run.manual")
    assert entry["detail"]["params"] == {"TOKEN": "***"}
