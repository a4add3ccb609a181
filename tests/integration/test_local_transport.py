"""The local transport with real processes: environment, output, timeouts, orphans."""

from __future__ import annotations

import os
import time

import pytest

from reconciler.adapters.transport.local import LocalTransport
from reconciler.core.model import Machine
from reconciler.core.output import split_mark
from reconciler.core.redact import Secret
from tests.support.waiting import wait_until

BOX = Machine("box", "ops", transport="local")


@pytest.fixture
def transport(tmp_path):
    return LocalTransport(tmp_path / "runs")


def test_child_sees_allow_listed_environment_and_its_secrets_but_not_ours(transport, monkeypatch):
    monkeypatch.setenv("RECONCILE_IDENTITY", "AGE-SECRET-KEY-1NOTFORTASKS")
    done = transport.run(
        BOX, 'echo "$RECONCILE_IDENTITY|$PW|$HOME"', {"PW": Secret("pw-1234")}, 10, 1
    )
    assert done.output == f"|pw-1234|{os.environ['HOME']}\n" and done.exit_code == 0


def test_timeout_kills_the_whole_process_group(transport, tmp_path):
    pids = tmp_path / "pids"
    # Not a lone `sleep` (sh would exec it): a shell with a child, and a grandchild.
    started = time.monotonic()
    done = transport.run(BOX, f'sleep 60 & echo $! > "{pids}"; sleep 60; true', {}, 1, 2)
    assert done.timed_out and done.exit_code is None
    assert time.monotonic() - started < 10
    child = int(pids.read_text())
    wait_until(
        lambda: (
            not os.path.exists(f"/proc/{child}")
            or open(f"/proc/{child}/stat").read().split()[2] == "Z"
        ),
        timeout=10,
        message="the background child to die",
    )


def test_only_the_last_64_kib_of_output_is_kept(transport):
    done = transport.run(BOX, "head -c 300000 /dev/zero | tr '\\0' a; echo; echo END", {}, 30, 3)
    dropped, tail = split_mark(done.output)
    assert tail.endswith("a\nEND\n") and len(tail) == 64 * 1024
    assert dropped + len(tail) == 300000 + len("\nEND\n")  # the mark says what was dropped


def test_background_child_holding_the_pipe_does_not_hold_the_run(transport):
    started = time.monotonic()
    done = transport.run(BOX, "sleep 30 & echo started", {}, 20, 4)
    assert (done.exit_code, done.output, done.timed_out) == (0, "started\n", False)
    assert time.monotonic() - started < 10


def _environ(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return environ.read().split(b"\0")


def test_reap_stops_an_orphaned_command_of_that_run_only(transport, tmp_path):
    import subprocess

    from reconciler.adapters.transport.local import child_environment

    proc = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 60; true"],
        start_new_session=True,
        env=child_environment({"RECONCILE_RUN_ID": "7"}),
    )
    # An orphan has long been running: Popen may return while the child is still inside
    # execve (vfork), when /proc/PID/environ is still empty and reap cannot tell it is ours.
    wait_until(
        lambda: b"RECONCILE_RUN_ID=7" in _environ(proc.pid),
        timeout=10,
        message="the orphan's shell to have started",
    )
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "8.pgid").write_text(str(proc.pid))
    transport.reap(BOX, 8)  # the marker names another run's id: never kill a stranger
    assert proc.poll() is None
    (tmp_path / "runs" / "7.pgid").write_text(str(proc.pid))
    transport.reap(BOX, 7)
    assert proc.wait(timeout=10) != 0
    assert not (tmp_path / "runs" / "7.pgid").exists()
