"""`queue retry` of an `unknown` local run whose command still runs on this host: the local
transport's process-group marker answers as an SSH target's markers do (cli/orphan.py).

A local run ends `unknown` with its command alive when the run was declared lost without
its process being stopped: here a pass is killed (-9) under the command and the store's
`recover` marks the run `unknown`, as a pass or a worker sweeping a dead holder's lease does;
a pass would also stop the orphan, which this case must not do first."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

from reconciler.adapters.store.factory import open_store
from tests.support.cli import reaped, spawn
from tests.support.processes import running
from tests.support.waiting import wait_until


def test_queue_retry_refuses_while_a_lost_local_command_runs(project, tmp_path):
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    project.task("migrate", f'command: echo $$ >> "{project.ledger}"; read line < "{fifo}"\n')
    first = spawn("--once", cwd=project.root)
    with reaped(first):
        wait_until(lambda: project.ledger_lines() or first.poll() is not None, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    [pid] = map(int, project.ledger_lines())
    try:
        assert running(pid)  # the command outlived its pass
        store = open_store(f"sqlite:///{project.state}")
        try:
            [lost] = store.recover(datetime.now(UTC))
        finally:
            store.close()
        assert lost.status.value == "unknown", lost
        refused = project.run("queue", "retry", str(lost.id), code=2)
        assert f"run {lost.id} (ops/migrate) still runs on box" in refused.err, refused.err
        killed = project.run("queue", "kill", str(lost.id), code=0)
        assert "still ran on box and was stopped" in killed.out, killed
        wait_until(lambda: not running(pid), timeout=10, message="the orphan to be gone")
        project.run("queue", "retry", str(lost.id), code=0)
    finally:
        if running(pid):
            os.kill(pid, signal.SIGKILL)
