"""The run wrapper is executed by the target's login shell itself (sshd's `SHELL -c LINE`, no
`sh -c` in between): every POSIX login shell the docs name must run it as `sh` would, and the
task's command must still get a `/bin/sh` of its own. Each shell is started here the way sshd
starts it (a session leader, the line as its `-c` argument, the input on stdin)."""

from __future__ import annotations

import os
import subprocess

import pytest

from reconciler.adapters.transport import wrapper
from tests.support.integration import require_binary
from tests.support.markers import exited

pytestmark = pytest.mark.integration

SHELLS = ("bash", "dash", "zsh", "mksh")
SECRET = "it's a $secret\nwith `two` lines"


def _run(shell: str, markers, command: str, task_env: dict[str, str], **kw):
    path = require_binary(shell)
    call = wrapper.invocation(str(markers), 7, command, {"RECONCILE_ATTEMPT": "2", **task_env})
    with subprocess.Popen(
        [path, "-c", call.command_line],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kw,
    ) as proc:
        proc.stdout_bytes, proc.stderr_bytes = proc.communicate(
            call.stdin + wrapper.acknowledgement(call.token), timeout=30
        )
    return call, proc


@pytest.mark.parametrize("shell", SHELLS)
def test_each_posix_login_shell_runs_the_wrapper_as_sh_would(shell, tmp_path):
    command = 'printf "%s|" "$TOKEN"; readlink /proc/$$/exe; exit 3'
    call, proc = _run(shell, tmp_path, command, {"TOKEN": SECRET})
    reply = wrapper.parse_reply(proc.stdout_bytes, call.token)
    assert reply is not None, (proc.stdout_bytes, proc.stderr_bytes)
    output, code = reply
    assert (code, proc.returncode) == (3, 3)
    # The value arrived byte for byte, and the command ran in a /bin/sh of its own.
    assert output.decode() == f"{SECRET}|{os.path.realpath('/bin/sh')}\n"
    assert SECRET not in call.command_line
    first, second = (tmp_path / "7.meta").read_text().splitlines()
    nonce, attempt, digest, pgid = first.split()
    assert (nonce, attempt, digest) == (call.nonce, "2", wrapper.digest(command))
    assert int(pgid) == proc.pid  # the shell sshd started leads the group a timeout kills
    assert second == f"{call.nonce} 3"
    assert (tmp_path / "7.out").read_bytes() == b""  # acknowledged: emptied


def test_set_e_and_set_u_from_a_startup_file_do_not_break_the_wrapper(tmp_path):
    """bash reads $BASH_ENV (and, started by sshd, ~/.bashrc) before the line: options that
    file turns on are turned off again for the wrapper."""
    startup = tmp_path / "startup.sh"
    startup.write_text("set -eu\n")
    markers = tmp_path / "markers"
    call, proc = _run(
        "bash", markers, "echo ok; false", {}, env={**os.environ, "BASH_ENV": str(startup)}
    )
    assert wrapper.parse_reply(proc.stdout_bytes, call.token) == (b"ok\n", 1), proc.stderr_bytes
    assert (markers / "7.meta").read_text().splitlines()[1] == f"{call.nonce} 1"


def _start(shell: str, markers, command: str, run_id: int = 7, env=None):
    """The wrapper of `command` started as sshd would start it, its input not sent yet."""
    call = wrapper.invocation(str(markers), run_id, command, {"RECONCILE_ATTEMPT": "1"})
    proc = subprocess.Popen(
        [require_binary(shell), "-c", call.command_line],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    return call, proc


@pytest.mark.parametrize("shell", SHELLS)
def test_input_cut_off_before_its_terminator_starts_nothing(shell, tmp_path):
    """bash reads its input by byte count, the others to the terminator line: a channel that
    ends early leaves either with exit 125 and nothing run, not a half-read environment."""
    ran = tmp_path / "ran"
    call, proc = _start(shell, tmp_path / "markers", f"touch {ran}")
    out, _ = proc.communicate(call.stdin[: len(call.stdin) - 20], timeout=30)
    assert proc.returncode == wrapper.INPUT_CUT, out
    assert b"input cut off" in out  # the reply (the channel carries stderr there too)
    assert not ran.exists()
    assert not (tmp_path / "markers").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_markers_that_cannot_be_written_start_nothing(shell, tmp_path):
    (tmp_path / "file").write_text("")
    ran = tmp_path / "ran"
    call, proc = _start(shell, tmp_path / "file" / "runs", f"touch {ran}")
    out, _ = proc.communicate(call.stdin + wrapper.acknowledgement(call.token), timeout=30)
    assert proc.returncode == wrapper.NO_MARKERS, out
    assert b"cannot write run markers" in out
    assert not ran.exists()


# Outputs around the sizes the wrapper reads with builtins (1 KiB, 64 KiB) and beyond, with
# bytes a character-counting shell or a builtin `read` could alter: multibyte UTF-8, a NUL,
# no final newline.
OUTPUTS = {
    "multibyte": "héllo wörld ✓\n".encode(),
    "nul": b"a\0b\n",
    "no newline": b"x" * 1024,
    "1 KiB + 1": b"y" * 1024 + b"\xc3",
    "64 KiB": "é".encode() * 32768,
    "64 KiB + 3": b"z\n" * 32769 + b"end",
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name", list(OUTPUTS))
def test_the_reply_has_every_byte_of_the_output_tail_in_a_utf8_locale(shell, name, tmp_path):
    data = OUTPUTS[name]
    (tmp_path / "data").write_bytes(data)
    secret = "clé ✓ secrète\n"
    command = f'cat {tmp_path / "data"}; [ "$TOKEN" = "$(printf "clé ✓ secrète\\n.")" ]'
    # bash counts characters in a UTF-8 locale: its byte counts must not depend on it.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    call = wrapper.invocation(str(tmp_path / "m"), 9, command, {"TOKEN": secret + "."})
    proc = subprocess.run(
        [require_binary(shell), "-c", call.command_line],
        input=call.stdin + wrapper.acknowledgement(call.token),
        capture_output=True,
        start_new_session=True,
        env=env,
        timeout=30,
    )
    reply = wrapper.parse_reply(proc.stdout, call.token)
    assert reply is not None, (proc.stdout[-200:], proc.stderr)
    output, code = reply
    assert code == 0  # the value arrived byte for byte
    if len(data) <= wrapper.OUTPUT_TAIL:
        assert output == data
    else:
        dropped = len(data) - wrapper.OUTPUT_TAIL
        assert (
            output
            == b"[... %d bytes of earlier output dropped ...]\n" % dropped
            + data[-wrapper.OUTPUT_TAIL :]
        )


@pytest.mark.parametrize("shell", SHELLS)
def test_a_second_invocation_of_a_run_id_replaces_the_markers_of_the_first(shell, tmp_path):
    """A run's check and its command, or two attempts, share the run id. The second replaces
    a kept output (not appended to it), and its first marker line is written over the first
    invocation's, whose exit line may stay under it: reading the markers finds the exit line
    of the second invocation's nonce, not that one."""
    markers = tmp_path / "m"
    first, proc = _start(shell, markers, "echo first; exit 3")
    out, _ = proc.communicate(first.stdin + wrapper.REFUSAL, timeout=30)
    assert wrapper.parse_reply(out, first.token) == (b"first\n", 3)
    assert (markers / "7.out").read_bytes() == b"first\n"  # let go: kept
    second, proc = _start(shell, markers, "echo second")
    running = _ctl(markers, "peek")  # between the two: the second has not started
    assert running.state == "exit" and running.nonce == first.nonce
    out, _ = proc.communicate(second.stdin + wrapper.REFUSAL, timeout=30)
    assert wrapper.parse_reply(out, second.token) == (b"second\n", 0)
    assert (markers / "7.out").read_bytes() == b"second\n"
    assert exited(markers, 7)
    reaped = _ctl(markers, "reap", second.nonce)
    assert (reaped.state, reaped.exit_code, reaped.nonce) == ("exit", 0, second.nonce)
    assert reaped.output == "second\n"
    assert _ctl(markers, "reap", first.nonce).state == "none"


def _ctl(markers, action: str, nonce: str = "-") -> wrapper.Marker:
    line = wrapper.ctl_line(str(markers), 7, action, nonce, keep=True)
    done = subprocess.run(["sh", "-c", line], capture_output=True, timeout=30, check=True)
    return wrapper.parse_ctl(done.stdout)
