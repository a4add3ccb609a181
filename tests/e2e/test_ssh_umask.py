"""A task over SSH runs with its login's umask, as it would in `ssh host 'command'` and as a
local task runs with the reconciler's: the wrapper's own `umask 077` (which keeps its marker
and output files private) used to reach the task, so every file a task made over SSH was
readable by its owner alone (a web page, a config file: 0600 instead of 0644)."""

from __future__ import annotations

import os
import stat

import pytest

from tests.support.login_shell_sshd import LoginShellSshd
from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("bash", [True, False], ids=["on-a-runner", "channel-per-run"])
def test_a_task_over_ssh_makes_files_with_its_logins_umask(tmp_path, client_key, bash):
    # sshd inherits this process's umask, and its sessions with it (no PAM here).
    sshd = LoginShellSshd(tmp_path / "sshd", [client_key.public], "/usr/bin/dash", bash=bash)
    sshd.start()
    try:
        p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
        made = tmp_path / "made"
        p.task("make", f'command: umask; touch "{made}"\n')
        [run] = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()["runs"]
        shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
        assert shown["output"] == f"{_umask():04o}\n"
        assert stat.S_IMODE(made.stat().st_mode) == 0o666 & ~_umask()
        # The wrapper's own files stay private, whatever the task's umask.
        markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
        assert stat.S_IMODE(markers.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in markers.iterdir()} == {0o600}
    finally:
        sshd.stop()
