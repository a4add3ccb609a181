"""Review R3 of issues 12 and 18: what an operator found still broken, tried through the CLI."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "schedule, field",
    [
        ("5-1 * * * *", "minute"),  # croniter wraps it round (1, 5, 6, ...); cron refuses it
        ("0 0 * * fri-mon", "day of week"),
    ],
)
def test_a_schedule_with_a_reversed_range_is_refused_located(project, schedule, field):
    project.task("good", f"command: {project.record('good')}\n")
    project.task("wrap", f"command: exit 0\nschedule: '{schedule}'\n")
    result = project.run("validate", code=2)
    assert "inventory/tasks/ops/wrap.yaml:4:11" in result.err, result.err
    assert f"the {field} field" in result.err and "reversed" in result.err, result.err
    assert "Traceback" not in result.err
    assert project.ledger_lines() == [] and not project.state.exists()


@pytest.mark.parametrize(
    "args", [("--bogus",), ("queue", "retry", "abc"), ("--log-format=json", "--bogus")]
)
def test_a_usage_error_under_log_format_json_is_one_json_line(project, args):
    import json

    result = project.run("--log-format", "json", *args, code=2)
    lines = result.err.splitlines()
    assert lines, result.err
    for line in lines:
        json.loads(line)
