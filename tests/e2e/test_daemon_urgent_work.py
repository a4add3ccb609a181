"""The daemon plans a new commit while earlier runs go on: a priority-1 task committed while
a pass waits on a priority-5 retry back-off and on a long priority-5 run on another machine
starts within one poll interval of its commit (issue 12.3; DESIGN §10 "Planning is not
draining"). The start delay is measured from the state store's own timestamps."""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import pytest

from tests.support.cli import spawn
from tests.support.postgres import fresh_database
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

POLL_SECONDS = 2.0
SLACK_SECONDS = 2.0  # "within one poll interval of its commit, plus a second or two"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, project):
    if request.param == "sqlite":
        yield None
    else:
        with fresh_database() as url:
            yield url


def _run_of(project, url, task: str):
    rows = store_rows(
        url or project.state,
        f"SELECT status, attempt, started_at FROM runs WHERE task = '{task}' ORDER BY id DESC",
        while_starting=True,
    )
    return rows[0] if rows else None


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_priority_1_commit_starts_within_a_poll_interval_behind_retries_and_long_runs(
    project, store
):
    p = project
    go = p.root / "go"
    p.write("reconciler.yaml", f"poll_interval: {POLL_SECONDS:g}s\n")
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: flakybox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/low.yaml",
        "tasks:\n"
        "  - name: flaky\n    machines: [flakybox]\n    priority: 5\n"
        "    retry: {count: 5, delay: 10m}\n    command: exit 1\n"
        "  - name: long\n    machines: [slowbox]\n    priority: 5\n"
        f"    command: while [ ! -f '{go}' ]; do sleep 0.05; done\n",
    )
    args = ("--watch-files", "-q") + (("--state", store) if store else ())
    daemon = spawn(*args, cwd=p.root)
    try:
        wait_until(
            lambda: (
                (_run_of(p, store, "ops/flaky") or ("",))[0:2] == ("pending", 2)
                and (_run_of(p, store, "ops/long") or ("",))[0] == "running"
                or daemon.poll() is not None
            ),
            timeout=60,
            message="a retry back-off and a long run in progress",
        )
        assert daemon.poll() is None, daemon.communicate()
        committed = datetime.now(UTC)
        p.task("urgent", f"priority: 1\ncommand: {p.record('urgent')}\n")
        wait_until(
            lambda: "urgent" in p.ledger_lines() or daemon.poll() is not None,
            timeout=60,
            message="the priority-1 run to start",
        )
        started = _aware(_run_of(p, store, "ops/urgent")[2])
    finally:
        go.touch()
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    delay = (started - committed).total_seconds()
    print(f"priority-1 start delay after its commit: {delay:.2f}s")
    assert delay < POLL_SECONDS + SLACK_SECONDS, (delay, err)
    assert daemon.returncode == 0, err
