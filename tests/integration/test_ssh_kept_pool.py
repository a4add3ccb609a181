"""What a long-lived SSH transport (the daemon's, kept from pass to pass: `transport/kept.py`)
keeps on its targets, against real sshd: an idle connection closes after the pool's idle
timeout even when nothing else uses the pool, and a connection that stays open removes the
day-old markers again."""

from __future__ import annotations

import os
import time
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


def test_a_connection_the_daemon_keeps_removes_the_day_old_markers_again(
    sshd, client_key, monkeypatch
):
    """The day-old markers (docs/transports.md) were removed only when a connection opened:
    once the daemon kept its logins from pass to pass, a target whose connection never
    stayed idle for five minutes kept every run's markers, and the outputs let go, for ever.
    A kept connection removes them again every `CLEAN_EVERY` (here: at every watchdog tick)."""
    from reconciler.adapters.transport import ssh
    from reconciler.adapters.transport.kept import KeptTransports
    from reconciler.core.redact import Secret

    monkeypatch.setattr(ssh, "CLEAN_EVERY", 0.0)
    kept = KeptTransports()
    try:
        first = kept.ssh(lambda team, ref: Secret(client_key.private), 10.0, 3)
        assert first.run(sshd.machine(), "echo ok", {}, 30, 1).output == "ok\n"
        first.settle([1])
        first.close()  # the pass ended; its login is kept for the next one
        markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
        old = [markers / "999.meta", markers / "999.out"]
        for marker in old:
            marker.write_text("left by a run a reconciler let go two days ago\n")
            two_days_ago = time.time() - 2 * 86400
            os.utime(marker, (two_days_ago, two_days_ago))
        wait_until(
            lambda: not any(m.exists() for m in old),
            timeout=10,
            message="the day-old markers removed on the kept login",
        )
        assert (markers / "1.meta").exists()
        assert sshd.logins() == 1
    finally:
        kept.close()


def test_a_pass_that_ends_lets_go_of_none_of_the_retry_a_later_pass_runs(sshd, client_key):
    """Run ids outlive passes: a retry is the same run, its next attempt run by a later pass
    of the daemon (it does not wait for retries). The first pass, still draining another
    run, ended while the later one held the retry's output for its recording: its close let
    that output go (it had run the run's first attempt), so the acknowledgement found
    nothing to acknowledge and the recorded output stayed on the target."""
    from reconciler.adapters.transport.kept import KeptTransports
    from reconciler.core.redact import Secret

    kept = KeptTransports()
    machine = sshd.machine()
    out = sshd.root / "home" / ".cache" / "reconciler" / "runs" / "7.out"
    try:
        first = kept.ssh(lambda team, ref: Secret(client_key.private), 10.0, 3)
        failed = first.run(machine, "echo one; exit 1", {"RECONCILE_ATTEMPT": "1"}, 30, 7)
        assert failed.exit_code == 1
        first.settle([7])  # recorded: pending again, for its retry
        wait_until(lambda: out.read_bytes() == b"", timeout=10, message="the first emptied")
        second = kept.ssh(lambda team, ref: Secret(client_key.private), 10.0, 3)
        retried = second.run(machine, "echo two", {"RECONCILE_ATTEMPT": "2"}, 30, 7)
        assert retried.output == "two\n"
        first.close()  # the first pass ends while the second records the retry's end
        second.settle([7])
        wait_until(lambda: out.read_bytes() == b"", timeout=10, message="the output emptied")
        second.close()
    finally:
        kept.close()
