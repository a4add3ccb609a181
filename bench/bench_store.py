"""Per-run bookkeeping cost of the state store: what the engine pays around every command.

For N runs: one `record_plan` of N enqueues, then per run `claim` + `mark_dispatched` +
`finish` (three write transactions), plus a `snapshot` and a `pending` read of the result.
Target: under 2 ms per run in total. Runs on a real file in a temporary directory.

    python bench/bench_store.py [N ...]        (default N = 1000)
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from reconciler.plan import Enqueue, Plan
from reconciler.state import Reason, RunStatus
from reconciler.store.factory import open_store

TARGET_MS = 2.0


def measure(n: int, directory: Path) -> dict[str, float]:
    """Seconds spent in each phase for `n` runs on a fresh store under `directory`."""
    store = open_store(str(directory / f"bench-{n}.db"))
    now = datetime.now(timezone.utc)
    plan = Plan(enqueue=tuple(Enqueue(f"team{i % 10}/task{i % 100}", f"m{i}", "v1",
                                      1 + i % 5, Reason.NEW) for i in range(n)))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        runs = store.record_plan(plan, "c0ffee", now)
        timings["record_plan"] = time.perf_counter() - started
        started = time.perf_counter()
        for run in runs:
            claimed = store.claim(run.id, "bench", now)
            store.mark_dispatched(claimed.id, claimed.epoch, now)
            store.finish(claimed.id, claimed.epoch, RunStatus.SUCCEEDED, now,
                         exit_code=0, output="ok\n")
        timings["claim+dispatch+finish"] = time.perf_counter() - started
        started = time.perf_counter()
        store.snapshot(), store.pending()
        timings["snapshot+pending"] = time.perf_counter() - started
    finally:
        store.close()
    return timings


def main(argv: list[str]) -> int:
    """Print a table of ms per run by phase; exit 1 if the total misses the target."""
    sizes = [int(arg) for arg in argv] or [1000]
    print(f"{'N':>6} {'phase':<24} {'total ms':>10} {'ms/run':>8}")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        for n in sizes:
            timings = measure(n, Path(tmp))
            for phase, seconds in {**timings, "total": sum(timings.values())}.items():
                print(f"{n:>6} {phase:<24} {seconds * 1000:>10.1f} {seconds * 1000 / n:>8.3f}")
            worst = max(worst, sum(timings.values()) * 1000 / n)
    verdict = "ok" if worst < TARGET_MS else "MISSED"
    print(f"per-run bookkeeping: {worst:.3f} ms (target < {TARGET_MS} ms): {verdict}")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
