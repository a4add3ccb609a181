"""Workers sharing one PostgreSQL queue under stress: capacity held across processes, and the
database crashing and restarting under load.

Real processes (`reconcile worker`) against a real server: a fresh database on the test
server, or a throwaway cluster of the test's own when the test restarts it. Runs are enqueued
as a planner would, before the workers start; the test waits on the database (every run
final) with deadlines, never on the clock.
"""

from __future__ import annotations

import signal
from datetime import datetime, timezone

import psycopg
import pytest

from reconciler.compile import compile_inventory
from reconciler.loader import load_inventory
from reconciler.plan import make_plan
from reconciler.store.factory import open_store
from tests.e2e.conftest import Project
from tests.support.cli import spawn
from tests.support.pg_cluster import Cluster
from tests.support.postgres import postgres_url  # noqa: F401  (a fixture, used by name)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
FINAL = ("succeeded", "failed", "skipped", "cancelled", "blocked", "unknown")


def _enqueue(project: Project, url: str) -> list[int]:
    """Plan and record the inventory's runs without draining them (as a planner would)."""
    inventory, _ = load_inventory(project.inventory)
    now = datetime.now(timezone.utc)
    store = open_store(url)
    try:
        plan = make_plan(compile_inventory(inventory), store.snapshot(), now)
        return [r.id for r in store.record_plan(plan, None, now)]
    finally:
        store.close()


def _statuses(url: str) -> dict[int, str] | None:
    """Every run's status, or None while the server does not answer."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            return dict(conn.execute("SELECT id, status FROM runs").fetchall())
    except psycopg.OperationalError:
        return None


def _all_final(url: str, expected: int) -> bool:
    statuses = _statuses(url)
    return statuses is not None and len(statuses) == expected and all(
        status in FINAL for status in statuses.values())


def _worker(project: Project, url: str, concurrency: int = 2):
    return spawn("worker", "--state", url, "-q", "--concurrency", str(concurrency),
                 cwd=project.root)


def _stop(proc) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_max_parallel_one_holds_across_four_workers(tmp_path, postgres_url):  # noqa: F811
    p = Project(tmp_path)
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    intervals = tmp_path / "intervals"
    # Each run notes when it started and ended (ns), with a little work in between.
    p.write("tasks/ops/many.yaml", "tasks:\n" + "".join(
        f"  - name: t{i}\n    machines: [box]\n    command: echo \"$RECONCILE_RUN_ID start "
        f"$(date +%s%N)\" >> {intervals}; sleep 0.02; echo \"$RECONCILE_RUN_ID end "
        f"$(date +%s%N)\" >> {intervals}\n" for i in range(60)))
    runs = _enqueue(p, postgres_url)
    assert len(runs) == 60
    workers = [_worker(p, postgres_url, concurrency=4) for _ in range(4)]
    try:
        wait_until(lambda: _all_final(postgres_url, 60), timeout=120,
                   message="the 60 runs to end")
    finally:
        ended = [_stop(w) for w in workers]
    assert [code for code, _ in ended] == [0, 0, 0, 0], ended
    assert set(_statuses(postgres_url).values()) == {"succeeded"}
    with psycopg.connect(postgres_url) as conn:
        [(owners,)] = conn.execute("SELECT count(DISTINCT owner) FROM runs").fetchall()
    assert owners > 1  # the workers really competed for the one slot
    spans: dict[int, dict[str, int]] = {}
    for line in intervals.read_text().splitlines():
        run_id, edge, ns = line.split()
        spans.setdefault(int(run_id), {})[edge] = int(ns)
    assert sorted(spans) == sorted(runs)
    ordered = sorted((s["start"], s["end"], run_id) for run_id, s in spans.items())
    overlaps = [(a[2], b[2]) for a, b in zip(ordered, ordered[1:]) if b[0] < a[1]]
    assert overlaps == [], f"runs ran at once on a max_parallel: 1 machine: {overlaps}"
