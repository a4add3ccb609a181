"""Runs whose outcome the reconciler missed, resolved through `reconcile --once` over real sshd:
the sshd child serving the connection is killed mid-command, or the reconciler itself is
killed with SIGKILL. The command goes on alone on the target; a later pass adopts the result
its markers kept (real exit code, real output) instead of leaving it `unknown` or running it
again.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.support.cli import reaped, spawn
from tests.support.markers import exited
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _waiting_task(p, tmp_path, code: int):
    """A task that logs its start to a ledger, waits for the test, prints and exits `code`."""
    fifo, ledger = tmp_path / "go", tmp_path / "ledger"
    os.mkfifo(fifo)
    p.task(
        "migrate",
        f'command: echo started >> "{ledger}"; read line < "{fifo}"; '
        f'echo "migrated 42 rows"; exit {code}\n',
    )
    return fifo, ledger


def _start_once(p, ledger):
    """`reconcile --once` in the background, returned once its command runs on the target."""
    proc = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root)
    wait_until(
        lambda: ledger.exists() or proc.poll() is not None,
        timeout=30,
        message="the command to start",
    )
    assert proc.poll() is None, proc.communicate()
    return proc


def _open_for_writing(fifo) -> int | None:
    """The write end of `fifo` once the command reads it (None while nobody does: a killed
    command never will, and a blocking open would hang the test instead of failing it)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


def _finish(fifo, markers, run_id: int) -> None:
    """Let the waiting command end, and wait for its exit marker."""
    fd = wait_until(
        lambda: _open_for_writing(fifo), timeout=10, message="the command to still be waiting"
    )
    os.write(fd, b"go\n")
    os.close(fd)
    wait_until(
        lambda: exited(markers, run_id),
        timeout=30,
        message="the command's exit marker",
    )


def test_an_sshd_child_killed_mid_command_is_unknown_alerted_once_then_adopted(
    tmp_path, sshd, client_key, receiver
):
    p = ssh_project(
        tmp_path / "project", sshd.port, sshd.host_key, client_key, alerts=[receiver.url()]
    )
    fifo, ledger = _waiting_task(p, tmp_path, 0)
    first = _start_once(p, ledger)
    with reaped(first):
        assert sshd.drop_connections()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 1 and "Traceback" not in err, err
    [run] = json.loads(out)["runs"]
    assert run["status"] == "unknown" and "connection lost" in run["error"], run
    assert receiver.titles() == ["reconciler: ops/migrate unknown on box"]

    _finish(fifo, sshd.root / "home" / ".cache" / "reconciler" / "runs", run["id"])
    second = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()
    assert [(r["id"], r["status"], r["exit_code"]) for r in second["runs"]] == [
        (run["id"], "succeeded", 0)
    ]
    shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert shown["output"] == "migrated 42 rows\n"

    third = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()
    assert third["runs"] == []
    assert ledger.read_text() == "started\n" and p.run_count() == 1
    assert receiver.titles() == ["reconciler: ops/migrate unknown on box"]  # still one alert


def test_a_killed_once_is_adopted_by_the_next_pass_with_the_real_exit_code_and_output(
    tmp_path, sshd, client_key
):
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    fifo, ledger = _waiting_task(p, tmp_path, 5)
    first = _start_once(p, ledger)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    [run_id] = [r["id"] for r in p.run("queue", "list", "--format", "json", code=0).json()]

    _finish(fifo, sshd.root / "home" / ".cache" / "reconciler" / "runs", run_id)
    second = p.run("--once", "--format", "json", "--identity", str(p.key), code=1).json()
    assert [(r["id"], r["status"], r["exit_code"]) for r in second["runs"]] == [
        (run_id, "failed", 5)
    ]
    shown = p.run("queue", "show", str(run_id), "--format", "json", code=0).json()
    assert (shown["output"], shown["attempt"]) == ("migrated 42 rows\n", 1)
    assert ledger.read_text() == "started\n" and p.run_count() == 1  # it started once
    p.run("--once", "--identity", str(p.key), code=0)  # a failed once-run is final
    assert ledger.read_text() == "started\n"


def test_a_lost_run_still_running_at_the_next_pass_is_left_to_finish_then_adopted(
    tmp_path, sshd, client_key
):
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    fifo, ledger = _waiting_task(p, tmp_path, 0)
    first = _start_once(p, ledger)
    with reaped(first):
        assert sshd.drop_connections()
        out, err = first.communicate(timeout=60)
    [run] = json.loads(out)["runs"]
    assert run["status"] == "unknown", run

    # The command still waits on the target: a pass neither kills it nor re-runs it.
    second = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()
    assert second["runs"] == []
    shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert shown["status"] == "unknown" and "kept no result" not in shown["error"]

    _finish(fifo, sshd.root / "home" / ".cache" / "reconciler" / "runs", run["id"])
    third = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()
    assert [(r["id"], r["status"]) for r in third["runs"]] == [(run["id"], "succeeded")]
    assert ledger.read_text() == "started\n" and p.run_count() == 1


def test_a_stores_crashed_run_never_stops_another_stores_live_run_of_the_same_id(
    tmp_path, sshd, client_key
):
    """Two reconcilers with their own stores log in to one target account (a reconciler moved
    to a new host, a second project): their run ids overlap. Store B's pass was killed while
    its run 1 ran; that command ended. Store A's run 1 now runs there, in the same markers.
    B's next pass recovers its run 1: it must not take A's markers for its own, nor stop A's
    command (which then ends as it would have)."""
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    b = ssh_project(tmp_path / "b", sshd.port, sshd.host_key, client_key)
    fifo_b, ledger_b = _waiting_task(b, tmp_path / "b", 0)
    crashed = _start_once(b, ledger_b)
    crashed.send_signal(signal.SIGKILL)
    crashed.communicate(timeout=30)
    _finish(fifo_b, markers, 1)  # B's command ended; its pass never recorded it

    a = ssh_project(tmp_path / "a", sshd.port, sshd.host_key, client_key)
    fifo_a, ledger_a = _waiting_task(a, tmp_path / "a", 0)
    live = _start_once(a, ledger_a)
    with reaped(live):
        b.run("--once", "--format", "json", "--identity", str(b.key), code=None)
        _finish(fifo_a, markers, 1)  # A's command still waits: B's pass left it alone
        out, _ = live.communicate(timeout=60)
    assert [(r["id"], r["status"]) for r in json.loads(out)["runs"]] == [(1, "succeeded")]
