"""Acknowledging outputs only once the runs' ends are recorded (`SshTransport.settle`), against
real sshd: until then each run's output stays in `<id>.out` on the target, so a reconciler
killed before its end batch leaves it to be adopted; a settled output is emptied; a run whose
end was refused, or a transport closed first, leaves it. The wrappers waiting for their
acknowledgement hold channels: settled ones free their places without a second connection.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.adapters.transport.ssh import SshTransport
from reconciler.core.redact import Secret
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def markers(tmp_path) -> Path:
    return tmp_path / "markers"


def _transport(client_key, markers: Path, **options) -> SshTransport:
    return SshTransport(
        lambda machine: Secret(client_key.private),
        markers_dir=str(markers),
        connect_timeout=5,
        hold_outputs=True,
        **options,
    )


@pytest.fixture
def holding(client_key, markers):
    made = _transport(client_key, markers)
    yield made
    made.close()


def _held(transport: SshTransport) -> list[int]:
    """The runs whose wrapper waits on its channel for an acknowledgement."""
    return sorted(transport._held)


def test_an_output_stays_on_the_target_until_its_run_is_settled(sshd, holding, markers):
    machine = sshd.machine()
    done = holding.run(machine, "echo out-7", {}, 10, 7)
    assert done.output == "out-7\n" and done.exit_code == 0
    assert (markers / "7.out").read_text() == "out-7\n"  # read, not acknowledged
    assert _held(holding) == [7]  # the wrapper waits on its channel
    holding.settle([7])
    wait_until(lambda: (markers / "7.out").stat().st_size == 0, message="the output emptied")


def test_a_run_whose_end_was_not_recorded_keeps_its_output_for_the_next_pass(
    sshd, client_key, holding, markers
):
    machine = sshd.machine()
    assert holding.run(machine, "echo kept; exit 3", {}, 10, 8).exit_code == 3
    holding.settle([], [8])  # the end batch refused it
    assert _held(holding) == []  # let go at once
    later = _transport(client_key, markers)
    try:
        adopted = later.reap(machine, 8)
    finally:
        later.close()
    assert (adopted.exit_code, adopted.output) == (3, "kept\n")


def test_closing_before_settling_leaves_every_output_to_be_adopted(sshd, client_key, markers):
    machine = sshd.machine()
    first = _transport(client_key, markers)
    try:
        for run_id in (1, 2):
            assert first.run(machine, f"echo run-{run_id}", {}, 10, run_id).ok
        first.settle([1])
    finally:
        first.close()  # waits for run 1's wrapper to empty its output
    assert (markers / "1.out").stat().st_size == 0
    later = _transport(client_key, markers)
    try:
        adopted = later.reap(machine, 2)
    finally:
        later.close()
    assert (adopted.exit_code, adopted.output) == (0, "run-2\n")


def test_a_check_then_a_command_of_one_run_settle_the_commands_output(sshd, holding, markers):
    """A run's check and command share its id: the check's wrapper is let go when the
    command starts (its acknowledgement would empty the command's output)."""
    machine = sshd.machine()
    assert holding.run(machine, "echo check; exit 1", {}, 10, 9).exit_code == 1
    assert holding.run(machine, "echo command", {}, 10, 9).output == "command\n"
    assert _held(holding) == [9]
    assert (markers / "9.out").read_text() == "command\n"
    holding.settle([9])
    wait_until(lambda: (markers / "9.out").stat().st_size == 0, message="the output emptied")


def test_settled_channels_make_room_on_the_same_connection(sshd, client_key, markers):
    """Two channels a connection: each batch of two runs is settled before the next starts
    (as the engine's end batches do), and their places are free again without a login."""
    machine = sshd.machine(max_parallel=2)
    transport = _transport(client_key, markers, max_channels=2)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for batch in range(5):
                ids = [10 + 2 * batch, 11 + 2 * batch]
                outputs = list(
                    pool.map(lambda i: transport.run(machine, f"echo {i}", {}, 10, i).output, ids)
                )
                assert outputs == [f"{i}\n" for i in ids]
                transport.settle(ids)
        assert transport.pool.connects == 1 and sshd.logins() == 1
    finally:
        transport.close()
    assert all((markers / f"{i}.out").stat().st_size == 0 for i in range(10, 20))


def test_a_server_with_one_session_per_connection_runs_check_and_command_on_one_login(
    sshd_factory, client_key, markers
):
    """The check's wrapper is let go (it exits keeping its output, which the command's then
    replaces) and its session is over before the command's channel opens: sshd with
    MaxSessions 1 needs no second login, nor does the next run after a settle."""
    daemon = sshd_factory(max_sessions=1)
    machine = daemon.machine(max_parallel=1)
    transport = _transport(client_key, markers)
    try:
        assert transport.run(machine, "echo check; exit 1", {}, 10, 5).exit_code == 1
        assert transport.run(machine, "echo command", {}, 10, 5).output == "command\n"
        transport.settle([5])
        assert transport.run(machine, "echo next", {}, 10, 6).output == "next\n"
        transport.settle([], [6])
        assert transport.pool.connects == 1 and daemon.logins() == 1
    finally:
        transport.close()
    assert (markers / "5.out").stat().st_size == 0 and (markers / "6.out").read_text() == "next\n"


# --- outputs read from markers: adoption and the stop of a timed-out run ------------------------


def test_an_adopted_output_stays_on_the_target_until_its_adoption_is_settled(
    sshd, client_key, holding, markers
):
    """Reading a dead run's markers (reap) removed its output at once: a pass killed before
    it recorded the adoption left the next one an exit code without its output. It stays
    until settle says the adoption was recorded; an unrecorded one keeps it."""
    machine = sshd.machine()
    for run_id in (11, 12):
        holding.run(machine, f"echo out-{run_id}; exit 3", {}, 10, run_id)
    holding.close()  # a pass that died before recording: both outputs stay
    other = _transport(client_key, markers)
    try:
        for run_id in (11, 12):
            kept = other.reap(machine, run_id, attempt=0, command=f"echo out-{run_id}; exit 3")
            assert (kept.exit_code, kept.output) == (3, f"out-{run_id}\n")
            assert (markers / f"{run_id}.out").read_text() == f"out-{run_id}\n"
        other.settle([11], [12])
        assert not (markers / "11.out").exists()  # removed before settle returned
        assert (markers / "12.out").read_text() == "out-12\n"  # for a later pass to adopt
    finally:
        other.close()
    again = _transport(client_key, markers)
    try:
        kept = again.reap(machine, 12, attempt=0, command="echo out-12; exit 3")
        assert kept.output == "out-12\n"
    finally:
        again.close()


def test_a_timed_out_run_keeps_its_output_on_the_target_until_its_end_is_settled(
    sshd, holding, markers
):
    """Stopping a timed-out run read and removed its output in one step, before its end was
    recorded. It stays until settle."""
    machine = sshd.machine()
    done = holding.run(machine, "echo partial; sleep 30", {}, 1, 21)
    assert done.timed_out and done.output == "partial\n"
    assert (markers / "21.out").read_text() == "partial\n"
    holding.settle([21])
    assert not (markers / "21.out").exists()


def test_forget_removes_only_the_output_of_the_invocation_read(sshd, client_key, holding, markers):
    """A later attempt of the run (same id, another nonce) started before the settle of the
    earlier one's adoption keeps its output."""
    machine = sshd.machine()
    holding.run(machine, "echo first", {}, 10, 31)
    holding.close()
    other = _transport(client_key, markers)
    try:
        assert other.reap(machine, 31).output == "first\n"
        newer = _transport(client_key, markers)
        try:
            newer.run(machine, "echo second", {}, 10, 31)  # held: not acknowledged
            other.settle([31])
            assert (markers / "31.out").read_text() == "second\n"
        finally:
            newer.close()
    finally:
        other.close()
