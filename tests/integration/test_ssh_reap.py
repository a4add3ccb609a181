"""Remote run markers against real sshd: a run whose reconciler died is resolved, not re-run.

The "reconciler" here is a real process running `SshTransport.run`, killed with SIGKILL while
its command runs; a new transport (the next pass) then asks the machine with `reap`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reconciler.adapters.transport import wrapper
from reconciler.adapters.transport.base import STILL_RUNNING
from reconciler.adapters.transport.ssh import ConnectionLost, SshTransport
from reconciler.core.redact import Secret
from tests.support.markers import exited
from tests.support.sshd import wait_for_file
from tests.support.waiting import wait_until

# A reconciler that dispatches one run: the machine and command as JSON on stdin's first
# line, the private key after it (stdin, never argv or a file).
RECONCILER = """
import json, sys
from reconciler.core.model import Machine, VaultRef
from reconciler.core.redact import Secret
from reconciler.adapters.transport.ssh import SshTransport
job = json.loads(sys.stdin.readline())
key = sys.stdin.read()
machine = Machine(**{**job["machine"], "host_key": tuple(job["machine"]["host_key"]),
                     "key": VaultRef("SSH_KEY")})
transport = SshTransport(lambda m: Secret(key), markers_dir=job["markers"])
print(transport.run(machine, job["command"], {"RECONCILE_ATTEMPT": "1"}, 120, job["run_id"]))
"""


@pytest.fixture
def markers(tmp_path) -> Path:
    return tmp_path / "markers"


@pytest.fixture
def transport(client_key, markers):
    made = SshTransport(
        lambda machine: Secret(client_key.private), markers_dir=str(markers), connect_timeout=5
    )
    yield made
    made.close()


def _dispatch_and_die(
    sshd, client_key, markers: Path, command: str, run_id: int, started: Path
) -> None:
    """Run `command` from a child reconciler, wait until it started, kill -9 the child."""
    machine = sshd.machine()
    job = {
        "machine": {
            "name": machine.name,
            "team": machine.team,
            "host": machine.host,
            "port": machine.port,
            "user": machine.user,
            "host_key": list(machine.host_key),
        },
        "markers": str(markers),
        "command": command,
        "run_id": run_id,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", RECONCILER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    child.stdin.write((json.dumps(job) + "\n" + client_key.private).encode())
    child.stdin.close()
    wait_until(
        lambda: started.exists() or child.poll() is not None,
        timeout=30,
        message="the child reconciler's command to start",
    )
    assert child.poll() is None, child.communicate()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)


def _release(fifo: Path) -> None:
    with open(fifo, "w") as release:
        release.write("go\n")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_run_finished_after_its_reconciler_was_killed_is_adopted(
    sshd, client_key, markers, transport, tmp_path
):
    fifo, started = tmp_path / "go", tmp_path / "started"
    os.mkfifo(fifo)
    command = f'echo up > "{started}"; read line < "{fifo}"; echo "finished alone"; exit 5'
    _dispatch_and_die(sshd, client_key, markers, command, 41, started)
    _release(fifo)  # the command goes on without anyone listening, and ends
    wait_until(lambda: exited(markers, 41), timeout=30, message="the exit marker")
    done = transport.reap(sshd.machine(), 41, attempt=1, command=command)
    assert done is not None and (done.exit_code, done.output) == (5, "finished alone\n")
    # The same markers, asked about another attempt or the run's check: nothing known.
    assert transport.reap(sshd.machine(), 41, attempt=2) is None
    assert transport.reap(sshd.machine(), 41, command="true") is None


def test_a_run_still_running_after_its_reconciler_was_killed_is_stopped(
    sshd, client_key, markers, transport, tmp_path
):
    started = tmp_path / "started"
    command = f'sleep 300 & echo "$$ $!" > "{started}.tmp"; mv "{started}.tmp" "{started}"; wait'
    _dispatch_and_die(sshd, client_key, markers, command, 42, started)
    pids = [int(p) for p in wait_for_file(started).split()]
    assert all(_alive(pid) for pid in pids)
    assert transport.reap(sshd.machine(), 42) is None
    for pid in pids:
        wait_until(lambda pid=pid: not _alive(pid), timeout=20, message=f"pid {pid} to be killed")


def test_a_lost_connection_is_resolved_from_the_markers(sshd, markers, transport, tmp_path):
    fifo, started = tmp_path / "go", tmp_path / "started"
    os.mkfifo(fifo)
    command = f'echo up > "{started}"; read line < "{fifo}"; echo done; exit 3'
    outcome: dict = {}

    def run() -> None:
        try:
            transport.run(sshd.machine(), command, {}, 60, 43)
        except ConnectionLost as exc:
            outcome["lost"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    wait_for_file(started)
    sshd.drop_connections()
    worker.join(30)
    assert "lost" in outcome
    _release(fifo)
    wait_until(lambda: exited(markers, 43), timeout=30, message="the exit marker")
    done = transport.reap(sshd.machine(), 43, command=command)  # reconnects by itself
    assert done is not None and (done.exit_code, done.output) == (3, "done\n")


def test_reap_of_an_unknown_run_is_none(sshd, transport):
    assert transport.reap(sshd.machine(), 999) is None


def test_reap_never_kills_a_process_that_is_not_the_runs(sshd, markers, transport):
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        markers.mkdir(parents=True)
        # Markers that name the stranger's process group, as a recycled pid would.
        (markers / "44.meta").write_text("0123456789abcdef0123456789abcdef 1 deadbeefdeadbeef\n")
        (markers / "44.pid").write_text(f"{stranger.pid}\n")
        assert transport.reap(sshd.machine(), 44) is None
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


NONCE = "00112233445566778899aabbccddeeff"


def test_markers_of_an_earlier_version_are_still_adopted(sshd, markers, transport):
    """Runs started before an upgrade wrote `.meta` without the process group, beside `.pid`
    and `.exit`: their results are adopted, for their own attempt and command only."""
    command = "echo from before the upgrade; exit 4"
    markers.mkdir(parents=True)
    (markers / "45.meta").write_text(f"{NONCE} 1 {wrapper.digest(command)}\n")
    (markers / "45.pid").write_text("1\n")
    (markers / "45.out").write_text("from before the upgrade\n")
    (markers / "45.exit").write_text(f"{NONCE} 4\n")
    done = transport.reap(sshd.machine(), 45, attempt=1, command=command)
    assert done is not None and (done.exit_code, done.output) == (4, "from before the upgrade\n")
    assert transport.reap(sshd.machine(), 45, attempt=2, command=command) is None
    assert transport.reap(sshd.machine(), 45, attempt=1, command="true") is None


@pytest.mark.parametrize("layout", ["earlier", "current"])
def test_a_running_command_is_stopped_from_the_markers_of_either_version(
    sshd, markers, transport, layout
):
    # A stand-in for a wrapper: its own process group, the nonce in its argument list.
    wrapper_process = subprocess.Popen(
        ["sh", "-c", "sleep 300; true", NONCE], start_new_session=True
    )
    try:
        markers.mkdir(parents=True)
        if layout == "earlier":
            (markers / "46.meta").write_text(f"{NONCE} 1 deadbeefdeadbeef\n")
            (markers / "46.pid").write_text(f"{wrapper_process.pid}\n")
        else:
            (markers / "46.meta").write_text(f"{NONCE} 1 deadbeefdeadbeef {wrapper_process.pid}\n")
        assert transport.reap(sshd.machine(), 46, stop=False) is STILL_RUNNING
        assert wrapper_process.poll() is None
        assert transport.reap(sshd.machine(), 46) is None
        assert wrapper_process.wait(timeout=20) != 0
    finally:
        wrapper_process.kill()
        wrapper_process.wait()


def test_an_exit_line_still_being_written_is_not_taken_for_the_exit(sshd, markers, transport):
    """The wrapper appends `NONCE CODE` to `.meta` when its command ends; a reader that meets
    the line without its newline (the append in progress) does not adopt a half code."""
    markers.mkdir(parents=True)
    (markers / "47.meta").write_text(f"{NONCE} 1 deadbeefdeadbeef 1\n{NONCE} 1")
    assert transport.reap(sshd.machine(), 47, stop=False) is None  # gone: pid 1 is not it
    (markers / "47.meta").write_text(f"{NONCE} 1 deadbeefdeadbeef 1\n{NONCE} 12\n")
    done = transport.reap(sshd.machine(), 47)
    assert done is not None and done.exit_code == 12
