"""`reconcile --once` end to end: order, retries, once semantics, versions, exit codes."""

from __future__ import annotations

from datetime import UTC, datetime


def test_runs_go_by_priority_one_first_with_concurrency_1(project):
    for name, prio in (("low", 5), ("high", 1), ("mid", 3), ("mid2", 3)):
        project.task(name, f"priority: {prio}\ncommand: {project.record(name)}\n")
    project.run("--once", "--concurrency", "1", code=0)
    assert project.ledger_lines() == ["high", "mid", "mid2", "low"]


def test_after_runs_dependency_first_even_when_dependent_has_higher_priority(project):
    project.task("dep", f"priority: 5\ncommand: {project.record('dep')}\n")
    project.task("main", f"priority: 1\nafter: [dep]\ncommand: {project.record('main')}\n")
    project.run("--once", "--concurrency", "1", code=0)
    assert project.ledger_lines() == ["dep", "main"]


def test_failed_dependency_blocks_its_dependents_and_exits_1(project):
    project.task("dep", "command: exit 3\n")
    project.task("main", f"after: [dep]\ncommand: {project.record('main')}\n")
    result = project.run("--once", "--format", "json", code=1)
    statuses = {r["task"]: r["status"] for r in result.json()["runs"]}
    assert statuses == {"ops/dep": "failed", "ops/main": "blocked"}
    assert project.ledger_lines() == []


def test_retries_follow_count_and_spacing_then_fail(project):
    project.task(
        "flaky",
        "retry: {count: 2, delay: 1s, backoff: 2}\n"
        'command: date +%s.%N >> "' + str(project.ledger) + '"; exit 1\n',
    )
    result = project.run("--once", "--format", "json", code=1)
    run = result.json()["runs"][0]
    assert (run["status"], run["attempt"], run["exit_code"]) == ("failed", 3, 1)
    times = [float(t) for t in project.ledger_lines()]
    assert len(times) == 3
    assert times[1] - times[0] >= 1.0  # delay
    assert times[2] - times[1] >= 2.0  # delay * backoff


def test_failed_once_run_is_not_rerun_until_version_changes_or_queue_retry(project):
    project.task("t", f"command: {project.record('t')}; exit 1\n")
    first = project.run("--once", "--format", "json", code=1)
    run_id = first.json()["runs"][0]["id"]
    project.run("--once", code=0)  # failed is final for its version: nothing to do
    assert project.ledger_lines() == ["t"]

    project.run("queue", "retry", str(run_id), code=0)
    project.run("--once", code=1)
    assert project.ledger_lines() == ["t", "t"]

    project.task("t", f"command: {project.record('t2')}\n")  # a new version
    project.run("--once", code=0)
    assert project.ledger_lines() == ["t", "t", "t2"]


def test_changed_command_reruns_only_that_task_and_priority_change_reruns_nothing(project):
    project.task("a", f"command: {project.record('a')}\n")
    project.task("b", f"command: {project.record('b')}\n")
    project.run("--once", code=0)
    project.task("a", f"command: {project.record('a2')}\n")
    project.task("b", f"priority: 1\ncommand: {project.record('b')}\n")
    plan = project.run("plan", "--format", "json", code=0).json()
    assert plan == {
        "enqueue": [{"task": "ops/a", "machine": "box", "priority": 3, "reason": "changed"}],
        "cancel": [],
    }
    project.run("--once", code=0)
    assert sorted(project.ledger_lines()) == ["a", "a2", "b"]


def test_once_json_has_the_documented_fields(project):
    project.task("t", "command: echo hello\n")
    data = project.run("--once", "--format", "json", code=0).json()
    assert data["counts"] == {"succeeded": 1}
    run = data["runs"][0]
    for key in (
        "id",
        "task",
        "machine",
        "version",
        "status",
        "priority",
        "attempt",
        "exit_code",
        "created_at",
        "started_at",
        "finished_at",
    ):
        assert key in run
    shown = project.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert shown["output"] == "hello\n" and shown["error"] is None
    datetime.fromisoformat(shown["finished_at"].replace("Z", "+00:00"))


def test_second_pass_with_nothing_due_exits_0_and_runs_nothing(project):
    project.task("t", f"command: {project.record('t')}\n")
    project.run("--once", code=0)
    second = project.run("--once", code=0)
    assert "Nothing to do" in second.out
    assert project.ledger_lines() == ["t"]


def test_check_that_holds_records_skipped_and_drift_reruns_the_command(project):
    marker = project.root / "marker"
    project.task(
        "t", f'check: test -f "{marker}"\ncommand: touch "{marker}" && {project.record("fixed")}\n'
    )
    project.run("--once", code=0)
    second = project.run("--once", "--format", "json", code=0).json()
    assert second["counts"] == {"skipped": 1}
    marker.unlink()  # drift
    project.run("--once", code=0)
    assert project.ledger_lines() == ["fixed", "fixed"]


def test_timeout_kills_the_command_and_fails_the_run(project):
    project.task("slow", "timeout: 1\ncommand: sleep 30\n")
    data = project.run("--once", "--format", "json", code=1).json()
    assert data["runs"][0]["status"] == "failed"
    shown = project.run("queue", "show", str(data["runs"][0]["id"]), "--format", "json").json()
    assert "timed out after 1s" in shown["error"]


def test_dry_run_changes_nothing_and_creates_no_store(project):
    project.task("t", f"command: {project.record('t')}\n")
    out = project.run("--once", "--dry-run", code=0).out
    assert "ops/t" in out and "new" in out
    assert not project.state.exists() and project.ledger_lines() == []


def test_queue_cancel_of_a_finished_run_is_a_usage_error(project):
    project.task("t", "command: exit 0\n")
    run_id = project.run("--once", "--format", "json").json()["runs"][0]["id"]
    result = project.run("queue", "cancel", str(run_id), code=2)
    assert "only pending runs can be cancelled" in result.err
    assert "Traceback" not in result.err


def test_unwritable_state_store_exits_3_with_one_line(project):
    project.task("t", f"command: {project.record('t')}\n")
    blocker = project.root / "not-a-dir"
    blocker.write_text("")
    result = project.run("--once", "--state", f"sqlite:///{blocker}/state.db", code=3)
    assert "Traceback" not in result.err and project.ledger_lines() == []


def test_deny_window_holds_low_priority_runs_pending_and_lets_priority_1_run(project):
    project.write(
        "teams/ops.yaml", "name: ops\nwindows:\n  - deny: '* * * * *'\n    duration: 2m\n"
    )
    project.task("urgent", f"priority: 1\ncommand: {project.record('urgent')}\n")
    project.task("routine", f"priority: 3\ncommand: {project.record('routine')}\n")
    assert "held by deny window until" in project.run("plan", code=0).out
    data = project.run("--once", "--format", "json", code=0).json()
    assert {r["task"]: r["status"] for r in data["runs"]} == {
        "ops/urgent": "succeeded",
        "ops/routine": "pending",
    }
    assert project.ledger_lines() == ["urgent"]
    status = project.run("status", "--format", "json", code=0).json()
    assert status["queue_depth"]["3"] == 1 and status["by_team"] == {"ops": 1}
    assert [h["task"] for h in status["held"]] == ["ops/routine"]


def test_once_does_not_wait_for_a_deny_window_to_close(project):
    from datetime import datetime

    now = datetime.now(UTC)
    project.write(
        "teams/ops.yaml",
        f"name: ops\nwindows:\n  - deny: '{now.minute} {now.hour} * * *'\n    duration: 1h\n",
    )
    project.task("routine", f"priority: 3\ncommand: {project.record('routine')}\n")
    data = project.run("--once", "--format", "json", code=0, timeout=60).json()
    assert [r["status"] for r in data["runs"]] == ["pending"]
    project.write("teams/ops.yaml", "name: ops\n")  # the window is removed: the run may go
    project.run("--once", code=0, timeout=60)
    assert project.ledger_lines() == ["routine"]


def test_plan_and_status_leave_an_existing_store_byte_identical(project):
    project.task("t", "command: exit 0\n")
    project.run("--once", code=0)
    project.task("u", "command: exit 0\n")
    before = project.state.read_bytes()
    project.run("plan", code=0)
    project.run("status", code=0)
    project.run("queue", "list", code=0)
    # SQLite's readers may leave an empty -wal and its index (-shm); the data is untouched.
    assert project.state.read_bytes() == before
    wal = project.state.with_name("state.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_plan_on_an_empty_file_treats_it_as_no_runs_and_leaves_it_empty(project):
    project.task("t", "command: exit 0\n")
    empty = project.root / "empty.db"
    empty.write_bytes(b"")
    assert "ops/t" in project.run("plan", "--state", str(empty), code=0).out
    assert empty.read_bytes() == b""
