"""Output over 64 KiB from a real sshd: stored with the mark of what was dropped, and a secret
the cut went through leaves no readable piece (issue 12 item 11, issue 11 item 10)."""

from __future__ import annotations

import re

import pytest

from reconciler.adapters.transport.ssh import SshTransport
from reconciler.core.redact import Secret
from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration


def test_ssh_output_over_64_kib_is_marked_and_a_cut_secret_is_masked(
    tmp_path,
    sshd,
    client_key,
):
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key)
    long = "Ssh-Long-Secret-" + "qwertyuiopasdfghjklzxcvbnm" * 4
    p.run("vault", "set", "ops", "LONG", "-", "--identity", str(p.key), code=0, input=long)
    kept = 65536 - 80  # the last 64 KiB begin 80 characters into the secret
    p.task(
        "loud",
        "env: {LONG: {vault: LONG}}\n"
        f'command: head -c 100000 /dev/zero | tr "\\\\0" y; printf %s "$LONG"; '
        f'head -c {kept} /dev/zero | tr "\\\\0" x\n',
    )
    data = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()
    shown = p.run("queue", "show", str(data["runs"][0]["id"]), "--format", "json", code=0).json()[
        "output"
    ]
    mark, _, tail = shown.partition("\n")
    dropped = int(
        re.fullmatch(r"\[\.\.\. (\d+) bytes of earlier output dropped \.\.\.\]", mark).group(1)
    )
    assert tail.startswith("***x") and set(tail[3:]) == {"x"}
    assert 100000 + len(long) - 80 <= dropped < 100000 + len(long)
    for size in range(3, len(long)):
        assert not any(long[i : i + size] in shown for i in range(len(long) - size + 1))


# Short outputs are read back by the wrapper's shell builtins (no `tail` process); each shape
# must still arrive byte for byte, or fall back to `tail` (a NUL, over 1 KiB).
SHAPES = {
    "printf 'no newline'": "no newline",
    "printf 'a\\\\b  \\n\\tx  \\n\\n\\n'": "a\\b  \n\tx  \n\n\n",
    "printf 'nul\\0in\\n'": "nul\0in\n",
    "printf 'cr\\r\\n  lead\\n'": "cr\r\n  lead\n",
    "printf 'caf\\303\\251 %s\\n' '$x' '%s'": "café $x\ncafé %s\n",
    "head -c 1024 /dev/zero | tr '\\0' z": "z" * 1024,
    "head -c 1025 /dev/zero | tr '\\0' z": "z" * 1025,
    "printf '\\n'": "\n",
    "true": "",
}


def test_short_outputs_of_every_shape_come_back_byte_for_byte(sshd, client_key, tmp_path):
    transport = SshTransport(
        lambda machine: Secret(client_key.private), markers_dir=str(tmp_path / "markers")
    )
    try:
        got = {
            command: transport.run(sshd.machine(), command, {}, 30, i).output
            for i, command in enumerate(SHAPES)
        }
    finally:
        transport.close()
    assert got == SHAPES
