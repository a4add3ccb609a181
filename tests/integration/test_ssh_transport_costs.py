"""What the SSH transport does to keep a run cheap, against real sshd: AES-GCM when the server
has it (and still any cipher it has), the connections of a pass opened ahead of its runs, all
at once; and the day-old markers are removed when a connection opens."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from reconciler.adapters.transport.ssh import SshTransport
from reconciler.core.errors import Unreachable
from tests.support.sshd import Sshd, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


class CtrOnlySshd(Sshd):
    """A daemon that offers no AES-GCM (as an old or a hardened server may)."""

    def _write_config(self) -> None:
        super()._write_config()
        with open(self.config, "a") as config:
            config.write("Ciphers aes128-ctr\n")


def _ciphers(transport: SshTransport) -> set[str]:
    return {
        connection.transport.remote_cipher
        for slot in transport.pool._slots.values()
        for connection in slot.connections
    }


def test_aes_gcm_is_chosen_when_the_server_has_it(sshd, transport):
    assert transport.run(sshd.machine(), "echo ok", {}, 30, 1).output == "ok\n"
    assert _ciphers(transport) == {"aes128-gcm@openssh.com"}


def test_a_server_without_aes_gcm_is_still_reached(tmp_path, client_key, transport):
    daemon = CtrOnlySshd(tmp_path / "ctr", [client_key.public]).start()
    try:
        assert transport.run(daemon.machine(), "echo ok", {}, 30, 1).output == "ok\n"
        assert _ciphers(transport) == {"aes128-ctr"}
    finally:
        daemon.stop()


def test_prepare_opens_every_connection_at_once_and_the_runs_use_them(sshd_factory, transport):
    daemons = [sshd_factory() for _ in range(3)]
    machines = [d.machine(f"m{i}") for i, d in enumerate(daemons)]
    transport.prepare(machines)  # returns at once: the logins go on in the background
    wait_until(lambda: transport.pool.connects == 3, timeout=30, message="three connections")
    for i, machine in enumerate(machines):
        assert transport.run(machine, f"echo {i}", {}, 30, i).output == f"{i}\n"
    transport.prepare(machines)  # nothing to do: they are open
    assert transport.pool.connects == 3
    assert [d.logins() for d in daemons] == [1, 1, 1]


def test_prepare_never_raises_and_the_run_says_why_it_cannot_reach(sshd, transport):
    nowhere = sshd.machine("gone", port=free_port())
    started = time.monotonic()
    transport.prepare([nowhere])
    assert time.monotonic() - started < 1
    with pytest.raises(Unreachable, match="gone"):
        transport.run(nowhere, "echo ok", {}, 30, 1)


def test_day_old_markers_are_removed_once_a_connection_opened(sshd, transport, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    old, fresh = markers / "1.meta", markers / "2.meta"
    old.write_text("x\n")
    fresh.write_text("y\n")
    # An ended run whose process group id now names a live group that another process leads:
    # that group is not the run's, so its markers go too.
    nonce = "0123456789abcdef0123456789abcdef"
    recycled = markers / "4.meta"
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        recycled.write_text(f"{nonce} 1 deadbeefdeadbeef {stranger.pid}\n{nonce} 0\n")
        (markers / "4.out").write_text("done\n")
        two_days_ago = time.time() - 2 * 86400
        for marker in (old, recycled, markers / "4.out"):
            os.utime(marker, (two_days_ago, two_days_ago))
        assert transport.run(sshd.machine(), "echo ok", {}, 30, 3).output == "ok\n"
        # The cleanup is not waited for by the first run (its channel ends in the background).
        wait_until(
            lambda: not any(m.exists() for m in (old, recycled, markers / "4.out")),
            timeout=30,
            message="the day-old markers removed",
        )
    finally:
        stranger.kill()
        stranger.wait()
    assert fresh.exists()


def _count_messages(transport: SshTransport) -> list[int]:
    """The message numbers the connection's transport sends from now on."""
    [connection] = next(iter(transport.pool._slots.values())).connections
    sent: list[int] = []
    send = connection.transport._send_user_message

    def counted(message) -> None:
        sent.append(message.asbytes()[0])
        send(message)

    connection.transport._send_user_message = counted
    return sent


OPEN, DATA, EOF, CLOSE, REQUEST = 90, 94, 96, 97, 98


def _connected(sshd, client_key, markers, hold: bool, runners: bool):
    """A transport connected to `sshd` (without the day-old cleanup's own channel, which is
    not counted here), and the machine."""
    from reconciler.core.redact import Secret

    transport = SshTransport(
        lambda machine: Secret(client_key.private),
        markers_dir=str(markers),
        hold_outputs=hold,
        runners=runners,
    )
    transport.pool._opened = None
    machine = sshd.machine()
    transport.prepare([machine])
    wait_until(lambda: transport.pool.connects == 1, timeout=30, message="connected")
    return transport, machine


@pytest.mark.parametrize("hold", [True, False], ids=["held until settle", "acknowledged at once"])
def test_a_run_sends_no_eof_only_what_the_wrapper_reads_and_the_close(
    sshd, client_key, tmp_path, hold
):
    """With one channel per run, the reconciler never half-closes a channel (see
    `wrapper`): a run sends its channel's open, the exec request, its input, its
    acknowledgement and the close — no EOF, which would be one more message for both sides
    and could reach sshd after it freed the channel. Counted from what the client's
    transport really sends, with outputs held until `settle` (as a pass does) and without."""
    transport, machine = _connected(sshd, client_key, tmp_path / "markers", hold, runners=False)
    try:
        sent = _count_messages(transport)
        assert transport.run(machine, "echo ok", {"A": "1"}, 30, 7).output == "ok\n"
        transport.settle([7])
        wait_until(lambda: CLOSE in sent, timeout=30, message="the run's channel closed")
        # open, exec, data (input, acknowledgement), close.
        assert sorted(sent) == [OPEN, DATA, DATA, CLOSE, REQUEST]
    finally:
        transport.close()


@pytest.mark.parametrize("hold", [True, False], ids=["held until settle", "acknowledged at once"])
def test_a_run_on_a_runner_costs_two_messages_and_the_runner_ends_without_eof(
    sshd, client_key, tmp_path, hold
):
    """On a runner a run is one message out (its request) and one more for its
    acknowledgement: no channel is opened, asked to exec or closed per run. The runner's
    own channel is opened once, and at the end it is told to quit and closed, with no EOF
    (see `wrapper`). The outputs are gone from the target once acknowledged."""
    markers = tmp_path / "markers"
    transport, machine = _connected(sshd, client_key, markers, hold, runners=True)
    try:
        sent = _count_messages(transport)
        assert transport.run(machine, "echo one", {"A": "1"}, 30, 7).output == "one\n"
        transport.settle([7])
        assert sorted(sent) == [OPEN, DATA, DATA, REQUEST]  # the runner started; one run
        del sent[:]
        for run_id in (8, 9):
            assert transport.run(machine, f"echo {run_id}", {}, 30, run_id).output == f"{run_id}\n"
            transport.settle([run_id])
        assert sent == [DATA, DATA] * 2
    finally:
        transport.close()
    # Told to quit; the close of its channel, if paramiko answers the server's before the
    # connection is gone; never an EOF.
    assert sent[4] == DATA and set(sent[5:]) <= {CLOSE} and EOF not in sent
    wait_until(
        lambda: all(markers.joinpath(f"{i}.out").stat().st_size == 0 for i in (7, 8, 9)),
        timeout=30,
        message="the acknowledged outputs emptied",
    )
