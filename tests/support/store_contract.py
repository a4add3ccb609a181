"""Helpers of the state store contract suite (tests/contract), shared by its modules.

Building runs: `enqueue(...)` is one Enqueue with the suite's defaults (task prod/web on m1,
version v1, priority 3, reason new); `add(store, now, *enqueues)` records them as one plan
(one default run when none is given); `one(...)` records a single run; `ended(store, now,
status)` takes a run through pending -> running -> `status`.

Races: `race(code, args_per_process)` starts one Python process per argument list running
`code`, waits until each has printed "ready", lets them all go at once and returns each one's
output lines. Ageing: `DB_CLOCK_AGO[backend]` is SQL for "the database's clock minus ?
seconds", so a test ages a lease or a claim the way time would, without sleeping.
"""

from __future__ import annotations

import subprocess
import sys

from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason, Run, RunStatus

# The database's clock minus a number of seconds, in each dialect (SQLite keeps sortable text).
DB_CLOCK_AGO = {
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '-' || ? || ' seconds')",
    "postgresql": "now() - make_interval(secs => %s)",
}


def enqueue(
    task="prod/web",
    machine="m1",
    version="v1",
    priority=3,
    slot=None,
    reason=Reason.NEW,
    hold=None,
) -> Enqueue:
    return Enqueue(task, machine, version, priority, reason, slot, hold)


def add(store, now, *enqueues: Enqueue, commit: str | None = "c0ffee") -> list[Run]:
    return store.record_plan(Plan(enqueue=enqueues or (enqueue(),)), commit, now)


def one(store, now, **fields) -> Run:
    [run] = add(store, now, enqueue(**fields))
    return run


def ended(store, now, status: RunStatus, **fields) -> Run:
    """A run that went pending -> running -> `status`."""
    run = store.claim(one(store, now, **fields).id, "w", now)
    return store.finish(run.id, run.epoch, status, now, exit_code=1, output="out", error="err")


def race(code: str, args_per_process: list[list[str]]) -> list[list[str]]:
    """Start one process per argument list, let them all go at once, and return each one's
    output lines after "ready". Fails the test if a process fails."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in args_per_process
    ]
    try:
        for proc in procs:  # a protocol signal, not a sleep: each has opened what it needs
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()  # communicate() closes it
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err
    return [out.split() for out, _ in results]


__all__ = ["DB_CLOCK_AGO", "add", "ended", "enqueue", "one", "race"]
