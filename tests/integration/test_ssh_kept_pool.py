"""What a long-lived SSH transport (the daemon's, kept from pass to pass: `transport/kept.py`)
keeps on its targets, against real sshd: an idle connection closes after the pool's idle
timeout even when nothing else uses the pool, and a connection that stays open removes the
day-old markers again."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.sshd import descendants
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_an_idle_connection_closes_though_no_later_run_uses_the_pool(sshd, transport):
    """The idle connections were looked for only when a channel was given back: in the
    daemon, a machine whose tasks (or itself) left the inventory kept its login and its
    runner for ever."""
    assert transport.run(sshd.machine(), "echo ok", {}, 30, 1).output == "ok\n"
    assert descendants(sshd.proc.pid)  # the login's own sshd, its runner
    transport.pool.idle_timeout = 0.5
    wait_until(
        lambda: not descendants(sshd.proc.pid), timeout=10, message="the idle login to close"
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


def test_runners_left_idle_close_while_their_connection_goes_on(sshd, transport, tmp_path):
    """A burst of runs at once starts as many runners; a connection that stays in use (the
    daemon's, a run every pass on one runner) kept every one of them for ever, idle, after
    the burst or after `max_parallel` was lowered. One idle for the pool's idle timeout
    exits, as an idle connection closes."""
    machine = sshd.machine()
    go = tmp_path / "go"
    wait = f'while [ ! -f "{go}" ]; do sleep 0.02; done; echo $PPID'
    with ThreadPoolExecutor(3) as burst:
        runs = [burst.submit(transport.run, machine, wait, {}, 30, i) for i in (1, 2, 3)]
        wait_until(lambda: len(_runners(sshd)) == 3, timeout=10, message="three runners")
        go.touch()
        runners = {run.result().output.split()[0] for run in runs}
    assert len(runners) == 3
    transport.pool.idle_timeout = 0.5
    used: set[str] = set()

    def surplus_gone() -> bool:  # a run at every look: the connection never idles
        used.add(transport.run(machine, "echo $PPID", {}, 30, 4).output.split()[0])
        return all(not Path(f"/proc/{pid}").exists() for pid in runners - used)

    wait_until(surplus_gone, timeout=10, message="the runners left idle to exit")
    assert len(used) == 1 and all(Path(f"/proc/{pid}").exists() for pid in used)
    assert sshd.logins() == 1


def _runners(sshd) -> list[int]:
    home = f"HOME={sshd.root / 'home'}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes()
            if b"reconciler-runner" in argv and home in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def test_runners_still_starting_when_the_pass_closes_open_no_second_login(sshd, transport):
    """`prepare` starts runners from a thread of its own while the runs go on. A pass whose
    runs all ended before it had started them closed its transport under that thread, which
    then took a channel from the closed pool and so logged in again (a second login, seen
    once in 60 loaded runs of tests/e2e/test_review_runners.py's eight-runs test), and a
    connect still on its way at the close stayed open, never used."""
    import threading

    machine = sshd.machine(max_parallel=8)
    transport.prepare([machine], {machine.name: 7})
    transport.close()  # at once: the connect ahead is on its way, its runners not started
    for thread in threading.enumerate():
        if thread.name == "ssh-connect":
            thread.join(30)
    assert sshd.logins() <= 1
    wait_until(lambda: not descendants(sshd.proc.pid), timeout=10, message="no login left open")
