"""`--metrics-addr` is judged by whether it was given, not by its truth (issue 19, second
review): an empty address — `--metrics-addr "$ADDR"` in a unit file with ADDR unset — is
refused before anything runs, by the daemon as by `--once`, instead of serving nothing."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("addr", ["", "  "], ids=["empty", "blank"])
@pytest.mark.parametrize("args", [(), ("--once",)], ids=["daemon", "once"])
def test_an_empty_metrics_addr_is_refused_before_anything_runs(project, addr, args):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--metrics-addr", addr, *args, code=2)
    assert "--metrics-addr is empty" in result.err and "Traceback" not in result.err, result
    assert project.ledger_lines() == [] and not project.state.exists()
