"""A network partition mid-command, through `reconcile --once`, with a TCP proxy in front of a
real sshd that stops forwarding (no FIN, no RST: the packets just stop).

The SSH liveness check must notice within a few keepalive intervals (here `ssh_keepalive: 2s`,
3 probes), not at the task's timeout: the run ends `unknown` ("connection lost"), the machine
is alerted unreachable once, and once the network is back the next pass adopts the result the
command left in its markers on the target.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.cli import spawn
from tests.support.markers import exited
from tests.support.ssh_project import ssh_project
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(sshd):
    made = TcpProxy(sshd.port)
    yield made
    made.close()


def test_a_partition_mid_command_ends_unknown_within_the_keepalive_and_is_adopted_later(
    tmp_path, sshd, proxy, client_key, receiver
):
    p = ssh_project(
        tmp_path,
        proxy.port,
        sshd.host_key,
        client_key,
        alerts=[receiver.url()],
        settings="ssh_keepalive: 2s\nssh_keepalive_count: 3\n",
    )
    fifo, started = tmp_path / "go", tmp_path / "started"
    os.mkfifo(fifo)
    p.task(
        "deploy",
        f'timeout: 2m\ncommand: echo up > "{started}"; read line < "{fifo}"; '
        'echo "finished behind the partition"; exit 5\n',
    )
    first = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root)
    try:
        wait_until(
            lambda: started.exists() or first.poll() is not None,
            timeout=30,
            message="the command to start",
        )
        assert first.poll() is None, first.communicate()
        proxy.partition()
        cut = time.monotonic()
        wait_until(
            lambda: first.poll() is not None, timeout=60, message="the pass to notice the partition"
        )
        noticed = time.monotonic() - cut
    finally:
        if first.poll() is None:
            first.kill()
        out, err = first.communicate(timeout=30)
    assert first.returncode == 1, err
    # 3 probes 2 s apart (6 s), plus a watchdog tick and a loaded CI host's scheduling.
    assert noticed < 20, f"the partition was noticed only after {noticed:.1f}s"
    assert "Traceback" not in err
    [run] = __import__("json").loads(out)["runs"]
    assert run["status"] == "unknown" and "connection lost" in run["error"], run
    wait_until(lambda: receiver.titles("unreachable"), timeout=15, message="the unreachable alert")
    assert len(receiver.titles("unreachable")) == 1

    proxy.heal()
    with open(fifo, "w") as release:  # the command went on behind the partition: let it end
        release.write("go\n")
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    wait_until(
        lambda: exited(markers, run["id"]),
        timeout=30,
        message="the command's exit marker",
    )

    second = p.run("--once", "--format", "json", "--identity", str(p.key), code=1)
    [adopted] = [r for r in second.json()["runs"] if r["id"] == run["id"]]
    assert (adopted["status"], adopted["exit_code"]) == ("failed", 5), adopted
    shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert shown["output"] == "finished behind the partition\n"
    assert p.run_count() == 1  # adopted, not run again
    p.run("--once", "--identity", str(p.key), code=0)  # a failed once-run is final
    assert p.run_count() == 1
    assert len(receiver.titles("unreachable")) == 1
