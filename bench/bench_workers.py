"""Runs per second of a shared PostgreSQL queue with 1, 2 and 4 `reconcile worker`s.

    python3 bench/bench_workers.py [RUNS]        (default 400 runs of `sleep 0.05`)
    python3 bench/bench_workers.py --quick       (40 runs, 1 and 2 workers: a smoke run)

Each case: K workers (concurrency 8 each) started together on a fresh database on
127.0.0.1:5432 (they must all come up), then, once they are idle, RUNS runs enqueued at once
over 8 local machines (max_parallel 8); the clock runs from the enqueue until the last run has
ended. Starting the interpreters is left out: a worker is a long-lived process, and what
scales out is the draining. Prints one table; the per-run bookkeeping of SQLite against
PostgreSQL is bench/bench_store.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from reconciler.adapters.store.factory import open_store
from reconciler.core.compile import compile_inventory
from reconciler.core.plan import make_plan
from reconciler.core.state import ExecutedState
from reconciler.inventory.loader import load_inventory

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def inventory(root: Path, runs: int, command: str = "sleep 0.05") -> Path:
    """`root/inventory`: `runs` tasks running `command`, round-robin over 8 local machines
    (max_parallel 8), one run each."""
    inventory = root / "inventory"
    (inventory / "teams").mkdir(parents=True)
    (inventory / "machines").mkdir()
    (inventory / "tasks" / "ops").mkdir(parents=True)
    (inventory / "teams" / "ops.yaml").write_text("name: ops\n")
    (inventory / "machines" / "m.yaml").write_text(
        "machines:\n"
        + "".join(
            f"  - {{name: m{i}, team: ops, transport: local, max_parallel: 8}}\n" for i in range(8)
        )
    )
    (inventory / "tasks" / "ops" / "t.yaml").write_text(
        "tasks:\n"
        + "".join(
            f"  - {{name: t{i}, machines: [m{i % 8}], command: {json.dumps(command)}}}\n"
            for i in range(runs)
        )
    )
    return inventory


def start_worker(url: str, cwd: Path, log: Path | None = None) -> subprocess.Popen:
    """`reconcile worker --concurrency 8` on the store at `url`, reading `cwd/inventory`;
    its output goes to `log` (discarded without one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    with open(log or os.devnull, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", "worker", "-q", "--state", url]
            + ["--concurrency", "8"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every worker, then wait for each; one that does not stop in time is killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _remaining(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')"
        ).fetchone()[0]


def wait_until_up(url: str, procs: list[subprocess.Popen], timeout: float = 60) -> int:
    """Wait until every worker of `procs` holds a connection to the database at `url` (each
    opens its store before its first round), then a moment for that round to start; returns
    how many came up (a worker that exited did not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [proc for proc in procs if proc.poll() is None]
        with psycopg.connect(url, autocommit=True) as conn:
            connected = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'reconciler'"
            ).fetchone()[0]
        if connected >= len(alive):
            time.sleep(0.5)  # from its store to its first round: the engine and transports
            return len([proc for proc in procs if proc.poll() is None])
        time.sleep(0.05)
    raise TimeoutError(f"workers not connected after {timeout:g} s")


def measure(workers: int, runs: int, timeout: float = 600) -> float:
    """Seconds for `workers` workers, started together on a new database and idle, to drain
    `runs` runs enqueued at once. Raises RuntimeError when a worker did not come up or every
    worker exited with runs left, TimeoutError after `timeout` seconds.

    The clock starts when the runs are enqueued, not when the workers start: a worker is a
    long-lived process, and what scales out is the draining (starting N interpreters at once
    on a small host would otherwise count against N workers)."""
    name = f"reconciler_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plan = make_plan(
                compile_inventory(load_inventory(inventory(Path(tmp), runs))[0]),
                ExecutedState(),
                datetime.now(UTC),
            )
            logs = [Path(tmp) / f"worker-{i}.log" for i in range(workers)]
            procs: list[subprocess.Popen] = []
            try:
                # Together on a new database: each migrates it or finds it migrated.
                procs = [start_worker(url, Path(tmp), log) for log in logs]
                up = wait_until_up(url, procs)
                if up < workers:
                    raise RuntimeError(
                        f"{workers - up} of {workers} workers did not come up: "
                        f"{logs[0].read_text()[-300:]}"
                    )
                store = open_store(url)
                started = time.perf_counter()
                store.record_plan(plan, None, datetime.now(UTC))
                store.close()
                deadline = time.monotonic() + timeout
                while _remaining(url):
                    if all(proc.poll() is not None for proc in procs):
                        raise RuntimeError(
                            f"every worker exited with runs left: {logs[0].read_text()[-300:]}"
                        )
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"runs left after {timeout:g} s")
                    time.sleep(0.05)
                return time.perf_counter() - started
            finally:
                stop_workers(procs)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int)
    parser.add_argument("--quick", action="store_true", help="40 runs, 1 and 2 workers")
    args = parser.parse_args(argv)
    runs = args.runs or (40 if args.quick else 400)
    print(f"{'workers':>7} {'runs':>6} {'wall (s)':>9} {'runs/s':>8} {'speed-up':>9}")
    base = None
    for workers in (1, 2) if args.quick else (1, 2, 4):
        wall = measure(workers, runs)
        base = base or wall
        print(f"{workers:>7} {runs:>6} {wall:>9.2f} {runs / wall:>8.1f} {base / wall:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
