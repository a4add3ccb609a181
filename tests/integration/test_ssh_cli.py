"""`reconcile --once` over real sshd, as a user runs it: the machine's key and a task's secret
come from the team vault, nothing of either reaches the store, output or argv."""

from __future__ import annotations

import pytest

from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration
SECRET = "db-Pass-7731 with spaces $(not run)"


def test_once_runs_tasks_over_ssh_with_vault_key_and_secret(tmp_path, sshd, client_key):
    # One run at a time, so the second reuses the first's connection (asserted below).
    p = ssh_project(
        tmp_path,
        sshd.port,
        sshd.host_key,
        client_key,
        secrets={"DB_PASSWORD": SECRET},
        max_parallel=1,
    )
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
    p = ssh_project(tmp_path, real.port, real.host_key, client_key)
    machine = (p.inventory / "machines" / "box.yaml").read_text()
    p.write("machines/box.yaml", machine.replace(real.host_key, other.host_key))
    p.task("hello", "command: echo never\n")
    data = p.run("--once", "--format", "json", "--identity", str(p.key), code=1).json()
    [run] = data["runs"]
    assert run["status"] == "failed" and run["attempt"] == 1  # never retried
    assert "host key mismatch" in run["error"]
    assert real.logins() == 0
