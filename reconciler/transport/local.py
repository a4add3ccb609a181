"""The `local` transport: `sh -c` on the reconciler's own host.

The command runs in its own session (process group), so a timeout kills the whole tree, not
just the shell. Secrets travel only in the child's environment, never in its argv. The child
does not inherit the reconciler's environment (which may hold `RECONCILE_IDENTITY`): it gets a
small allow-list plus the task's env.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Mapping

from ..model import Machine
from .base import Completed, Transport

# What a task sees of the reconciler's own environment; everything else is the task's `env`.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                 "SHELL", "TERM")
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a timed-out process group


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a local task: the allow-list from ours, overlaid with the task's."""
    base = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    base.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return {**base, **{k: str(v) for k, v in env.items()}}


class LocalTransport(Transport):
    """Runs commands as child processes of the reconciler."""

    def run(self, machine: Machine, command: str, env: Mapping[str, str], timeout: float,
            run_id: int) -> Completed:
        started = time.monotonic()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=child_environment(env), start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            out = _kill_group(proc)
            timed_out = True
        return Completed(
            exit_code=None if timed_out else proc.returncode,
            output=out.decode("utf-8", errors="replace"),
            duration=time.monotonic() - started,
            timed_out=timed_out,
        )


def _kill_group(proc: subprocess.Popen) -> bytes:
    """SIGTERM the process group, SIGKILL it after a grace period; return what it printed."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            out, _ = proc.communicate(timeout=grace)
            return out or b""
        except subprocess.TimeoutExpired:
            continue
    return b""
