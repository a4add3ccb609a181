"""`queue retry` of an `unknown` SSH run asks the machine whether its command still runs
(cli/orphan.py), and `queue kill` stops such an orphan, through the CLI with real sshd.

Each test loses the connection under a command that waits on a FIFO, so the run ends
`unknown` while the command still runs on the machine (the refused case itself is the
review test in test_review_issue13.py)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.support.cli import reaped, spawn
from tests.support.processes import running
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


class _Lost:
    """A project whose task `migrate` ended `unknown` while its command (`pid`) still waits
    on `fifo` on the machine."""

    def __init__(self, tmp_path, sshd, client_key):
        self.p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
        self.fifo, self.ledger = tmp_path / "go", tmp_path / "ledger"
        os.mkfifo(self.fifo)
        self.p.task(
            "migrate",
            f'command: echo $$ >> "{self.ledger}"; read line < "{self.fifo}"; echo migrated\n',
        )
        first = spawn("--once", "--format", "json", "--identity", str(self.p.key), cwd=self.p.root)
        with reaped(first):
            wait_until(lambda: self.ledger.exists() or first.poll() is not None, timeout=30)
            assert sshd.drop_connections()
            out, _ = first.communicate(timeout=60)
        [run] = json.loads(out)["runs"]
        assert run["status"] == "unknown", run
        self.run_id = str(run["id"])
        [self.pid] = [int(line) for line in self.ledger.read_text().split()]
        assert running(self.pid)

    def reconcile(self, *args: str, code: int):
        return self.p.run(*args, "--identity", str(self.p.key), code=code)

    def audited(self, action: str) -> list[dict]:
        """The audit entries of `action` (`queue.retry`, `queue.kill`)."""
        lines = self.reconcile("audit", "export", code=0).out.splitlines()
        return [e for e in map(json.loads, lines) if action in e.values()]

    def stop_all(self) -> None:
        for pid in map(int, self.ledger.read_text().split()):
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lost(tmp_path, sshd, client_key):
    case = _Lost(tmp_path, sshd, client_key)
    yield case
    case.stop_all()


def test_retry_proceeds_once_the_lost_command_ended(lost):
    """The command ends on its own after the connection was lost: nothing of it runs, so
    `queue retry` queues the retry (the next pass adopts the kept result first)."""
    with open(lost.fifo, "w") as fifo:  # lets the orphan read its line and end
        fifo.write("go\n")
    wait_until(lambda: not running(lost.pid), timeout=30, message="the orphan to end")
    lost.reconcile("queue", "retry", lost.run_id, code=0)
    [entry] = lost.audited("queue.retry")
    assert "force" not in entry["detail"], entry


def test_queue_kill_stops_the_lost_command_then_retry_proceeds(lost):
    """The refusal's advice works: `queue kill` stops the orphan on the machine (the run
    stays `unknown`, audited), after which `queue retry` queues the retry."""
    lost.reconcile("queue", "retry", lost.run_id, code=2)
    assert lost.audited("queue.retry") == []
    killed = lost.reconcile("queue", "kill", lost.run_id, "--reason", "lost migration", code=0)
    assert "still ran on box and was stopped" in killed.out, killed
    wait_until(lambda: not running(lost.pid), timeout=10, message="the orphan to be gone")
    shown = lost.reconcile("queue", "show", lost.run_id, "--format", "json", code=0).json()
    assert shown["status"] == "unknown", shown
    again = lost.reconcile("queue", "kill", lost.run_id, code=2)
    assert "nothing of it runs on box" in again.err, again
    lost.reconcile("queue", "retry", lost.run_id, code=0)
    [kill] = lost.audited("queue.kill")
    assert kill["detail"].get("reason") == "lost migration", kill
    assert len(lost.audited("queue.retry")) == 1


def test_retry_of_a_run_on_an_unreachable_machine_needs_force(lost, sshd):
    """The machine cannot be asked: whether the command still runs cannot be told, so the
    retry is refused (exit 2, one line) unless `--force`, which the audit entry records."""
    sshd.stop()
    refused = lost.reconcile("queue", "retry", lost.run_id, code=2)
    [line] = refused.err.splitlines()
    assert f"cannot tell whether run {lost.run_id} (ops/migrate) still runs on box" in line
    assert "--force" in line and "Traceback" not in refused.err
    assert lost.audited("queue.retry") == []
    forced = lost.reconcile("queue", "retry", lost.run_id, "--force", code=0)
    assert "retried anyway (--force)" in forced.err, forced
    [entry] = lost.audited("queue.retry")
    assert entry["detail"].get("force") is True, entry
    killed = lost.reconcile("queue", "kill", lost.run_id, code=3)
    assert "box cannot be asked whether its command still runs" in killed.err, killed
