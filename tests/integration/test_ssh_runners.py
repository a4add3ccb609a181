"""Runners (`wrapper.RUNNER`): one bash per channel that runs one run after another, against
real sshd and, for the script itself, real bash. A task cannot disturb its runner, a stopped
task is waited for, a recycled pid is never killed for a run's leader, an acknowledgement never
empties another invocation's output, and a target without bash gets one channel per run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.adapters.transport import wrapper
from reconciler.adapters.transport.pool import Runner
from reconciler.adapters.transport.ssh import SshTransport
from tests.support.sshd import Sshd
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _connection(transport: SshTransport):
    [slot] = transport.pool._slots.values()
    [connection] = slot.connections
    return connection


def test_runs_one_after_another_share_one_runner_whatever_a_task_does_to_its_group(sshd, transport):
    """A task runs in a process group of its own: killing that group (`kill 0`) ends the
    task, not the runner, which takes the next run."""
    machine = sshd.machine()
    first = transport.run(machine, "echo $PPID; kill -TERM 0; sleep 30", {}, 30, 1)
    assert first.exit_code == 128 + signal.SIGTERM and not first.timed_out
    runner_pid = first.output.split()[0]
    second = transport.run(machine, "echo $PPID", {}, 30, 2)
    assert second.output == f"{runner_pid}\n"  # the same runner
    connection = _connection(transport)
    assert connection.runs_runners is True
    assert [type(r) for r in connection.idle] == [Runner]


def test_a_stopped_task_is_waited_for_until_it_ends(sshd, transport):
    """A SIGSTOP is not the end of a task (the runner's job control is for its fork only)."""
    command = "(sleep 0.3; kill -CONT $$) & kill -STOP $$; echo resumed"
    done = transport.run(sshd.machine(), command, {}, 30, 1)
    assert (done.exit_code, done.output) == (0, "resumed\n")


class NoBashSshd(Sshd):
    """A daemon whose sessions find every program of /usr/bin but bash (as on a target that
    has none): the login shell cannot start a runner."""

    def _write_config(self) -> None:
        super()._write_config()
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        for program in Path("/usr/bin").iterdir():
            if program.name != "bash" and not (bin_dir / program.name).exists():
                (bin_dir / program.name).symlink_to(program)
        # The login shell is bash here, which sources ~/.bashrc for a command sshd runs.
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        (home / ".bashrc").write_text(f"PATH={bin_dir}\n")


def test_a_target_without_bash_gets_one_channel_per_run(tmp_path, client_key, transport):
    daemon = NoBashSshd(tmp_path / "nobash", [client_key.public]).start()
    try:
        machine = daemon.machine()
        for run_id in (1, 2):
            done = transport.run(machine, "echo ok; command -v bash || echo none", {}, 30, run_id)
            assert (done.exit_code, done.output) == (0, "ok\nnone\n")
        connection = _connection(transport)
        assert connection.runs_runners is False and connection.idle == []
        assert transport.pool.connects == 1 and daemon.logins() == 1
    finally:
        transport.close()
        daemon.stop()


# ---------------------------------------------------------------- the script, run by bash


class LocalRunner:
    """A runner started as sshd's login shell would start it, talking over pipes."""

    def __init__(self, markers: Path):
        self.proc = subprocess.Popen(
            ["sh", "-c", wrapper.runner_line(str(markers))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout.readline() == wrapper.RUNNER_READY

    def run(self, call: wrapper.Invocation) -> tuple[bytes, int]:
        self.send(call.request)
        data = b""
        while (reply := wrapper.parse_reply(data, call.token)) is None:
            line = self.proc.stdout.readline()
            assert line, data
            data += line
        return reply

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def quit(self) -> int:
        self.send(wrapper.RUNNER_QUIT)
        return self.proc.wait(timeout=30)


def test_an_acknowledgement_never_empties_a_later_invocations_output(tmp_path):
    """Run 5 ran on runner A; its retry ran on runner B, which now holds its output. A's late
    acknowledgement of the first invocation leaves B's output in place (a later pass adopts
    it from there), and B's own acknowledgement empties it."""
    markers = tmp_path / "markers"
    a, b = LocalRunner(markers), LocalRunner(markers)
    first = wrapper.invocation(str(markers), 5, "echo first", {})
    retry = wrapper.invocation(str(markers), 5, "echo retry", {})
    assert a.run(first) == (b"first\n", 0)
    assert b.run(retry) == (b"retry\n", 0)
    a.send(wrapper.acknowledged(5, first.token))
    assert a.quit() == 0  # it read the acknowledgement before it quit
    assert (markers / "5.out").read_bytes() == b"retry\n"
    b.send(wrapper.acknowledged(5, "not-the-token"))
    b.send(wrapper.acknowledged(5, retry.token))
    assert b.quit() == 0
    assert (markers / "5.out").read_bytes() == b""


def test_an_output_let_go_stays_for_a_later_pass(tmp_path):
    markers = tmp_path / "markers"
    runner = LocalRunner(markers)
    call = wrapper.invocation(str(markers), 3, "echo kept", {})
    assert runner.run(call) == (b"kept\n", 0)
    runner.send(wrapper.let_go(3))
    runner.send(wrapper.acknowledged(3, call.token))  # too late: it was let go
    assert runner.quit() == 0
    assert (markers / "3.out").read_bytes() == b"kept\n"


def _ctl(markers: Path, run_id: int, action: str) -> wrapper.Marker:
    line = wrapper.ctl_line(str(markers), run_id, action, grace=0.5)
    done = subprocess.run(["sh", "-c", line], capture_output=True, timeout=60, check=True)
    return wrapper.parse_ctl(done.stdout)


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def test_a_kill_stops_a_runs_group_only_when_its_leader_started_when_the_markers_say(tmp_path):
    """A runner's markers name the group's leader by pid and start time: a process that got
    the pid later (another start time) is never killed for it."""
    markers = tmp_path / "markers"
    markers.mkdir()
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        nonce = "a" * 32
        (markers / "9.meta").write_text(f"{nonce} 1 digest {stranger.pid} 1\n")
        assert _ctl(markers, 9, "kill").state == "gone"
        assert stranger.poll() is None  # not ours: alive
        started = _start_time(stranger.pid)
        (markers / "9.meta").write_text(f"{nonce} 1 digest {stranger.pid} {started}\n")
        assert _ctl(markers, 9, "kill").state == "killed"
        assert stranger.wait(timeout=30) == -signal.SIGTERM
    finally:
        if stranger.poll() is None:
            stranger.kill()
            stranger.wait()


def test_a_runs_markers_name_its_own_group_and_a_kill_ends_the_run_not_the_runner(tmp_path):
    markers = tmp_path / "markers"
    runner = LocalRunner(markers)
    call = wrapper.invocation(str(markers), 4, "exec sleep 60", {})
    runner.send(call.request)
    wait_until(lambda: (markers / "4.meta").exists(), timeout=30, message="the run's markers")
    first = (markers / "4.meta").read_text().split()
    nonce, pgid, started = first[0], int(first[3]), first[4]
    assert nonce == call.nonce
    assert os.getpgid(pgid) == pgid != os.getpgid(runner.proc.pid)
    assert _start_time(pgid) == started
    deadline = time.monotonic() + 30
    while (marker := _ctl(markers, 4, "kill")).state != "killed":
        assert time.monotonic() < deadline, marker  # the task may not have started yet
    data = b""
    while not data.endswith(f"{call.token} {128 + signal.SIGTERM}\n".encode()):
        chunk = runner.proc.stdout.readline()
        assert chunk, data
        data += chunk
    assert runner.quit() == 0


def test_prepare_starts_the_runners_the_first_runs_need_ahead_of_them(sshd, transport):
    """A pass previews how many runs each machine is about to run: that many runners (up to
    its max_parallel) start with the connection, and the runs then open no channel."""
    machine = sshd.machine(max_parallel=3)
    transport.prepare([machine], {machine.name: 10})
    wait_until(
        lambda: transport.pool.connects == 1 and len(_connection(transport).idle) == 3,
        timeout=30,
        message="three runners waiting",
    )
    connection = _connection(transport)
    opened = []
    open_session = connection.transport.open_session

    def counted(*args, **kwargs):
        opened.append(1)
        return open_session(*args, **kwargs)

    connection.transport.open_session = counted
    for run_id in range(1, 4):
        assert transport.run(machine, "echo ok", {}, 30, run_id).output == "ok\n"
    assert opened == [] and len(connection.idle) == 3
