"""Alerts across state transitions, through `reconcile --once` over real sshd and a real
HTTP receiver (apprise): a machine's second outage alerts again, and a run adopted after a
lost connection alerts its real final status."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.cli import reaped, spawn
from tests.support.markers import exited
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

UNREACHABLE = "reconciler: machine unreachable on box"


def _once(p, code: int):
    return p.run("--once", "--format", "json", "--identity", str(p.key), code=code).json()


def test_a_machine_that_answers_again_alerts_again_at_its_next_outage(
    tmp_path, sshd, client_key, receiver
):
    p = ssh_project(
        tmp_path / "project", sshd.port, sshd.host_key, client_key, alerts=[receiver.url()]
    )
    sshd.stop()
    p.task("one", "command: 'true'\n")
    _once(p, 1)
    assert receiver.titles().count(UNREACHABLE) == 1

    sshd.start()
    p.task("two", "command: 'true'\n")
    second = _once(p, 0)
    assert {r["task"]: r["status"] for r in second["runs"]}["ops/two"] == "succeeded"
    assert receiver.titles().count(UNREACHABLE) == 1  # no note while it answers

    sshd.stop()
    p.task("three", "command: 'true'\n")
    _once(p, 1)
    assert receiver.titles().count(UNREACHABLE) == 2, receiver.titles()
    p.task("four", "command: 'true'\n")
    _once(p, 1)
    assert receiver.titles().count(UNREACHABLE) == 2, "one alert per outage"


def test_a_run_adopted_as_failed_after_a_lost_connection_alerts_failed_once(
    tmp_path, sshd, client_key, receiver
):
    p = ssh_project(
        tmp_path / "project", sshd.port, sshd.host_key, client_key, alerts=[receiver.url()]
    )
    fifo, ledger = tmp_path / "go", tmp_path / "ledger"
    os.mkfifo(fifo)
    p.task("migrate", f'command: echo started >> "{ledger}"; read line < "{fifo}"; exit 4\n')
    first = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: ledger.exists() or first.poll() is not None,
            timeout=30,
            message="the command to start",
        )
        assert first.poll() is None
        assert sshd.drop_connections()
        out, err = first.communicate(timeout=60)
    [run] = json.loads(out)["runs"]
    assert run["status"] == "unknown", (run, err)
    assert receiver.titles() == ["reconciler: ops/migrate unknown on box"]

    fd = wait_until(lambda: _writer(fifo), timeout=10, message="the command still waiting")
    os.write(fd, b"go\n")
    os.close(fd)
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    wait_until(
        lambda: exited(markers, run["id"]),
        timeout=30,
        message="the command's exit marker",
    )
    adopted = _once(p, 1)
    assert [(r["id"], r["status"], r["exit_code"]) for r in adopted["runs"]] == [
        (run["id"], "failed", 4)
    ]
    wait_until(lambda: len(receiver.titles()) >= 2, timeout=15, message="the failed alert")
    assert receiver.titles() == [
        "reconciler: ops/migrate unknown on box",
        "reconciler: ops/migrate failed on box",
    ]
    _once(p, 0)
    assert len(receiver.titles()) == 2, "the adopted failure alerts once"


def _writer(fifo) -> int | None:
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None
