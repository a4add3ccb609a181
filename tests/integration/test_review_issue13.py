"""Hostile review of issue 13 (the redesigned run pipeline), through the CLI with real sshd,
git and PostgreSQL. Each defect found is an `xfail(strict=True)` test that fails today."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.support.cli import reaped, spawn
from tests.support.processes import running
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_a_task_echoing_its_cookie_cannot_forge_its_exit_code(tmp_path, sshd, client_key):
    """A task's last line is `<cookie> 0` (its correlation id and a step's status, say), after
    more than 64 KiB of output, then it exits 7. Each run must be recorded failed with exit 7
    and that line in its output; today the line is taken for the wrapper's trailer (it
    reaches the reconciler before the real one): `succeeded`, exit 0. 24 such tasks: a reply
    whose two writes happen to arrive together is read right (under load, most of them)."""
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    command = (
        "head -c 70000 /dev/zero | tr '\\0' z; echo; "
        'echo "step 1"; echo "$RECONCILE_RUN_COOKIE 0"; exit 7'
    )
    for name in [f"forge{i}" for i in range(24)]:
        p.task(name, f"command: {json.dumps(command)}\n")
    report = p.run("--once", "--format", "json", "--identity", str(p.key)).json()
    assert len(report["runs"]) == 24
    for run in report["runs"]:
        assert (run["task"], run["status"], run["exit_code"]) == (run["task"], "failed", 7)
        shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
        cookie_line = shown["output"].rsplit("step 1\n", 1)[-1]
        assert len(cookie_line) == 32 + len(" 0\n"), shown["output"][-200:]


def test_queue_retry_of_a_lost_run_never_runs_it_beside_its_first_command(
    tmp_path, sshd, client_key
):
    """The connection drops under a long migration: `unknown`. A tired operator runs `queue
    retry`. The next pass must not start the migration again while the first still runs on
    the machine (docs: an orphan is stopped before anything runs it again); today it starts
    a second copy beside the first. Fixed: `queue retry` asks the machine first and refuses
    while the first command runs (more cases in test_queue_retry_orphan.py)."""
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    fifo, ledger = tmp_path / "go", tmp_path / "ledger"
    os.mkfifo(fifo)
    p.task("migrate", f'command: echo $$ >> "{ledger}"; read line < "{fifo}"; echo migrated\n')
    first = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root)
    with reaped(first):
        wait_until(lambda: ledger.exists() or first.poll() is not None, timeout=30)
        assert sshd.drop_connections()
        out, _ = first.communicate(timeout=60)
    [run] = json.loads(out)["runs"]
    assert run["status"] == "unknown", run
    [orphan] = [int(line) for line in ledger.read_text().split()]
    assert running(orphan)  # the first command still waits on the machine
    refused = p.run("queue", "retry", str(run["id"]), "--identity", str(p.key), code=2)
    assert f"run {run['id']} (ops/migrate) still runs on box" in refused.err, refused.err
    assert f"reconcile queue kill {run['id']}" in refused.err, refused.err
    second = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root)
    try:
        with reaped(second):
            wait_until(
                lambda: (
                    len(ledger.read_text().split()) > 1
                    or not running(orphan)
                    or second.poll() is not None
                ),
                timeout=60,
                message="the retry to start, the orphan to be stopped or the pass to end",
            )
            started = len(ledger.read_text().split())
            assert not (started > 1 and running(orphan)), "two copies of the migration run at once"
    finally:
        for pid in map(int, ledger.read_text().split()):
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_new_store_never_adopts_the_result_another_store_left_on_the_machine(
    tmp_path, sshd, client_key
):
    """The reconciler moves to a new host with a fresh store (same inventory, same machine).
    Release 1 was deployed by the old store as its run 1. The new store's first pass, for
    release 2, is killed -9 right after its dispatch mark, before the command was sent. The
    next pass must record that run `unknown` (nothing of it ran) and release 2 must not be
    taken for deployed; today it adopts the old store's run 1 (exit 0): `succeeded`, and
    release 2 never runs."""
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    ledger = tmp_path / "ledger"
    body = (
        'command: echo deploying $RELEASE >> "%s"; echo deployed $RELEASE\nenv: {RELEASE: "%s"}\n'
    )
    p.task("deploy", body % (ledger, "1"))
    old, new = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
    first = p.run("--once", "--state", old, "--format", "json", "--identity", str(p.key), code=0)
    assert [(r["id"], r["status"]) for r in first.json()["runs"]] == [(1, "succeeded")]

    p.task("deploy", body % (ledger, "2"))
    crash = {"RECONCILER_FAILPOINTS": "after_dispatch=crash"}
    killed = p.run("--once", "--state", new, "-q", "--identity", str(p.key), env=crash)
    assert killed.code == -signal.SIGKILL, killed.err
    assert ledger.read_text() == "deploying 1\n"  # nothing of release 2 was sent
    second = p.run("--once", "--state", new, "--format", "json", "--identity", str(p.key))
    statuses = [(r["id"], r["status"]) for r in second.json()["runs"]]
    assert statuses == [(1, "unknown")], "release 2 recorded deployed though it never ran"


def test_queue_kill_stops_a_run_going_on_for_more_than_a_day(tmp_path, sshd, client_key):
    """A three-day task has been running for two days (its markers' times are set back, as
    two days would leave them) when a pass for another task connects to the same machine.
    `queue kill` must then stop it; today it exits 3 ("its holder did not act on it") and the
    command goes on (a timeout would not stop it either: the same markers say where it runs)."""
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    ledger = tmp_path / "ledger"
    p.task("long", f'timeout: 72h\ncommand: echo $$ >> "{ledger}"; while :; do sleep 0.2; done\n')
    first = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root)
    pid = None
    try:
        with reaped(first):
            wait_until(lambda: ledger.exists() or first.poll() is not None, timeout=30)
            assert first.poll() is None, first.communicate()
            pid = int(ledger.read_text().split()[0])
            markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
            two_days_ago = time.time() - 2 * 86400
            for marker in markers.glob("1.*"):
                os.utime(marker, (two_days_ago, two_days_ago))
            p.task("other", "command: echo other\n")
            p.run("--once", "-q", "--identity", str(p.key), code=0)
            killed = p.run("queue", "kill", "1", "--grace", "1s", timeout=120)
            assert killed.code == 0, killed.out + killed.err
            assert not running(pid), "the killed run's command still runs on the machine"
    finally:
        if pid is not None and running(pid):
            os.kill(pid, signal.SIGKILL)
