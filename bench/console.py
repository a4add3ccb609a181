"""The web console under load: the overview and the first page of runs, with 50 clients at once.

A SQLite store is filled with N runs (default 100,000: mostly succeeded, some failed, a few
hundred queued, a few running) over a generated inventory (200 tasks, 50 machines, 10 teams);
`reconcile serve` serves it on a free 127.0.0.1 port in its own process, and C clients (in
processes of their own, ten threads each) ask for one page again and again for D seconds.
Printed per page: requests answered, their rate, and the latency at p50, p95 and p99, plus the
time of the first (uncached) answer. Target: p95 under 200 ms for both pages at N = 100,000
and C = 50.

    python bench/console.py [--runs N] [--clients C] [--seconds D]
    python bench/console.py --quick      (2,000 runs, 10 clients, 1 s: a smoke run)
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import generate  # noqa: E402
from reconciler.adapters.store.sqlite import SqliteStore  # noqa: E402

TARGET_MS = 200.0
PAGES = (("overview", "/"), ("runs, first page", "/runs"))
THREADS_PER_PROCESS = 10
COLUMNS = (
    'task, machine, version, "commit", priority, status, attempt, reason, created_at, '
    "started_at, finished_at, exit_code, output, error"
)


def fill(db: Path, inventory: Path, runs: int) -> None:
    """`runs` runs of the inventory's tasks, oldest first, written straight into the table."""
    SqliteStore(str(db)).close()  # the schema, migrated
    tasks = sorted(p.stem for p in (inventory / "tasks").rglob("*.yaml"))
    teams = sorted(p.parent.name for p in (inventory / "tasks").rglob("*.yaml"))
    machines = sorted(p.stem for p in (inventory / "machines").glob("*.yaml"))
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / max(runs, 1)
    rows = []
    for i in range(runs):
        at = (start + step * i).isoformat()
        k = i % len(tasks)
        active = i >= runs - 220  # the newest: queued, and a few running
        status = (
            ("running" if i >= runs - 20 else "pending")
            if active
            else ("failed" if i % 37 == 0 else "succeeded")
        )
        ended = None if active else at
        rows.append(
            (
                f"{teams[k]}/{tasks[k]}",
                machines[i % len(machines)],
                f"v{i}",
                f"{i // 500:040x}",
                1 + i % 5,
                status,
                1,
                "new",
                at,
                None if status == "pending" else at,
                ended,
                None if active else (1 if status == "failed" else 0),
                "" if active else f"line {i}\n",
                "exit code 1" if status == "failed" else None,
            )
        )
    with sqlite3.connect(db) as conn:
        conn.executemany(f"INSERT INTO runs ({COLUMNS}) VALUES ({','.join('?' * 14)})", rows)
        conn.execute(
            "INSERT INTO passes (commit_sha, recorded_at) VALUES (?, ?)",
            (f"{runs // 500:040x}", datetime.now(UTC).isoformat()),
        )


def serve(root: Path, db: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "serve", "--addr", "127.0.0.1:0", "--state", str(db)],
        cwd=root,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")},
    )
    line = proc.stderr.readline()
    found = re.search(r"127\.0\.0\.1:(\d+)", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"reconcile serve did not start: {line}{proc.stderr.read()}")
    return proc, int(found.group(1))


def ask(port: int, path: str) -> float:
    """Seconds one request took (a fresh connection: the listener closes after each)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"GET {path}: {reply.status}")
    finally:
        conn.close()
    return time.perf_counter() - started


def _client(port: int, path: str, threads: int, until: float, out) -> None:
    """One client process: `threads` threads asking for `path` until `until` (wall clock)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def loop() -> None:
        mine = []
        while time.time() < until:
            mine.append(ask(port, path))
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(latencies)


def load(port: int, path: str, clients: int, seconds: float) -> list[float]:
    """Latencies of `clients` clients asking for `path` for `seconds` at once."""
    queue = multiprocessing.Queue()
    until = time.time() + seconds + 0.5  # the processes start within the half second
    procs = []
    left = clients
    while left > 0:
        threads = min(THREADS_PER_PROCESS, left)
        left -= threads
        proc = multiprocessing.Process(target=_client, args=(port, path, threads, until, queue))
        proc.start()
        procs.append(proc)
    latencies = [x for _ in procs for x in queue.get()]
    for proc in procs:
        proc.join()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.clients, args.seconds = 2_000, 10, 1.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inventory = generate(root, tasks=200, machines=50, plain=True)
        db = root / "state.db"
        began = time.perf_counter()
        fill(db, inventory, args.runs)
        print(f"{args.runs:,} runs written in {time.perf_counter() - began:.1f} s")
        proc, port = serve(root, db)
        try:
            rows = []
            for name, path in PAGES:
                first = ask(port, path)  # computed now: nothing cached yet
                got = load(port, path, args.clients, args.seconds)
                rows.append((name, first, got))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"\nweb console, {args.runs:,} runs (SQLite), {args.clients} clients for "
        f"{args.seconds:g} s each (target: p95 < {TARGET_MS:.0f} ms)"
    )
    header = ("page", "first ms", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "verdict")
    table = [header]
    for name, first, got in rows:
        p95 = percentile(got, 95) * 1000
        table.append(
            (
                name,
                f"{first * 1000:.0f}",
                f"{len(got)}",
                f"{len(got) / args.seconds:.0f}",
                f"{percentile(got, 50) * 1000:.0f}",
                f"{p95:.0f}",
                f"{percentile(got, 99) * 1000:.0f}",
                "ok" if p95 < TARGET_MS else ("MISS" if not args.quick else "n/a (quick)"),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
