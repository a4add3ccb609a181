"""Bad input end to end: exit 2, file:line:column, every problem at once, nothing ran or written."""

from __future__ import annotations

import pytest


def _assert_rejected(project, *fragments: str, args=("--once",)):
    result = project.run(*args, code=2)
    for fragment in fragments:
        assert fragment in result.err, result.err
    assert "Traceback" not in result.err
    assert project.ledger_lines() == []
    assert not project.state.exists(), "a rejected inventory must not create the state store"
    return result


def test_all_problems_of_the_inventory_are_reported_at_once_and_nothing_runs(project):
    project.task("good", f"command: {project.record('good')}\n")
    project.task("typo", "prioritty: 2\ncommand: exit 0\n")
    project.task("bad-prio", "priority: 7\ncommand: exit 0\n")
    result = _assert_rejected(
        project,
        "inventory/tasks/ops/typo.yaml:3:1",
        "did you mean 'priority'",
        "inventory/tasks/ops/bad-prio.yaml:3:11",
    )
    assert len([line for line in result.err.splitlines() if line.startswith("error:")]) == 2


def test_duplicate_key_is_reported_at_the_second_key(project):
    project.task("dup", "command: exit 0\ncommand: false\n")
    _assert_rejected(project, "inventory/tasks/ops/dup.yaml:4:1", "duplicate")


def test_unknown_machine_with_hint(project):
    project.write("tasks/ops/x.yaml", "name: x\nmachines: [bxo]\ncommand: exit 0\n")
    _assert_rejected(project, "inventory/tasks/ops/x.yaml:2:", "did you mean 'box'")


def test_dependency_cycle(project):
    project.task("a", "after: [b]\ncommand: exit 0\n")
    project.task("b", "after: [a]\ncommand: exit 0\n")
    _assert_rejected(project, "dependency cycle: ops/a -> ops/b -> ops/a")


@pytest.mark.parametrize("args", [("validate",), ("plan",), ("--once", "--dry-run")])
def test_every_command_rejects_the_same_bad_input(project, args):
    project.task("t", "command: exit 0\nschedule: '61 * * * *'\n")
    _assert_rejected(project, "inventory/tasks/ops/t.yaml:4:", args=args)


def test_rejected_pass_leaves_existing_state_untouched(project):
    project.task("t", f"command: {project.record('t')}\n")
    project.run("--once", code=0)
    before = project.run_count()
    project.task("t", "command: [not, a, string]\n")
    result = project.run("--once", code=2)
    assert "inventory/tasks/ops/t.yaml:3:" in result.err
    assert project.run_count() == before


def test_bad_flag_exits_2_with_one_line(project):
    result = project.run("--once", "--concurrency", "zero", code=2)
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_missing_inventory_exits_2(tmp_path):
    from tests.support.cli import reconcile

    result = reconcile("validate", "--inventory", "nowhere", cwd=tmp_path, check_code=2)
    assert "nowhere" in result.err


def test_validate_warns_about_hardcoded_credentials_and_strict_fails(project):
    project.task("t", "env: {DB_PASSWORD: hunter2hunter2}\ncommand: exit 0\n")
    result = project.run("validate", code=0)
    assert "DB_PASSWORD" in result.err and "{vault: DB_PASSWORD}" in result.err
    assert "hunter2hunter2" not in result.err + result.out
    project.run("validate", "--strict", code=2)


def test_a_bad_flag_names_the_program_once_and_the_command(project):
    """The usage error said 'error: reconcile: reconcile plan: ...' (the program twice)."""
    top = project.run("--bogus", code=2).err
    assert top.count("reconcile:") == 1 and "unrecognized arguments: --bogus" in top, top
    sub = project.run("plan", "--format", "xml", code=2).err
    assert sub.startswith("error: reconcile: plan: argument --format"), sub
    assert sub.count("reconcile:") == 1, sub
