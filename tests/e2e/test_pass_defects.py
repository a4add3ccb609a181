"""Defects of the pass commands found in review: a refused flag runs and writes nothing."""

from __future__ import annotations

import pytest


def test_once_with_a_format_it_cannot_write_runs_nothing_and_creates_no_state(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--once", "--format", "markdown", code=2)
    assert "--format markdown is not available here" in result.err
    assert project.ledger_lines() == []
    assert not project.state.exists()


def test_queue_retry_with_a_format_it_cannot_write_flags_nothing_to_run_again(project):
    project.task("broken", f"command: {project.record('broken')}; exit 1\n")
    project.run("--once", code=1)
    [failed] = project.run("queue", "list", "--format", "json", code=0).json()
    result = project.run("--format", "markdown", "queue", "retry", str(failed["id"]), code=2)
    assert "--format markdown is not available here" in result.err
    project.run("--once", code=0)
    assert project.ledger_lines() == ["broken"], "the refused retry was not recorded"


@pytest.mark.parametrize("command", [["status"], ["validate"]])
def test_a_command_refuses_markdown_before_opening_any_state(project, command):
    project.task("hello", "command: 'true'\n")
    result = project.run("--format", "markdown", *command, code=2)
    assert "--format markdown is not available here" in result.err
    assert not project.state.exists()


def test_the_start_up_image_that_hides_the_identity_imports_no_engine(tmp_path):
    """With an identity, `reconcile` re-executes itself before anything runs (startup.py); the
    image that does so must not first import the engine, the loader or rich (~0.5 s)."""
    import subprocess
    import sys

    probe = (
        "import sys, reconciler.cli.main; "
        "print(sorted(m for m in ('reconciler.pipeline.engine', 'reconciler.inventory.loader', "
        "'reconciler.cli.commands', 'rich', 'croniter', 'jsonschema') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_once_with_a_malformed_grace_creates_no_state_and_runs_nothing(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--once", "--grace", "soon", code=2)
    assert "--grace must be a duration" in result.err
    assert project.ledger_lines() == [] and not project.state.exists()


@pytest.mark.parametrize("flag", [["--grace", "soon"], ["--concurrency", "0"]])
def test_the_daemon_with_a_bad_flag_exits_2_at_start_up(project, flag):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run(*flag, code=2, timeout=60)
    assert "must be a" in result.err
    assert project.ledger_lines() == [] and not project.state.exists()
