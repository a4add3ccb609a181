"""The local transport when the reconciler does NOT run as root (issue 11, item 9).

The CLI cannot be started as another user here (the interpreter lives under root's 0700
home), so each test forks, drops the child to `nobody` for real (setgid/setuid), and runs the
transport there: no mock of the user database or of the process's uid.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from reconciler.adapters.transport.local import LocalTransport
from reconciler.core.errors import AuthFailed
from reconciler.core.model import Machine

pytestmark = pytest.mark.integration


def _as_nobody(tmp_path: Path, machine: Machine, own_user_allowed: bool) -> dict:
    """Run `id -u` on `machine` through the transport in a child that runs as nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody (CI and the dev container run as root)")
    nobody = pwd.getpwnam("nobody")
    markers = tmp_path / "markers"
    markers.mkdir()
    os.chown(markers, nobody.pw_uid, nobody.pw_gid)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, run, report, never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            transport = LocalTransport(markers, cwd="/", own_user_allowed=own_user_allowed)
            try:
                done = transport.run(machine, "id -u", {}, 10, 1)
                report = {"exit": done.exit_code, "output": done.output}
            except AuthFailed as exc:
                report = {"refused": str(exc)}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_a_reconciler_that_is_not_root_refuses_to_run_as_another_user(tmp_path):
    report = _as_nobody(tmp_path, Machine("box", "ops", transport="local", user="root"), True)
    assert "only root can run commands as another user" in report["refused"], report
    assert "machine 'box': user: root, but the reconciler runs as nobody" in report["refused"]


def test_user_naming_the_reconcilers_own_account_runs_when_allowed(tmp_path):
    report = _as_nobody(tmp_path, Machine("box", "ops", transport="local", user="nobody"), True)
    assert report == {"exit": 0, "output": f"{pwd.getpwnam('nobody').pw_uid}\n"}


def test_user_naming_the_reconcilers_own_account_is_refused_with_several_teams(tmp_path):
    report = _as_nobody(tmp_path, Machine("box", "ops", transport="local", user="nobody"), False)
    assert "is the reconciler's own account" in report["refused"], report
    assert "local_machines: {allow_shared_user: true}" in report["refused"]
