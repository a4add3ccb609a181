"""CPU per run of the store's bookkeeping: the batch path (issue 13) against the one-run path.

    python bench/bench_store_batches.py [--runs 1000] [--batch 16] [--postgres URL]

For each backend: N runs on 10 machines are recorded, then taken through claim, dispatch and
finish with one audit entry per step, either one run at a time (`claim` + `append_audit`,
`mark_dispatched` + `append_audit`, `finish` + `append_audit`: what the engine did before
group commit) or in batches (`claim_batch`, `dispatch_batch`, `end_batch`, then one
`seal_audit`). Prints the process CPU time (`time.process_time`: this process only), the CPU
time of the PostgreSQL backend serving the store's connection (read from /proc: the server
must run on this host; `-` where it cannot be read) and the wall time per run, in
milliseconds. A seal after a batch may run in the middle; the final seal is counted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.base import ClaimRequest, RunEnd
from reconciler.adapters.store.factory import open_store
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason, RunStatus

AT = "2024-05-01T12:00:00.000000Z"


def record(action: str, run) -> AuditRecord:
    detail = {"run": run.id, "task": run.task, "machine": run.machine, "epoch": run.epoch}
    return AuditRecord(AT, "bench@host:1", action, detail)


def enqueue(store, n: int, tag: str):
    plan = Plan(
        enqueue=tuple(
            Enqueue(f"bench/{tag}{i}", f"m{i % 10}", "v1", 3, Reason.NEW) for i in range(n)
        )
    )
    return store.record_plan(plan, None, datetime.now(UTC))


def one_by_one(store, runs) -> None:
    now = datetime.now(UTC)
    for run in runs:
        claimed = store.claim(run.id, "bench", now, 1000)
        store.append_audit([record("run.claimed", claimed)])
        marked = store.mark_dispatched(claimed.id, claimed.epoch, now)
        store.append_audit([record("run.dispatched", marked)])
        done = store.finish(marked.id, marked.epoch, RunStatus.SUCCEEDED, now, exit_code=0)
        store.append_audit([record("run.finished", done)])


def batched(store, runs, size: int) -> None:
    now = datetime.now(UTC)
    for start in range(0, len(runs), size):
        chunk = runs[start : start + size]
        claimed = store.claim_batch(
            [ClaimRequest(r.id, 1000) for r in chunk],
            "bench",
            now,
            lambda r: [record("run.claimed", r)],
        ).runs
        marked = store.dispatch_batch(claimed, now, lambda r: [record("run.dispatched", r)]).runs
        ends = [
            RunEnd(r.id, r.epoch, RunStatus.SUCCEEDED, exit_code=0, output="ok") for r in marked
        ]
        store.end_batch(ends, now, lambda r: [record("run.finished", r)])
    store.seal_audit(wait=True)


def server_cpu(store) -> float | None:
    """Seconds of CPU the PostgreSQL backend of the store's query connection has used."""
    conn = getattr(store, "_conn", None)  # a bench may look inside: the session it measures
    pid = getattr(getattr(conn, "info", None), "backend_pid", None)
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, n: int, size: int) -> dict[str, tuple[float, float | None, float]]:
    figures = {}
    for name in ("one-by-one", "batched"):
        store = open_store(url)
        try:
            runs = enqueue(store, n, name[0] + str(time.monotonic_ns()))
            server = server_cpu(store)
            cpu, wall = time.process_time(), time.perf_counter()
            one_by_one(store, runs) if name == "one-by-one" else batched(store, runs, size)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = server_cpu(store)
            server = None if server is None or after is None else after - server
        finally:
            store.close()
        figures[name] = (
            cpu * 1000 / n,
            None if server is None else server * 1000 / n,
            wall * 1000 / n,
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--postgres", help="a libpq URL of an empty database to use")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'state.db'}"}
        if args.postgres:
            urls["postgresql"] = args.postgres
        print(f"{args.runs} runs, batches of {args.batch}; milliseconds per run")
        print(f"{'backend':<12}{'path':<12}{'cpu':>8}{'server':>8}{'wall':>8}")
        for backend, url in urls.items():
            for name, (cpu, server, wall) in measure(url, args.runs, args.batch).items():
                shown = "-" if server is None else f"{server:.3f}"
                print(f"{backend:<12}{name:<12}{cpu:>8.3f}{shown:>8}{wall:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
