"""Declaring a pass or worker dead from outside, as its lease running out would: stop the
process, end its database sessions, age its leases with SQL (never by waiting 60 s).

`stopped(proc)` sends SIGSTOP and waits until the process is stopped for real (state T);
`end_other_sessions(url)` terminates every other session on the test's (fresh) database and
waits until they are gone, so nothing the stopped process had sent can land afterwards;
`expire_leases(url)` makes every running run's heartbeat an hour old.
"""

from __future__ import annotations

import signal
import subprocess

from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def stopped(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGSTOP)
    wait_until(lambda: _state(proc.pid) == "T", timeout=10, message="the process to stop")


def end_other_sessions(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    others = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    store_rows(url, f"SELECT pg_terminate_backend(pid) FROM ({others}) AS s", name)
    wait_until(
        lambda: not store_rows(url, others, name),
        timeout=10,
        message="the stopped process's sessions to end",
    )


def expire_leases(url: str) -> None:
    store_rows(
        url,
        "UPDATE runs SET heartbeat_at = now() - interval '1 hour', "
        "started_at = started_at - interval '1 hour' WHERE status = 'running'",
    )


__all__ = ["end_other_sessions", "expire_leases", "stopped"]
