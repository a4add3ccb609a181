"""Each page's data, computed from store reads: plain dicts, the page's JSON twin.

The overview is `reconcile status --format json` plus what a team looks for first (the runs
that run now, the recent failures, the last reconciled commit, the audit chain); a run is
`reconcile queue show RUN --format json`; the runs page lists runs as `queue list` does.
Nothing here writes: every read goes through the store's read methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.adapters.store.base import RunFilter, StateStore
from reconciler.core.model import DesiredState, Inventory
from reconciler.core.output import with_mark
from reconciler.core.run_view import iso, run_json
from reconciler.core.state import PROBLEM, RunStatus
from reconciler.pipeline.approvals import with_approvals
from reconciler.pipeline.metrics import status_numbers

PAGE_SIZE = 50
PROBLEMS = tuple(sorted(PROBLEM, key=lambda s: s.value))  # counted in failed_last_24h too
RECENT_FAILURES = 10
# Recent runs read to find when each machine last finished a command (as `reconcile machines`).
LAST_SEEN_HISTORY = 2000
TASK_HISTORY = 200  # a task's recent runs, for the versions it ran


@dataclass(frozen=True)
class Reading:
    """What a page is computed from: the store (None before the first pass), the inventory
    as loaded and compiled, and the time of the request."""

    store: StateStore | None
    inventory: Inventory
    desired: DesiredState
    now: datetime


class NotFound(LookupError):
    """The page names a run, task or machine that does not exist."""


def overview(r: Reading) -> dict[str, Any]:
    """`reconcile status --format json`, plus the running runs, the recent failures, the
    last reconciled commit and when, and the audit chain's state."""
    data = status_numbers(r.store, with_approvals(r.desired, r.store), r.now).to_json()
    store = r.store
    last_seen = _last_seen(store)
    for machine in data["machines"]:
        machine["last_seen"] = iso(last_seen.get(machine["name"]))
    last = store.last_pass() if store is not None else None
    since = r.now - timedelta(hours=24)
    failures = store.runs_page(RunFilter(statuses=PROBLEMS), limit=RECENT_FAILURES) if store else []
    data |= {
        "running_runs": [run_json(run) for run in (store.running() if store else [])],
        "recent_failures": [
            run_json(run) for run in failures if run.finished_at is None or run.finished_at >= since
        ],
        "last_pass": {"commit": last[0], "at": iso(last[1])} if last else None,
        "problem_statuses": [status.value for status in PROBLEMS],
        "audit": _audit(store),
    }
    return data


def _last_seen(store: StateStore | None) -> dict[str, datetime]:
    """When each machine last finished a command, from the recent history."""
    seen: dict[str, datetime] = {}
    if store is None:
        return seen
    for run in store.runs_page(RunFilter(), limit=LAST_SEEN_HISTORY):
        if run.exit_code is not None and run.finished_at is not None:
            if run.machine not in seen or run.finished_at > seen[run.machine]:
                seen[run.machine] = run.finished_at
    return seen


def _audit(store: StateStore | None) -> dict[str, Any]:
    """The audit chain as the store holds it: its head and what waits to be sealed. A full
    check of every link is `reconcile audit verify`'s (it reads the whole log)."""
    if store is None:
        return {"entries": 0, "head": None, "at": None, "unsealed": 0, "anchor": None}
    head, anchor = store.audit_head(), store.audit_anchor()
    return {
        "entries": head.seq if head is not None else 0,
        "head": head.hash if head is not None else None,
        "at": head.at if head is not None else None,
        "unsealed": store.unsealed_audit(),
        "anchor": anchor.seq if anchor is not None else None,
    }


def parse_filter(query: dict[str, list[str]]) -> RunFilter:
    """The runs page's filter from its query string; an unknown status is `ValueError`."""

    def one(name: str) -> str | None:
        values = [v.strip() for v in query.get(name, []) if v.strip()]
        return values[0] if values else None

    statuses = tuple(RunStatus(v) for v in query.get("status", []) if v.strip())
    return RunFilter(statuses, one("team"), one("task"), one("machine"), one("commit"))


def filter_json(f: RunFilter) -> dict[str, Any]:
    return {
        "status": [s.value for s in f.statuses],
        "team": f.team,
        "task": f.task,
        "machine": f.machine,
        "commit": f.commit,
    }


def runs(r: Reading, f: RunFilter, before: int | None, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of runs, newest first: each as `queue list --format json` shows it, and the
    keyset of the next page (`next_before`, None on the last)."""
    page = r.store.runs_page(f, before, limit + 1) if r.store is not None else []
    more = len(page) > limit
    page = page[:limit]
    return {
        "runs": [run_json(run) for run in page],
        "filters": filter_json(f),
        "before": before,
        "limit": limit,
        "next_before": page[-1].id if more and page else None,
        "choices": {
            "status": [s.value for s in RunStatus],
            "team": sorted(r.desired.teams),
            "task": sorted(r.desired.tasks),
            "machine": sorted(r.desired.machines),
        },
    }


def run(r: Reading, run_id: int) -> dict[str, Any]:
    """`reconcile queue show RUN --format json`; while the run runs, its `output` is what
    the store holds of it so far (as `queue show --follow` prints it)."""
    found = r.store.get_run(run_id) if r.store is not None else None
    if found is None:
        raise NotFound(f"no run {run_id} in the state store")
    data = run_json(found, detail=True)
    if found.status is RunStatus.RUNNING and not found.output:
        chunks = r.store.output_since(found.id, found.attempt)
        if chunks:
            data["output"] = with_mark(chunks[0].start, "".join(c.body for c in chunks))
    return data


def task(r: Reading, task_id: str, read_file: Callable[[Path], str | None]) -> dict[str, Any]:
    """A task: its definition as written in the inventory, its version on each machine it
    targets, the versions its recent runs ran, and the latest run on each machine."""
    spec = r.desired.tasks.get(task_id)
    if spec is None:
        raise NotFound(f"no task {task_id} in the inventory")
    source = r.inventory.tasks.get(task_id)
    location = (source.location if source is not None else None) or spec.location
    path = Path(location.path) if location is not None else None
    recent = (
        r.store.runs_page(RunFilter(task=task_id), limit=TASK_HISTORY)
        if r.store is not None
        else []
    )
    latest: dict[str, Any] = {}
    versions: dict[str, dict[str, Any]] = {}
    for run_ in recent:  # newest first
        latest.setdefault(run_.machine, run_)
        seen = versions.setdefault(
            run_.version, {"version": run_.version, "runs": 0, "last_run": run_.id}
        )
        seen["runs"] += 1
    for machine in spec.targets:  # a machine whose runs are older than the recent ones
        if machine not in latest and r.store is not None:
            older = r.store.runs_page(RunFilter(task=task_id, machine=machine), limit=1)
            if older:
                latest[machine] = older[0]
    return {
        "id": spec.id,
        "team": spec.team,
        "name": spec.name,
        "description": spec.description,
        "file": str(path) if path is not None else None,
        "line": location.line if location is not None else None,
        "definition": read_file(path) if path is not None else None,
        "priority": spec.priority,
        "schedule": spec.schedule,
        "timezone": spec.timezone,
        "after": list(spec.after),
        "targets": list(spec.targets),
        "current_versions": dict(sorted(spec.versions.items())),
        "versions_run": list(versions.values()),
        "latest_runs": [run_json(latest[m]) for m in sorted(latest)],
    }


def machine(r: Reading, name: str) -> dict[str, Any]:
    """A machine: labels, team, reachability (its `unreachable` alert), its load (runs now
    against `max_parallel`), when it last finished a command, and its recent runs."""
    spec = r.desired.machines.get(name)
    if spec is None:
        raise NotFound(f"no machine {name} in the inventory")
    store = r.store
    recent = store.runs_page(RunFilter(machine=name), limit=PAGE_SIZE) if store else []
    running = [run_ for run_ in (store.running() if store else []) if run_.machine == name]
    pending = [run_ for run_ in (store.pending() if store else []) if run_.machine == name]
    down = store.unreachable_machines() if store else set()
    finished = [x.finished_at for x in recent if x.exit_code is not None and x.finished_at]
    return {
        "name": spec.name,
        "team": spec.team,
        "transport": spec.transport,
        "host": spec.host,
        "port": spec.port if spec.transport == "ssh" else None,
        "labels": dict(sorted(spec.labels.items())),
        "max_parallel": spec.max_parallel,
        "up": name not in down,
        "running": len(running),
        "pending": len(pending),
        "last_seen": iso(max(finished)) if finished else None,
        "tasks": sorted(t.id for t in r.desired.tasks.values() if name in t.targets),
        "runs": [run_json(run_) for run_ in recent],
    }
