"""Per-run bookkeeping cost of the state store, SQLite and PostgreSQL side by side.

What the engine pays around every command, for N runs: one `record_plan` of N enqueues, then
per run `claim` + `mark_dispatched` + `finish` (three committed writes), plus a `snapshot`
and a `pending` read of the result. Target: under 2 ms per run in total, on each backend.
SQLite runs on a real file in a temporary directory; PostgreSQL on a fresh database of the
server named by --postgres (created, then dropped), skipped with a note when unreachable.

    python bench/bench_store.py [N ...] [--postgres ADMIN_URL]      (default N = 1000)
    python bench/bench_store.py --quick      (N = 100, the target not enforced: a smoke run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from reconciler.adapters.audit.writer import AuditWriter, run_detail
from reconciler.adapters.store.base import ClaimRequest, RunEnd
from reconciler.adapters.store.factory import open_store
from reconciler.adapters.store.postgres import PostgresStore
from reconciler.adapters.store.sqlite import SqliteStore
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason, RunStatus

TARGET_MS = 2.0
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PHASES = ("record_plan", "claim+dispatch+finish", "snapshot+pending")


def _open_as(url: str, kind: type):
    """The store at `url`, which must open as a `kind` (a URL mistaken for a file path would
    measure the wrong backend)."""
    store = open_store(url)
    if not isinstance(store, kind):
        store.close()
        raise TypeError(f"{url} opened as {type(store).__name__}, not {kind.__name__}")
    return store


def measure(n: int, url: str, kind: type) -> dict[str, float]:
    """Seconds spent in each phase for `n` runs on the fresh store at `url`, which must open
    as a `kind` (a URL mistaken for a file path would measure the wrong backend)."""
    store = _open_as(url, kind)
    now = datetime.now(UTC)
    plan = Plan(
        enqueue=tuple(
            Enqueue(f"team{i % 10}/task{i % 100}", f"m{i}", "v1", 1 + i % 5, Reason.NEW)
            for i in range(n)
        )
    )
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        runs = store.record_plan(plan, "c0ffee", now)
        timings["record_plan"] = time.perf_counter() - started
        started = time.perf_counter()
        for run in runs:
            claimed = store.claim(run.id, "bench", now)
            store.mark_dispatched(claimed.id, claimed.epoch, now)
            store.finish(
                claimed.id, claimed.epoch, RunStatus.SUCCEEDED, now, exit_code=0, output="ok\n"
            )
        timings["claim+dispatch+finish"] = time.perf_counter() - started
        started = time.perf_counter()
        store.snapshot(), store.pending()
        timings["snapshot+pending"] = time.perf_counter() - started
    finally:
        store.close()
    return timings


# --- CPU of the bookkeeping, batch path against per-run path (bench/pipeline.py's row) --------

BATCH = 16  # runs per scheduling round: the engine's default --concurrency
CPU_TARGET_MS = 0.3
CPU_PATHS = ("round", "batch", "per-run")


def _records(writer: AuditWriter):
    """The audit records the engine writes for a run's claim, dispatch and end."""
    claimed = lambda run: [  # noqa: E731 - three one-liners read best side by side
        writer.record("run.claimed", **run_detail(run, "attempt", "epoch", "owner"))
    ]
    dispatched = lambda run: [writer.record("run.dispatched", **run_detail(run, "attempt"))]  # noqa: E731
    finished = lambda run: [  # noqa: E731
        writer.record(
            "run.finished", **run_detail(run, "status", "attempt", "exit_code", "error", "owner")
        )
    ]
    return claimed, dispatched, finished


def measure_cpu(n: int, url: str, kind: type, path: str) -> float:
    """CPU seconds of this process (`time.process_time`, not wall: a database server's own
    work is not the client's bookkeeping) to take `n` runs, already planned, through claim,
    dispatch and end with their audit entries, on the fresh store at `url` (opened as `kind`).

    `round`: the engine's path (`StateStore.round_batch`, as a drain's rounds call it): each
    round of BATCH runs records the ends of the round before it and claims and dispatches its
    own, in one transaction; the last round's ends go alone (`end_batch`); then `seal_audit`
    (a backend that chains entries later pays for it there). `batch`: `claim_batch` +
    `dispatch_batch` + `end_batch` per BATCH runs (three transactions), then `seal_audit`.
    `per-run`: `claim`, `mark_dispatched`, one audit append of claimed+dispatched, `finish`,
    one append of the end (the engine's path before group commit). Planning (`record_plan`)
    is not counted."""
    if path not in CPU_PATHS:
        raise ValueError(f"path must be one of {CPU_PATHS}")
    store = _open_as(url, kind)
    now = datetime.now(UTC)
    plan = Plan(
        enqueue=tuple(
            Enqueue(f"team{i % 10}/task{i}", f"m{i % 64}", "v1", 1 + i % 5, Reason.NEW)
            for i in range(n)
        )
    )
    writer = AuditWriter(store, actor="bench@127.0.0.1:1", clock=lambda: now)
    claimed, dispatched, finished = _records(writer)
    try:
        runs = store.record_plan(plan, "c0ffee", now, planner="bench")
        started = time.process_time()
        if path == "round":
            ended: list[RunEnd] = []
            for first in range(0, len(runs), BATCH):
                chunk = runs[first : first + BATCH]
                claims = [ClaimRequest(run.id, max_parallel=BATCH) for run in chunk]
                done, took = store.round_batch(
                    ended,
                    claims,
                    "bench",
                    now,
                    ended=finished,
                    claimed=claimed,
                    dispatched=dispatched,
                )
                if len(done.runs) != len(ended) or len(took.runs) != len(chunk):
                    raise RuntimeError(
                        f"round wrote {len(done.runs)} ends, {len(took.runs)} starts"
                    )
                ended = [_success(run) for run in took.runs]
            store.end_batch(ended, now, audit=finished)
            store.seal_audit(wait=True)
        elif path == "batch":
            for first in range(0, len(runs), BATCH):
                chunk = runs[first : first + BATCH]
                claims = [ClaimRequest(run.id, max_parallel=BATCH) for run in chunk]
                took = store.claim_batch(claims, "bench", now, audit=claimed)
                sent = store.dispatch_batch(took.runs, now, audit=dispatched)
                ends = [_success(run) for run in sent.runs]
                done = store.end_batch(ends, now, audit=finished)
                if len(done.runs) != len(chunk):
                    raise RuntimeError(f"batch wrote {len(done.runs)} of {len(chunk)} runs")
            store.seal_audit(wait=True)
        else:
            for run in runs:
                run = store.claim(run.id, "bench", now, BATCH)
                run = store.mark_dispatched(run.id, run.epoch, now)
                writer.write([*claimed(run), *dispatched(run)])
                run = store.finish(
                    run.id, run.epoch, RunStatus.SUCCEEDED, now, exit_code=0, output="ok\n"
                )
                writer.write(finished(run))
        cpu = time.process_time() - started
        if len(runs) != n or store.counts().get("succeeded") != n:
            raise RuntimeError(f"expected {n} succeeded runs, store has {store.counts()}")
    finally:
        store.close()
    return cpu


SMALL_ROUND_CLAIMS = 4  # a drain asks for spares beside the run it starts (`_Drain._spares`)
SMALL_ROUND_SLOTS = 8


def measure_small_rounds(n: int, url: str, kind: type) -> float:
    """Client CPU seconds of `n` rounds of the shape a pass's drain mostly records: its runs
    end one at a time, not in waves (each restarts its slot as soon as it ends), so a round
    is one end and the claim of one run (asked with spares: SMALL_ROUND_CLAIMS requests,
    `want=1`), with the engine's audit records; SMALL_ROUND_SLOTS runs in flight; then
    `seal_audit`. Measured on a pass of 400 x `sleep 0.2` over 8 slots: 318 rounds, 260 of
    them of exactly this shape."""
    store = _open_as(url, kind)
    now = datetime.now(UTC)
    total = n + SMALL_ROUND_SLOTS + SMALL_ROUND_CLAIMS
    plan = Plan(
        enqueue=tuple(
            Enqueue(f"team{i % 10}/task{i}", f"m{i % 8}", "v1", 3, Reason.NEW) for i in range(total)
        )
    )
    writer = AuditWriter(store, actor="bench@127.0.0.1:1", clock=lambda: now)
    claimed, dispatched, finished = _records(writer)
    limit = SMALL_ROUND_SLOTS

    def requests(runs) -> list[ClaimRequest]:
        return [ClaimRequest(run.id, max_parallel=limit) for run in runs]

    try:
        runs = store.record_plan(plan, "c0ffee", now, planner="bench")
        _, first = store.round_batch(
            [], requests(runs[:limit]), "bench", now, claimed=claimed, dispatched=dispatched
        )
        running, queued = list(first.runs), runs[limit:]
        started = time.process_time()
        for _ in range(n):
            _, took = store.round_batch(
                [_success(running.pop(0))],
                requests(queued[:SMALL_ROUND_CLAIMS]),
                "bench",
                now,
                ended=finished,
                claimed=claimed,
                dispatched=dispatched,
                want=1,
            )
            if len(took.runs) != 1:
                raise RuntimeError(f"a round claimed {len(took.runs)} runs, not 1")
            running += took.runs
            queued = [run for run in queued if run.id != took.runs[0].id]
        store.seal_audit(wait=True)
        cpu = time.process_time() - started
    finally:
        store.close()
    return cpu


def small_round_ms(n: int, admin_url: str, repeat: int = 1) -> dict[str, float | str]:
    """ms of client CPU per small round (`measure_small_rounds`), by backend, the median of
    `repeat` fresh stores; a backend that cannot be reached gives its reason instead."""
    results: dict[str, float | str] = {}
    for backend, kind in (("sqlite", SqliteStore), ("postgresql", PostgresStore)):

        def once() -> float:
            store = sqlite_store(n) if backend == "sqlite" else postgres_store(admin_url)
            with store as url:
                return measure_small_rounds(n, url, kind) * 1000 / n

        try:
            results[backend] = statistics.median(once() for _ in range(repeat))
        except Exception as exc:  # noqa: BLE001 - a missing server is a cell, not a crash
            text = str(exc).strip()
            results[backend] = f"n/a: {text.splitlines()[0] if text else type(exc).__name__}"
    return results


def _success(run) -> RunEnd:
    return RunEnd(run.id, run.epoch, RunStatus.SUCCEEDED, exit_code=0, output="ok\n")


def cpu_per_run_ms(n: int, admin_url: str, repeat: int = 1) -> dict[str, dict[str, float | str]]:
    """ms of client CPU per run, by backend and path, the median of `repeat` measurements (a
    fresh store each): on a shared 2-core host one reading of the same code moved 0.21 to
    0.40 ms within minutes. A backend that cannot be reached gives its reason instead."""
    results: dict[str, dict[str, float | str]] = {}
    for backend, kind in (("sqlite", SqliteStore), ("postgresql", PostgresStore)):
        row: dict[str, float | str] = {}
        for path in CPU_PATHS:
            try:
                row[path] = statistics.median(
                    _cpu_once(n, admin_url, backend, kind, path) for _ in range(repeat)
                )
            except Exception as exc:  # noqa: BLE001 - a missing server is a cell, not a crash
                text = str(exc).strip()
                row[path] = f"n/a: {text.splitlines()[0] if text else type(exc).__name__}"
        results[backend] = row
    return results


def _cpu_once(n: int, admin_url: str, backend: str, kind: type, path: str) -> float:
    """ms of client CPU per run of one measurement on a fresh store."""
    if backend == "sqlite":
        with sqlite_store(n) as url:
            return measure_cpu(n, url, kind, path) * 1000 / n
    with postgres_store(admin_url) as url:
        return measure_cpu(n, url, kind, path) * 1000 / n


@contextmanager
def sqlite_store(n: int) -> Iterator[str]:
    """The URL of a fresh SQLite file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        yield str(Path(tmp) / f"bench-{n}.db")


@contextmanager
def postgres_store(admin_url: str) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database on the server of `admin_url`, dropped after."""
    import psycopg

    name = f"reconciler_bench_{uuid.uuid4().hex[:12]}"
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"--postgres must be a postgresql:// URL (got {admin_url})")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield url
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_backends(n: int, admin_url: str) -> dict[str, dict[str, float] | str]:
    """Timings per backend for `n` runs, or the reason a backend was skipped."""
    results: dict[str, dict[str, float] | str] = {}
    with sqlite_store(n) as url:
        results["sqlite"] = measure(n, url, SqliteStore)
    try:
        with postgres_store(admin_url) as url:
            results["postgresql"] = measure(n, url, PostgresStore)
    except Exception as exc:  # the bench reports a missing server instead of failing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        results["postgresql"] = f"skipped: {reason}"
    return results


def print_table(n: int, results: dict[str, dict[str, float] | str]) -> float:
    """Print ms per run by phase and backend; return the worst total ms per run."""
    names = list(results)
    print(f"{'N':>6} {'phase':<24}" + "".join(f" {name + ' ms/run':>18}" for name in names))
    worst = 0.0
    for phase in (*PHASES, "total"):
        cells = []
        for name in names:
            timings = results[name]
            if isinstance(timings, str):
                cells.append(f" {'-':>18}")
                continue
            seconds = sum(timings.values()) if phase == "total" else timings[phase]
            cells.append(f" {seconds * 1000 / n:>18.3f}")
            if phase == "total":
                worst = max(worst, seconds * 1000 / n)
        print(f"{n:>6} {phase:<24}" + "".join(cells))
    for name in names:
        if isinstance(results[name], str):
            print(f"{name}: {results[name]}")
    return worst


def main(argv: list[str]) -> int:
    """Print one table per N; exit 1 if a backend's total misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int)
    parser.add_argument(
        "--postgres",
        default=DEFAULT_ADMIN_URL,
        help="a URL of the server to create the bench database on",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N = 100 and exit 0 whatever the figures (CI's smoke run)",
    )
    args = parser.parse_args(argv)
    sizes = args.sizes or ([100] if args.quick else [1000])
    worst = 0.0
    for n in sizes:
        worst = max(worst, print_table(n, run_backends(n, args.postgres)))
    verdict = "ok" if worst < TARGET_MS else "MISSED"
    print(
        f"per-run bookkeeping, worst backend: {worst:.3f} ms (target < {TARGET_MS} ms): {verdict}"
    )
    # A quick run only proves the bench still works: its figures on a busy CI host say little.
    return 0 if args.quick or worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
