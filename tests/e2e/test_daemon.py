"""`reconcile` without --once: passes at poll_interval until SIGTERM, then exit 0."""

from __future__ import annotations

import signal

from tests.support.cli import spawn
from tests.support.waiting import wait_until


def test_daemon_applies_a_new_task_at_a_later_pass_and_stops_cleanly_on_sigterm(project):
    project.write("reconciler.yaml", "poll_interval: 1s\n")
    project.task("first", f"command: {project.record('first')}\n")
    proc = spawn("-q", cwd=project.root)
    try:
        wait_until(lambda: "first" in project.ledger_lines(), timeout=30, message="first task")
        project.task("second", f"command: {project.record('second')}\n")
        wait_until(lambda: "second" in project.ledger_lines(), timeout=30, message="second task")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, proc.communicate()
    assert project.ledger_lines() == ["first", "second"]
