"""`params:` on a task (issue 16 §3) through the CLI: a bad declaration is refused with its
place before anything runs, and a default is in the environment of the runs a pass plans."""

from __future__ import annotations


def test_a_default_the_params_own_bounds_refuse_is_exit_2_with_its_place(project):
    project.task(
        "deploy",
        """\
        command: 'true'
        params:
          MODE: {default: slow, allowed: [fast, full]}
        """,
    )
    result = project.run("--once", code=2)
    assert (
        "inventory/tasks/ops/deploy.yaml:5:19: params.MODE.default is refused by its own "
        "bounds: 'slow' is not one of the allowed values: fast, full"
    ) in result.err
    assert "Traceback" not in result.err
    assert project.run_count() == 0


def test_a_pattern_that_is_no_regular_expression_is_exit_2_with_its_place(project):
    project.task("deploy", "command: 'true'\nparams:\n  DAY: {pattern: '[0-9'}\n")
    result = project.run("validate", "--format", "json", code=2)
    (error,) = result.json()["errors"]
    assert (error["path"], error["line"], error["column"]) == (
        "inventory/tasks/ops/deploy.yaml",
        5,
        18,
    )
    assert error["message"] == (
        "params.DAY.pattern is not a valid regular expression "
        "(unterminated character set at position 0)"
    )


def test_a_planned_run_has_the_defaults_in_its_environment_and_no_other_param(project):
    project.task(
        "deploy",
        f"""\
        command: echo "mode=$MODE day=${{TARGET_DATE-unset}}" >> "{project.ledger}"
        params:
          MODE: {{default: fast, allowed: [fast, full]}}
          TARGET_DATE: {{pattern: '^\\d{{4}}-\\d{{2}}-\\d{{2}}$'}}
        """,
    )
    project.run("--once", code=0)
    assert project.ledger_lines() == ["mode=fast", "day=unset"]
