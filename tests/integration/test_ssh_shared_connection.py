"""Concurrent runs on one machine share one SSH connection: nothing one run sends may make
sshd drop it. The flaky pass (a run ended `unknown`, "connection lost ... SSH session not
active", about once in 600 runs) was a half-close (SSH EOF) racing the remote wrapper's exit:
sshd got the EOF after freeing the channel and disconnected ("ieof packet referred to
nonexistent channel"). `tests/support/eof_race` makes that race lose every time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest

from reconciler.adapters.transport.ssh import SshTransport
from reconciler.core.redact import Secret
from tests.support import eof_race
from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration
RUNS = 12


def test_once_with_concurrent_runs_on_one_machine_keeps_its_connection(tmp_path, sshd, client_key):
    project = ssh_project(tmp_path / "p", sshd.port, sshd.host_key, client_key)
    for i in range(RUNS):
        project.task(f"t{i}", f"command: echo ok-{i}\n")
    env = eof_race.install_in({}, tmp_path / "race")
    data = project.run(
        "--once",
        "--format",
        "json",
        "--identity",
        str(project.key),
        "--concurrency",
        "8",
        env=env,
        code=0,
    ).json()
    assert data["counts"] == {"succeeded": RUNS}
    assert "nonexistent channel" not in sshd.log_text()
    assert sshd.logins() == 1  # one connection did it all


def test_concurrent_runs_and_reaps_never_drop_the_shared_connection(
    tmp_path, sshd, client_key, monkeypatch
):
    monkeypatch.setattr(paramiko.Channel, "shutdown", eof_race._late_shutdown)
    transport = SshTransport(
        lambda machine: Secret(client_key.private), markers_dir=str(tmp_path / "markers")
    )
    machine = sshd.machine()
    try:
        with ThreadPoolExecutor(max_workers=machine.max_parallel) as pool:
            done = list(
                pool.map(lambda i: transport.run(machine, f"echo {i}", {}, 30, i), range(RUNS))
            )
        assert [d.output for d in done] == [f"{i}\n" for i in range(RUNS)]
        # Reading markers (a crashed pass's runs) goes over the same connection.
        adopted = transport.reap(machine, 3, command="echo 3")
        assert adopted is not None and adopted.exit_code == 0
        assert transport.run(machine, "echo after", {}, 30, RUNS).output == "after\n"
    finally:
        transport.close()
    assert "nonexistent channel" not in sshd.log_text()
    assert transport.pool.connects == 1 and sshd.logins() == 1


def test_a_server_with_fewer_sessions_than_runs_refuses_channels_not_the_connection(
    tmp_path, sshd_factory, client_key
):
    daemon = sshd_factory(max_sessions=2)
    transport = SshTransport(
        lambda machine: Secret(client_key.private), markers_dir=str(tmp_path / "markers")
    )
    machine = daemon.machine(max_parallel=6)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            done = list(
                pool.map(lambda i: transport.run(machine, f"echo {i}", {}, 30, i), range(RUNS))
            )
    finally:
        transport.close()
    assert [d.output for d in done] == [f"{i}\n" for i in range(RUNS)]
    # Refused channels went to more connections; none was mistaken for a lost one.
    assert 2 <= transport.pool.connects <= 6


def test_a_connection_failing_as_its_channel_closes_never_makes_an_internal_error(
    tmp_path, sshd, client_key
):
    project = ssh_project(tmp_path / "p", sshd.port, sshd.host_key, client_key)
    for i in range(3):
        project.task(f"t{i}", f"command: echo ok-{i}\n")
    env = eof_race.install_in({}, tmp_path / "race", failing_close=True)
    result = project.run("--once", "--format", "json", "--identity", str(project.key), env=env)
    assert "internal error" not in result.out + result.err
    assert result.json()["counts"] == {"succeeded": 3}


def test_a_timeout_on_a_server_with_one_session_per_connection_is_a_timeout_not_a_loss(
    tmp_path, sshd_factory, client_key
):
    """Stopping a timed-out run needs a channel beside the run's; sshd (MaxSessions 1)
    refuses it on that connection: the run is still `timed out`, not `unknown`."""
    daemon = sshd_factory(max_sessions=1)
    transport = SshTransport(
        lambda machine: Secret(client_key.private), markers_dir=str(tmp_path / "markers")
    )
    try:
        done = transport.run(daemon.machine(), "echo started; sleep 60", {}, 2, 1)
    finally:
        transport.close()
    assert done.timed_out and done.exit_code is None
    assert "started" in done.output
