"""`queue kill` of a run that a `reconcile worker` in another process executes over real SSH,
on a shared PostgreSQL queue (issue 16 §2): the request reaches the worker through the store,
the remote process group goes (the target's process table says so: the test's host is the
target), and the run is recorded `killed` with who and why."""

from __future__ import annotations

import signal

import pytest

from tests.support.cli import reaped, reconcile, spawn
from tests.support.planning import record_plan
from tests.support.processes import pids_in, running
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_kill_stops_a_remote_run_of_a_worker_in_another_process(
    tmp_path, sshd, client_key, postgres_url
):
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key)
    pids = tmp_path / "pids"
    p.task(
        "runaway",
        f'command: trap "" TERM; sleep 1000 & echo "$$ $!" > "{pids}"; echo started; wait\n',
    )
    p.task("after", "after: [runaway]\ncommand: echo after\n")
    run_id, after_id = record_plan(p.inventory, postgres_url)
    worker = spawn("worker", "--state", postgres_url, "-q", "--identity", str(p.key), cwd=p.root)
    with reaped(worker):
        wait_until(lambda: pids.exists() and len(pids_in(pids)) == 2, timeout=60)
        shell, child = pids_in(pids)
        assert running(shell) and running(child)
        killed = reconcile(
            "queue",
            "kill",
            str(run_id),
            "--grace",
            "1s",
            "--reason",
            "stuck migration",
            "--state",
            postgres_url,
            "--format",
            "json",
            cwd=p.root,
        )
        assert killed.code == 0, killed.err
        assert not running(shell) and not running(child)
        after = wait_until(
            lambda: (
                (
                    r := reconcile(
                        "queue",
                        "show",
                        str(after_id),
                        "--state",
                        postgres_url,
                        "--format",
                        "json",
                        cwd=p.root,
                    ).json()
                )["status"]
                != "pending"
                and r
            ),
            timeout=60,
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    run = killed.json()
    assert run["status"] == "killed" and "stuck migration" in run["error"]
    assert after["status"] == "blocked"
    shown = reconcile(
        "queue", "show", str(run_id), "--state", postgres_url, "--format", "json", cwd=p.root
    ).json()
    assert shown["output"].startswith("started\n")
