"""Following a run from another process while a `reconcile worker` executes it over real SSH
on a shared PostgreSQL queue (issue 16 §1): the follower reads only the store, and sees each
line while the remote command still runs, secrets masked."""

from __future__ import annotations

import signal

import pytest

from tests.support.cli import reaped, spawn
from tests.support.line_reader import follow_lines
from tests.support.planning import record_plan
from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration
SECRET = "pg-Secret-99 $(never)"


def test_follow_shows_a_remote_run_of_a_worker_in_another_process_as_it_comes(
    tmp_path, sshd, client_key, postgres_url
):
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key, secrets={"DB_PASSWORD": SECRET})
    go = tmp_path / "go"
    p.task(
        "migrate",
        "env: {PW: {vault: DB_PASSWORD}}\n"
        f'command: echo "first pw=$PW"; while [ ! -f "{go}" ]; do sleep 0.05; done; '
        "echo second\n",
    )
    [run_id] = record_plan(p.inventory, postgres_url)
    worker = spawn("worker", "--state", postgres_url, "-q", "--identity", str(p.key), cwd=p.root)
    with reaped(worker):
        follower = spawn(
            "queue", "show", str(run_id), "--follow", "--state", postgres_url, cwd=p.root
        )
        with reaped(follower):
            out, err = follow_lines(follower)
            out.wait_for("first", timeout=60)  # the remote command still waits for `go`
            go.touch()
            assert follower.wait(timeout=60) == 0, err.finish()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    lines = out.finish()
    assert lines == [
        "first pw=***",
        "second",
        f"run {run_id} (ops/migrate on box, attempt 1) succeeded, exit 0",
    ]
    assert SECRET not in "\n".join(lines + err.finish())
