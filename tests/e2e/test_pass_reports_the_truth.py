"""What a `--once` pass reports is what the store holds and what it did (issue 12: items 12,
16, 17, 20; issue 18 item 8). Real processes on a SQLite store; no sleeps."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

from tests.support.cli import spawn
from tests.support.waiting import wait_until


def _row(project, task: str):
    if not project.state.exists():
        return None
    try:
        with sqlite3.connect(project.state) as db:
            return db.execute("SELECT id, status, attempt, not_before FROM runs WHERE task = ? "
                              "ORDER BY id DESC", (task,)).fetchone()
    except sqlite3.OperationalError:  # the store is being created
        return None


def _retry_wait(project, task: str):
    row = _row(project, task)
    return row if row and row[1] == "pending" and row[2] == 2 else None


def test_queue_cancel_during_a_retry_wait_is_what_the_pass_reports(project):
    project.task("flaky", "retry: {count: 1, delay: 30s}\n"
                 f"command: {project.record('tried')}; exit 1\n")
    proc = spawn("--once", "--format", "json", "-q", cwd=project.root)
    try:
        waiting = wait_until(lambda: _retry_wait(project, "ops/flaky") or proc.poll() is not None,
                             timeout=30, message="the run to wait for its retry")
        assert proc.poll() is None, proc.communicate()
        project.run("queue", "cancel", str(waiting[0]), code=0)
        cancelled_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
        ended_after = time.monotonic() - cancelled_at
    finally:
        proc.kill()
    [run] = json.loads(out)["runs"]
    assert (run["id"], run["status"]) == (waiting[0], "cancelled"), err
    assert _row(project, "ops/flaky")[1] == "cancelled"
    assert proc.returncode == 0, err
    assert ended_after < 10, ended_after  # it noticed, rather than waiting out the 30 s delay
    assert project.ledger_lines() == ["tried"]
