"""`reconcile --once` over real sshd, as a user runs it: the machine's key and a task's secret
come from the team vault, nothing of either reaches the store, output or argv."""

from __future__ import annotations

import getpass

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.integration
SECRET = "db-Pass-7731 with spaces $(not run)"


def _vaulted_project(tmp_path, daemon, client_key):
    project = Project(tmp_path)
    key = project.root / "me.key"
    public = project.run("vault", "keygen", "-o", str(key), code=0).err.split("Public key: ")[1]
    project.write(
        "teams/ops.yaml",
        f"name: ops\nmembers:\n  - {{name: me, role: admin, age: {public.strip()}}}\n",
    )
    for name, value in (("SSH_KEY", client_key.private), ("DB_PASSWORD", SECRET)):
        project.run("vault", "set", "ops", name, "-", "--identity", str(key), code=0, input=value)
    project.write(
        "machines/box.yaml",
        f"name: box\nteam: ops\nhost: 127.0.0.1\n"
        f"port: {daemon.port}\nuser: {getpass.getuser()}\nhost_key: {daemon.host_key}\n"
        "key: {vault: SSH_KEY}\n",
    )
    project.key = key
    return project


def test_once_runs_tasks_over_ssh_with_vault_key_and_secret(tmp_path, sshd, client_key):
    p = _vaulted_project(tmp_path, sshd, client_key)
    p.task(
        "hello",
        'env: {PW: {vault: DB_PASSWORD}}\ncommand: test "$PW" = "$EXPECTED" && '
        'echo "pw=$PW ok"\n'.replace("$EXPECTED", SECRET.replace("$", "\\$")),
    )
    p.task("second", "command: echo second\n")
    data = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()
    assert data["counts"] == {"succeeded": 2}
    run = next(r for r in data["runs"] if r["task"] == "ops/hello")
    shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert shown["output"] == "pw=*** ok\n"
    for db_file in p.state.parent.glob("state.db*"):
        assert SECRET.encode() not in db_file.read_bytes()
    assert sshd.logins() == 1  # both runs over one connection


def test_a_wrong_pinned_host_key_fails_the_run_with_host_key_mismatch(
    tmp_path, sshd_factory, client_key
):
    real, other = sshd_factory(), sshd_factory()
    p = _vaulted_project(tmp_path, real, client_key)
    machine = (p.inventory / "machines" / "box.yaml").read_text()
    p.write("machines/box.yaml", machine.replace(real.host_key, other.host_key))
    p.task("hello", "command: echo never\n")
    data = p.run("--once", "--format", "json", "--identity", str(p.key), code=1).json()
    [run] = data["runs"]
    assert run["status"] == "failed" and run["attempt"] == 1  # never retried
    assert "host key mismatch" in run["error"]
    assert real.logins() == 0
