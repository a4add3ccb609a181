"""Benchmarks of the core pass, printed as one table.

    python3 bench/run.py            # full sizes (10k/20k-task plans, 1,000-run pass)
    python3 bench/run.py --quick    # smaller sizes, for a smoke run

Measures `reconcile plan` wall time and peak memory (max RSS of the child process) on
generated inventories, `reconcile --once` runs per second over trivial local tasks, and the
state store's bookkeeping cost per run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.generate import generate  # noqa: E402


def _reconcile(args: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `reconcile ARGS` in a fresh process; wall seconds and its peak RSS in MiB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the max of all).
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        proc = subprocess.CompletedProcess(args, child.returncode, out.read(), err.read())
    if proc.returncode not in (0, 1):
        raise SystemExit(f"reconcile {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, proc


def bench_plan(tasks: int, machines: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, tasks, machines)
        wall, rss, proc = _reconcile(["plan", "--format", "json", "-q"], root)
        import json

        planned = len(json.loads(proc.stdout)["enqueue"])
    return {
        "case": f"plan {tasks:,} tasks / {machines:,} machines",
        "wall_s": wall,
        "peak_mib": rss,
        "note": f"{planned:,} runs planned",
    }


def bench_once(tasks: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, tasks, 10, command="true")
        wall, rss, proc = _reconcile(
            ["--once", "-q", "--format", "json", "--concurrency", "16"], root
        )
        import json

        runs = len(json.loads(proc.stdout)["runs"])
    return {
        "case": f"--once {tasks:,} trivial local tasks",
        "wall_s": wall,
        "peak_mib": rss,
        "note": f"{runs / wall:,.0f} runs/s ({runs:,} runs)",
    }


def bench_store(n: int) -> dict:
    """SQLite only here; bench/bench_store.py puts PostgreSQL beside it."""
    from bench.bench_store import measure, sqlite_store
    from reconciler.adapters.store.sqlite import SqliteStore

    with sqlite_store(n) as url:
        total_s = sum(measure(n, url, SqliteStore).values())
    per_run_ms = total_s * 1000 / n
    return {
        "case": f"store bookkeeping, {n:,} runs",
        "wall_s": per_run_ms * n / 1000,
        "peak_mib": float("nan"),
        "note": f"{per_run_ms:.3f} ms per run",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = parser.parse_args()
    sizes = [(1000, 100), (2000, 200)] if args.quick else [(10_000, 1_000), (20_000, 2_000)]
    rows = [bench_plan(t, m) for t, m in sizes]
    rows.append(bench_once(200 if args.quick else 1000))
    rows.append(bench_store(200 if args.quick else 1000))
    print(f"{'case':<42} {'wall (s)':>9} {'peak (MiB)':>11}  note")
    for row in rows:
        print(f"{row['case']:<42} {row['wall_s']:>9.2f} {row['peak_mib']:>11.0f}  {row['note']}")


if __name__ == "__main__":
    main()
