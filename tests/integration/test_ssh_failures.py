"""Failure classes over SSH against real sshd: unreachable, auth, lost connections, reconnects."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.adapters.transport.ssh import ConnectionLost, SshTransport
from reconciler.core.errors import AuthFailed, Unreachable
from reconciler.core.redact import Secret
from tests.support.sshd import free_port, generate_key, wait_for_file


def test_sshd_killed_mid_run_is_connection_lost_not_a_failure(sshd, transport, tmp_path):
    started = tmp_path / "started"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["done"] = transport.run(
                sshd.machine(), f'echo up > "{started}"; sleep 30', {}, 60, 1
            )
        except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    wait_for_file(started)
    assert sshd.drop_connections()
    worker.join(30)
    assert not worker.is_alive()
    error = outcome.get("error")
    assert isinstance(error, ConnectionLost), outcome
    assert error.retryable is False and "outcome is unknown" in str(error)


def test_sshd_down_is_unreachable_and_retryable(sshd, transport):
    sshd.stop()
    with pytest.raises(Unreachable) as caught:
        transport.run(sshd.machine(), "echo ok", {}, 10, 1)
    assert caught.value.retryable is True
    assert f"127.0.0.1:{sshd.port}" in str(caught.value)


def test_nothing_listening_and_unresolvable_hosts_are_unreachable(sshd, transport):
    closed = sshd.machine(port=free_port())
    with pytest.raises(Unreachable):
        transport.run(closed, "echo ok", {}, 10, 1)
    with pytest.raises(Unreachable, match="resolve"):
        transport.run(sshd.machine(host="no-such-host.invalid"), "echo ok", {}, 10, 2)


def test_an_unauthorized_key_is_auth_failed_and_not_retried(sshd, tmp_path):
    stranger = SshTransport(
        lambda machine: Secret(generate_key().private),
        markers_dir=str(tmp_path / "markers"),
        connect_timeout=5,
    )
    try:
        with pytest.raises(AuthFailed) as caught:
            stranger.run(sshd.machine(), "echo ok", {}, 10, 1)
    finally:
        stranger.close()
    assert caught.value.retryable is False and "authorized_keys" in str(caught.value)


def test_a_restarted_sshd_is_reconnected_to_transparently(sshd, transport):
    machine = sshd.machine()
    assert transport.run(machine, "echo one", {}, 10, 1).ok
    sshd.restart()  # same host key: the pooled connection died, nothing was in flight
    assert transport.run(machine, "echo two", {}, 10, 2).output == "two\n"
    assert sshd.logins() == 2


def test_concurrent_runs_to_a_down_machine_all_fail_fast_as_unreachable(sshd, transport):
    sshd.stop()
    machine = sshd.machine(max_parallel=8)

    def attempt(run_id: int) -> str:
        try:
            transport.run(machine, "echo ok", {}, 10, run_id)
        except Unreachable as exc:
            return type(exc).__name__
        return "ran"

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(attempt, range(8))) == {"Unreachable"}
