"""Several workers and passes sharing one PostgreSQL queue: every run executed exactly once,
crashes at each step of the run protocol, lost leases, dropped connections.

Real processes against the real server (a fresh database per test). Time is never slept
on: heartbeats are aged with SQL, and tasks wait on files the test creates.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import pytest

from reconciler.adapters.store.base import LEASE_SECONDS
from reconciler.adapters.store.factory import open_store
from tests.support.cli import spawn
from tests.support.planning import record_plan
from tests.support.project import Project
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def shared(tmp_path, postgres_url):
    project = Project(tmp_path)
    project.url = postgres_url
    return project


def _flock_record(project: Project, word: str = "$RECONCILE_RUN_ID") -> str:
    return f'flock "{project.ledger}.lock" sh -c \'echo {word} >> "{project.ledger}"\''


def _status(project: Project, run_id: int) -> tuple[str, bool]:
    [(status, dispatched)] = store_rows(
        project.url, "SELECT status, dispatched FROM runs WHERE id = %s", run_id
    )
    return status, bool(dispatched)


def _worker(project: Project, *extra: str, env: dict | None = None):
    return spawn("worker", "--state", project.url, "-q", *extra, cwd=project.root, env=env)


def _expire_leases(project: Project) -> None:
    store_rows(
        project.url,
        "UPDATE runs SET heartbeat_at = now() - interval '1 hour', "
        "started_at = started_at - interval '1 hour' WHERE status = 'running'",
    )


def _end_other_sessions(project: Project) -> None:
    """Terminate every other session on the test's database (a fresh one: the worker's) and
    wait until they are gone: what such a session had sent either committed before, or never
    will. The worker reconnects when it runs again."""
    name = project.url.rsplit("/", 1)[1]
    others = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    store_rows(project.url, f"SELECT pg_terminate_backend(pid) FROM ({others}) AS s", name)
    wait_until(
        lambda: not store_rows(project.url, others, name),
        timeout=10,
        message="the stopped worker's sessions to end",
    )


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _stop(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def test_four_workers_and_a_pass_execute_2000_runs_exactly_once(shared):
    p = shared
    p.write(
        "machines/box.yaml",
        "machines:\n"
        + "".join(
            f"  - {{name: m{i}, team: ops, transport: local, max_parallel: 4}}\n" for i in range(10)
        ),
    )
    p.write(
        "tasks/ops/many.yaml",
        "tasks:\n"
        + "".join(
            f"  - name: t{i}\n    selector: {{}}\n    command: {_flock_record(p)}\n"
            for i in range(200)
        ),
    )
    workers = [_worker(p, "--concurrency", "4") for _ in range(4)]
    try:
        result = p.run(
            "--once",
            "--state",
            p.url,
            "-q",
            "--format",
            "json",
            "--concurrency",
            "4",
            code=0,
            timeout=600,
        )
    finally:
        codes = [_stop(w) for w in workers]
    assert codes == [0, 0, 0, 0], [w.communicate() for w in workers]
    runs = result.json()["runs"]
    assert result.json()["counts"] == {"succeeded": 2000}
    ledger = [int(line) for line in p.ledger_lines()]
    assert len(ledger) == 2000 and sorted(ledger) == sorted(r["id"] for r in runs)


def test_two_passes_at_once_on_postgresql_run_each_task_once(shared):
    p = shared
    for i in range(10):
        p.task(f"t{i}", f"command: {_flock_record(p, f't{i}')}\n")
    procs = [spawn("--once", "--state", p.url, "-q", cwd=p.root) for _ in range(2)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    assert sorted(p.ledger_lines()) == sorted(f"t{i}" for i in range(10))


def test_worker_stopped_past_its_lease_cannot_record_its_late_result(shared):
    p = shared
    go = p.root / "go"
    p.task(
        "slow",
        f'command: {p.record("started")}; while [ ! -f "{go}" ]; do sleep 0.05; done; '
        f"{p.record('done')}\n",
    )
    [run_id] = record_plan(p.inventory, p.url)
    worker = _worker(p)
    try:
        wait_until(
            lambda: "started" in p.ledger_lines(),
            timeout=30,
            message="the worker to start the command",
        )  # dispatched is not enough
        worker.send_signal(signal.SIGSTOP)
        # Stopped for real (state T), then its sessions ended, before the lease is aged: a
        # stopped client sends nothing more, but a heartbeat or sweep it had already sent
        # (it sweeps every few seconds) could still land on the server after the ageing.
        wait_until(lambda: _state(worker.pid) == "T", timeout=10, message="the worker to stop")
        _end_other_sessions(p)
        _expire_leases(p)
        store = open_store(p.url)
        try:
            swept = store.sweep(LEASE_SECONDS, datetime.now(UTC))
        finally:
            store.close()
        assert [(r.id, r.status.value) for r in swept] == [(run_id, "unknown")]
        go.touch()
        wait_until(lambda: "done" in p.ledger_lines(), timeout=30, message="the command to end")
        worker.send_signal(signal.SIGCONT)
    finally:
        worker.send_signal(signal.SIGCONT)
        code = _stop(worker)
    assert code == 0, worker.stderr.read()
    assert _status(p, run_id) == ("unknown", True)  # one final status: the late write refused
    assert p.ledger_lines().count("started") == 1


def test_worker_runs_the_edited_task_after_its_inventory_changed(shared):
    """A worker looks at its inventory every few seconds and re-reads it only when a file
    changed (it compares sizes and times first): an edit made while it runs is what it
    runs next, both right after it started and after it has been idle a while."""
    p = shared
    p.task("edited", f"command: {p.record('v1')}\n")
    record_plan(p.inventory, p.url)
    worker = _worker(p)
    try:
        wait_until(lambda: p.ledger_lines() == ["v1"], timeout=30, message="v1 to run")
        for word in ("v2", "v3"):
            p.task("edited", f"command: {p.record(word)}\n")  # a new version: a new run
            record_plan(p.inventory, p.url)
            wait_until(lambda w=word: w in p.ledger_lines(), timeout=30, message=f"{word} to run")
    finally:
        code = _stop(worker)
    assert code == 0, worker.stderr.read()
    assert p.ledger_lines() == ["v1", "v2", "v3"]  # no run of an edited task ran its old command


@pytest.mark.parametrize(
    "point, status, executed",
    [
        ("after_claim", "succeeded", 1),  # claim not committed: run by another worker
        ("after_dispatch", "unknown", 0),  # dispatched: may have run, so never run again
        ("before_result", "unknown", 1),  # ran, result lost: unknown, not run twice
    ],
)
def test_kill_9_at_each_failpoint_leaves_one_final_status_and_no_double_run(
    shared, point, status, executed
):
    p = shared
    p.task("once", f"command: {_flock_record(p, 'ran')}\n")
    [run_id] = record_plan(p.inventory, p.url)
    crashing = _worker(p, env={"RECONCILER_FAILPOINTS": f"{point}=crash"})
    assert crashing.wait(timeout=60) == -signal.SIGKILL
    _expire_leases(p)
    survivor = _worker(p)
    try:
        wait_until(
            lambda: _status(p, run_id)[0] == status,
            timeout=60,
            message=f"run {run_id} to end {status}",
        )
    finally:
        assert _stop(survivor) == 0
    assert p.ledger_lines().count("ran") == executed


def test_worker_survives_its_database_connection_being_terminated(shared):
    p = shared
    go = p.root / "go"
    p.task("t", f'command: while [ ! -f "{go}" ]; do sleep 0.05; done; echo finished\n')
    [run_id] = record_plan(p.inventory, p.url)
    worker = _worker(p)
    try:
        wait_until(
            lambda: _status(p, run_id) == ("running", True),
            timeout=30,
            message="the worker to dispatch the run",
        )
        name = p.url.rsplit("/", 1)[1]
        killed = store_rows(
            p.url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            name,
        )
        assert killed
        go.touch()
        wait_until(
            lambda: _status(p, run_id)[0] == "succeeded",
            timeout=60,
            message="the run to be recorded after reconnecting",
        )
    finally:
        assert _stop(worker) == 0


def test_worker_refuses_a_sqlite_store(tmp_path):
    result = Project(tmp_path).run("worker", code=2)
    assert "PostgreSQL" in result.err
