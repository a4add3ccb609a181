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
            call.stdin + wrapper.acknowledgement(call.nonce), timeout=30
        )
    return call, proc


@pytest.mark.parametrize("shell", SHELLS)
def test_each_posix_login_shell_runs_the_wrapper_as_sh_would(shell, tmp_path):
    command = 'printf "%s|" "$TOKEN"; readlink /proc/$$/exe; exit 3'
    call, proc = _run(shell, tmp_path, command, {"TOKEN": SECRET})
    reply = wrapper.parse_reply(proc.stdout_bytes, call.nonce)
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
    assert wrapper.parse_reply(proc.stdout_bytes, call.nonce) == (b"ok\n", 1), proc.stderr_bytes
    assert (markers / "7.meta").read_text().splitlines()[1] == f"{call.nonce} 1"
