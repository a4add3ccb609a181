"""Running commands over SSH against real sshd: reuse, environment, secrets, timeouts, output.
Each test runs twice: on runners kept on their channels (the default) and with one channel per
run (what a target that cannot keep a runner gets)."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.adapters.transport.ssh import SshTransport
from reconciler.core.output import split_mark
from reconciler.core.redact import Secret
from tests.support.sshd import wait_for_file
from tests.support.waiting import wait_until


@pytest.fixture(params=[True, False], ids=["runners", "a channel per run"])
def transport(request, client_key, tmp_path):
    made = SshTransport(
        lambda machine: Secret(client_key.private),
        markers_dir=str(tmp_path / "markers"),
        connect_timeout=5,
        runners=request.param,
    )
    yield made
    made.close()


def _gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie awaiting its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_twenty_runs_share_one_login(sshd, transport):
    machine = sshd.machine()
    for run_id in range(1, 11):
        assert transport.run(machine, f"echo {run_id}", {}, 10, run_id).output == f"{run_id}\n"
    with ThreadPoolExecutor(max_workers=machine.max_parallel) as pool:  # as the engine does
        done = list(
            pool.map(lambda i: transport.run(machine, f"echo {i}", {}, 10, i), range(11, 21))
        )
    assert [d.output for d in done] == [f"{i}\n" for i in range(11, 21)]
    assert sshd.logins() == 1 and transport.pool.connects == 1


def test_runs_on_several_machines_in_parallel(sshd_factory, transport):
    daemons = [sshd_factory() for _ in range(3)]
    machines = [d.machine(f"m{i}") for i, d in enumerate(daemons)]
    jobs = [(m, i) for i, m in enumerate(machines * 4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(
            pool.map(
                lambda job: transport.run(
                    job[0], "echo $RECONCILE_RUN_ID", {"RECONCILE_RUN_ID": str(job[1])}, 10, job[1]
                ),
                jobs,
            )
        )
    assert [d.output for d in done] == [f"{i}\n" for i in range(len(jobs))]
    assert [d.logins() for d in daemons] == [1, 1, 1]


def test_secret_is_in_no_process_argument_list_while_the_task_runs(sshd, transport, tmp_path):
    secret = "hunter2-" + os.urandom(8).hex()
    fifo, started = tmp_path / "go", tmp_path / "started"
    os.mkfifo(fifo)
    # The command only prints a digest: the secret text itself is in no command line.
    command = f'echo up > "{started}"; read line < "{fifo}"; printf %s "$PW" | sha256sum'
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(
            done=transport.run(sshd.machine(), command, {"PW": Secret(secret)}, 30, 1)
        )
    )
    worker.start()
    try:
        wait_for_file(started)
        holders = [cmdline for cmdline in _all_cmdlines() if secret.encode() in cmdline]
    finally:
        with open(fifo, "w") as release:
            release.write("go\n")
        worker.join(30)
    assert holders == []
    # The task did see it, through its environment.
    assert result["done"].output.split()[0] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in sshd.log_text()


def _all_cmdlines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes())
            except OSError:
                pass
    return found


NASTY = {
    "SPACES": "  two  spaces  ",
    "QUOTES": 'it\'s "quoted" `backticked`',
    "SUBST": "$(touch /tmp/reconciler-pwned) ${HOME} $HOME \\$x",
    "NEWLINES": "line 1\nline 2\n\n",
    "GLOB": "* ? [a-z] ~ ; & | < > #",
    "UNICODE": "héllo wörld ✓",
    "EMPTY": "",
}


def test_env_values_reach_the_command_byte_for_byte(sshd, transport):
    command = "; ".join(f'printf "%s\\0" "${name}"' for name in NASTY)
    env = {name: (Secret(v) if name == "QUOTES" else v) for name, v in NASTY.items()}
    done = transport.run(sshd.machine(), command, env, 10, 1)
    assert done.exit_code == 0
    assert done.output.split("\0")[:-1] == list(NASTY.values())
    assert not os.path.exists("/tmp/reconciler-pwned")


def test_the_reconcilers_own_environment_is_not_forwarded(sshd, transport, monkeypatch):
    monkeypatch.setenv("RECONCILE_IDENTITY", "AGE-SECRET-KEY-1NOTFORTASKS")
    done = transport.run(sshd.machine(), 'echo "[$RECONCILE_IDENTITY]|$HOME"', {}, 10, 1)
    assert done.output == f"[]|{sshd.root / 'home'}\n"


def test_a_task_env_cannot_disturb_the_wrapper(sshd, transport):
    env = {"PATH": "/nonexistent", "IFS": "x", "d": "/nowhere", "f": "/nowhere/f"}
    done = transport.run(sshd.machine(), 'echo "$PATH $d"; exit 4', env, 10, 1)
    assert (done.exit_code, done.output) == (4, "/nonexistent /nowhere\n")


def test_exit_codes_and_stderr_come_back(sshd, transport):
    done = transport.run(sshd.machine(), "echo out; echo err >&2; exit 3", {}, 10, 1)
    assert (done.exit_code, done.output, done.timed_out) == (3, "out\nerr\n", False)
    assert not done.ok


def test_a_timeout_kills_the_remote_process_group(sshd, transport, tmp_path):
    pids = tmp_path / "pids"
    command = f'sleep 60 & echo "$$ $!" > "{pids}"; sleep 60; true'
    done = transport.run(sshd.machine(), command, {}, 3, 1)
    assert done.timed_out and done.exit_code is None and done.duration < 20
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: _gone(pid), timeout=20, message=f"remote pid {pid} to die")
    # The connection stays usable.
    assert transport.run(sshd.machine(), "echo after", {}, 10, 2).output == "after\n"


def test_only_the_last_64_kib_of_output_come_back(sshd, transport):
    done = transport.run(
        sshd.machine(), "head -c 300000 /dev/zero | tr '\\0' a; echo; echo END", {}, 30, 1
    )
    dropped, tail = split_mark(done.output)
    assert tail.endswith("a\nEND\n") and len(tail) == 64 * 1024
    assert dropped + len(tail) == 300000 + len("\nEND\n")  # the mark says what was dropped


def test_a_background_child_does_not_hold_the_run(sshd, transport):
    done = transport.run(sshd.machine(), "sleep 30 & echo started", {}, 20, 1)
    assert (done.exit_code, done.output, done.timed_out) == (0, "started\n", False)
    assert done.duration < 20


def test_commands_run_with_sh_not_the_login_shell(sshd, transport):
    done = transport.run(sshd.machine(), "readlink /proc/$$/exe", {}, 10, 1)
    assert done.output.strip() == os.path.realpath("/bin/sh")


def test_probe_reads_load_and_memory_over_the_same_connection(sshd, transport):
    machine = sshd.machine()
    transport.run(machine, "true", {}, 10, 1)
    load = transport.probe(machine)
    assert load.load1 >= 0 and load.mem_total_kib and load.mem_available_kib is not None
    assert sshd.logins() == 1


def test_concurrent_first_runs_share_one_connect(sshd, transport):
    machine = sshd.machine(max_parallel=8)
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(lambda i: transport.run(machine, "echo ok", {}, 10, i), range(16)))
    assert all(d.ok for d in done)
    assert sshd.logins() == 1 and transport.pool.connects == 1


def test_more_runs_at_once_than_channels_open_a_second_connection(sshd, client_key, tmp_path):
    small = SshTransport(
        lambda machine: Secret(client_key.private),
        markers_dir=str(tmp_path / "markers"),
        max_channels=2,
    )
    gates = [tmp_path / f"gate{i}" for i in range(3)]
    for gate in gates:
        os.mkfifo(gate)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [
                pool.submit(
                    small.run,
                    sshd.machine(),
                    f'echo up > "{gate}.up"; read x < "{gate}"; echo {i}',
                    {},
                    30,
                    i,
                )
                for i, gate in enumerate(gates)
            ]
            for gate in gates:  # all three run at once, with two channels per connection
                wait_for_file(Path(f"{gate}.up"))
            for gate in gates:
                with open(gate, "w") as release:
                    release.write("go\n")
            assert [f.result().output for f in futures] == ["0\n", "1\n", "2\n"]
    finally:
        small.close()
    assert small.pool.connects == 2 and sshd.logins() == 2


def test_a_wrapper_killed_by_a_signal_is_a_failure_not_a_lost_connection(sshd, transport):
    done = transport.run(sshd.machine(), "echo before; kill -KILL $PPID; sleep 60", {}, 50, 1)
    assert done.exit_code == 255 and not done.timed_out
    assert "before" in done.output and "killed by a signal" in done.output
    assert done.duration < 40
