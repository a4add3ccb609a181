"""Settings precedence through the command line (cli/settings.py): flag > RECONCILE_* variable >
reconciler.yaml > default, and a malformed value is exit 2 naming where it came from, before a
pass opens or creates any store."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RECONCILE_CONCURRENCY": "many"},
            "RECONCILE_CONCURRENCY must be a positive integer (got 'many')",
        ),
        (
            {"RECONCILE_LOCK_TIMEOUT": "soon"},
            "RECONCILE_LOCK_TIMEOUT must be a duration such as 30s, 5m or 1h (got 'soon')",
        ),
        (
            {"RECONCILE_GIT_VERIFY": "always"},
            "RECONCILE_GIT_VERIFY must be none, head or range (got 'always')",
        ),
    ],
)
def test_once_with_a_malformed_variable_names_it_and_creates_no_state(project, env, message):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--once", env=env, code=2)
    assert message in result.err
    assert project.ledger_lines() == [] and not project.state.exists()


def test_the_daemon_with_a_malformed_variable_exits_2_at_start_up(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run(env={"RECONCILE_GIT_VERIFY": "always"}, code=2, timeout=60)
    assert "RECONCILE_GIT_VERIFY must be none, head or range" in result.err
    assert project.ledger_lines() == [] and not project.state.exists()


def test_plan_ignores_a_malformed_variable_it_does_not_read(project):
    project.task("hello", "command: 'true'\n")
    project.run("plan", env={"RECONCILE_CONCURRENCY": "many"}, code=0)


def test_the_flag_beats_a_malformed_variable(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    project.run(
        "--once",
        "--concurrency",
        "2",
        "--lock-timeout",
        "1m",
        env={"RECONCILE_CONCURRENCY": "many", "RECONCILE_LOCK_TIMEOUT": "soon"},
        code=0,
    )
    assert project.ledger_lines() == ["hello"]


def test_the_state_store_flag_beats_variable_beats_file_beats_default(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    project.write("reconciler.yaml", "state: sqlite:///file.db\n")
    stores = {name: project.root / f"{name}.db" for name in ("flag", "env", "file")}

    project.run(
        "--once", "--state", "sqlite:///flag.db", env={"RECONCILE_STATE": "sqlite:///env.db"}
    )
    assert [n for n, path in stores.items() if path.exists()] == ["flag"]

    project.run("--once", env={"RECONCILE_STATE": "sqlite:///env.db"}, code=0)
    assert [n for n, path in stores.items() if path.exists()] == ["flag", "env"]

    project.run("--once", code=0)
    assert all(path.exists() for path in stores.values())
    assert not project.state.exists(), "the default store was used although the file names one"
    # Each store ran the task once: three stores, three runs.
    assert project.ledger_lines() == ["hello"] * 3
