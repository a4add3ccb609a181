"""Workers sharing one PostgreSQL queue under stress: capacity held across processes, and the
database crashing and restarting under load.

Real processes (`reconcile worker`) against a real server: a fresh database on the test
server, or a throwaway cluster of the test's own when the test restarts it. Runs are enqueued
as a planner would, before the workers start; the test waits on the database (every run
final) with deadlines, never on the clock.
"""

from __future__ import annotations

import signal
import socket
import subprocess

import psycopg
import pytest

from tests.support.cli import reaped, spawn
from tests.support.pg_cluster import Cluster
from tests.support.planning import record_plan
from tests.support.project import Project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
FINAL = ("succeeded", "failed", "skipped", "cancelled", "blocked", "unknown")


def _statuses(url: str) -> dict[int, str] | None:
    """Every run's status, or None while the server does not answer."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            return dict(conn.execute("SELECT id, status FROM runs").fetchall())
    except psycopg.OperationalError:
        return None


def _all_final(url: str, expected: int) -> bool:
    statuses = _statuses(url)
    return (
        statuses is not None
        and len(statuses) == expected
        and all(status in FINAL for status in statuses.values())
    )


def _wait_quietly(predicate, timeout: float) -> bool:
    """`wait_until` that says False at its deadline (the test then explains what is left)."""
    try:
        wait_until(predicate, timeout=timeout)
    except AssertionError:
        return False
    return True


def _worker(project: Project, url: str, concurrency: int = 2):
    return spawn(
        "worker", "--state", url, "-q", "--concurrency", str(concurrency), cwd=project.root
    )


def _stop(proc) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_max_parallel_one_holds_across_four_workers(tmp_path, postgres_url):
    p = Project(tmp_path)
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    intervals = tmp_path / "intervals"
    # Each run notes when it started and ended (ns), with a little work in between.
    p.write(
        "tasks/ops/many.yaml",
        "tasks:\n"
        + "".join(
            f'  - name: t{i}\n    machines: [box]\n    command: echo "$RECONCILE_RUN_ID start '
            f'$(date +%s%N)" >> {intervals}; sleep 0.02; echo "$RECONCILE_RUN_ID end '
            f'$(date +%s%N)" >> {intervals}\n'
            for i in range(60)
        ),
    )
    runs = record_plan(p.inventory, postgres_url)
    assert len(runs) == 60
    workers = [_worker(p, postgres_url, concurrency=4) for _ in range(4)]
    try:
        wait_until(lambda: _all_final(postgres_url, 60), timeout=120, message="the 60 runs to end")
    finally:
        ended = [_stop(w) for w in workers]
    assert [code for code, _ in ended] == [0, 0, 0, 0], ended
    assert set(_statuses(postgres_url).values()) == {"succeeded"}
    # Which worker ran which run is not asserted: a worker that just finished a run claims the
    # next one at once, before the others' next poll, so one of them may run all 60. The four
    # were alive and claiming throughout (each exited 0 only when stopped above), so every
    # claim raced three others for the one slot: the overlap check below is what matters.
    spans: dict[int, dict[str, int]] = {}
    for line in intervals.read_text().splitlines():
        run_id, edge, ns = line.split()
        spans.setdefault(int(run_id), {})[edge] = int(ns)
    assert sorted(spans) == sorted(runs)
    ordered = sorted((s["start"], s["end"], run_id) for run_id, s in spans.items())
    overlaps = [(a[2], b[2]) for a, b in zip(ordered, ordered[1:]) if b[0] < a[1]]
    assert overlaps == [], f"runs ran at once on a max_parallel: 1 machine: {overlaps}"


@pytest.fixture
def cluster():
    made = Cluster.create()
    yield made
    made.destroy()


class Supervisor:
    """Keeps `count` workers running, as systemd would: a worker that exited (exit 3 only,
    without a traceback) is replaced, and the runs it held are handed on by ageing their
    leases with SQL (the time a real lease takes to expire is not waited out)."""

    def __init__(self, project: Project, url: str, count: int):
        self.project, self.url = project, url
        self.workers = [_worker(project, url) for _ in range(count)]
        self.exited: list[tuple[int, str]] = []

    def tend(self) -> None:
        for index, worker in enumerate(self.workers):
            if worker.poll() is None:
                continue
            _, err = worker.communicate()
            self.exited.append((worker.returncode, err))
            assert worker.returncode == 3 and "Traceback" not in err, (worker.returncode, err)
            assert len(self.exited) <= 10, "workers keep dying"
            owner = f"{socket.gethostname()}:{worker.pid}"  # `host:pid`, maybe `:token`
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE runs SET heartbeat_at = now() - interval '1 hour' "
                    "WHERE status = 'running' AND (owner = %s OR owner LIKE %s)",
                    (owner, owner + ":%"),
                )
            self.workers[index] = _worker(self.project, self.url)

    def stop(self) -> list[tuple[int, str]]:
        return self.exited + [_stop(w) for w in self.workers]


def test_a_postgresql_restart_under_load_ends_every_run_once_without_a_traceback(tmp_path, cluster):
    p = Project(tmp_path)
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 4\n")
    starts = tmp_path / "starts"
    p.write(
        "tasks/ops/many.yaml",
        "tasks:\n"
        + "".join(
            f'  - name: t{i}\n    machines: [box]\n    command: echo "$RECONCILE_RUN_ID" >> '
            f"{starts}; sleep 0.05\n"
            for i in range(200)
        ),
    )
    runs = record_plan(p.inventory, cluster.url)
    assert len(runs) == 200
    workers = Supervisor(p, cluster.url, 2)
    try:
        wait_until(
            lambda: starts.exists() and len(starts.read_text().split()) >= 100,
            timeout=60,
            message="half of the runs to start",
        )
        cluster.restart()

        def settled() -> bool:
            workers.tend()
            return _all_final(cluster.url, 200)

        finished = _wait_quietly(settled, timeout=45)
    finally:
        ended = workers.stop()
    left = {i: s for i, s in (_statuses(cluster.url) or {}).items() if s not in FINAL}
    assert finished, f"runs still not final after the restart: {left}; workers: {ended}"
    for code, err in ended:
        assert code in (0, 3) and "Traceback" not in err, (code, err)
    started = [int(word) for word in starts.read_text().split()]
    assert len(started) == len(set(started)), "a run started twice"
    assert sorted(_statuses(cluster.url)) == sorted(runs)


def test_a_pass_whose_postgresql_stays_down_gives_up_after_one_reconnect_window(tmp_path, cluster):
    """The server goes away for good while four runs are in flight. The pass waits once for it
    (20 s, the README's promise), then exits 3 with one line, no traceback. It took minutes:
    every heartbeat and every retried end write waited out a window of its own."""
    p = Project(tmp_path)
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 4\n")
    starts = tmp_path / "starts"
    p.write(
        "tasks/ops/slow.yaml",
        "tasks:\n"
        + "".join(
            f"  - name: t{i}\n    machines: [box]\n    command: echo {i} >> {starts}; sleep 3\n"
            for i in range(4)
        ),
    )
    with reaped(
        spawn("--once", "-q", "--concurrency", "4", "--state", cluster.url, cwd=p.root)
    ) as proc:
        wait_until(
            lambda: starts.exists() and len(starts.read_text().split()) == 4,
            timeout=60,
            message="the four runs to start",
        )
        cluster.stop()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the pass was still waiting for the database 60 s after it went away")
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "state store" in last, err
