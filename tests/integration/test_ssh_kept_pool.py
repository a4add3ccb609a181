"""What a long-lived SSH transport (the daemon's, kept from pass to pass: `transport/kept.py`)
keeps on its targets, against real sshd: an idle connection closes after the pool's idle
timeout even when nothing else uses the pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_an_idle_connection_closes_though_no_later_run_uses_the_pool(sshd, transport):
    """The idle connections were looked for only when a channel was given back: in the
    daemon, a machine whose tasks (or itself) left the inventory kept its login and its
    runner for ever."""
    runner = transport.run(sshd.machine(), "echo $PPID", {}, 30, 1).output.split()[0]
    transport.pool.idle_timeout = 0.5
    wait_until(
        lambda: not Path(f"/proc/{runner}").exists(), timeout=10, message="the idle login to close"
    )
