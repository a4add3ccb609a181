"""The daemon stops on SIGTERM whichever of its threads the kernel hands the signal to.

A signal sent to a process is delivered to any one of its threads that does not block it: the
watch-files thread, the file watcher's own (non-Python) thread, a pass thread. Python runs the
handler in the main thread only, and a main thread asleep in a long wait is not woken by a
signal another thread caught: the daemon had run its tasks and then slept through SIGTERM
(an hour's poll_interval). The test aims SIGTERM at one such thread with tgkill(2).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import spawn
from tests.support.waiting import wait_until

SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)


def _tgkill(pid: int, tid: int, sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def _named(pid: int, prefix: str) -> int | None:
    """A thread of `pid` whose name starts with `prefix`, or None."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if (
                Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith(prefix)
                and int(tid) != pid
            ):
                return int(tid)
        except OSError:  # a thread that just ended
            continue
    return None


@pytest.mark.skipif(SYS_TGKILL is None, reason="tgkill's number is known for x86_64/aarch64")
def test_a_sigterm_caught_by_another_thread_of_the_daemon_still_stops_it(project):
    project.write("reconciler.yaml", "poll_interval: 1h\n")
    project.task("first", f"command: {project.record('first')}\n")
    proc = spawn("--watch-files", cwd=project.root)
    try:
        wait_until(lambda: "first" in project.ledger_lines(), timeout=30, message="first task")
        # The file watcher's own thread (notify-rs, not Python's) lives as long as the daemon.
        watcher = wait_until(
            lambda: _named(proc.pid, "notify"), timeout=30, message="the file watcher's thread"
        )
        _tgkill(proc.pid, watcher, signal.SIGTERM)
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the daemon slept through a SIGTERM that another thread caught")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = proc.communicate()
    assert code == 0, err
    assert "received SIGTERM" in err
