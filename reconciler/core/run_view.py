"""A run as JSON: the form `queue list` and `queue show` print and the web console serves
(SPEC §4: fields may be added, never renamed). Pure: values in, a dict out."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.core.holds import Hold
    from reconciler.core.state import Run


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


def run_json(run: Run, *, detail: bool = False, held: Hold | None = None) -> dict:
    """A run as in `queue list` (SPEC §4); with `detail`, plus output and error (`queue show`).
    `held`: what holds the (pending) run, a deny window or a freeze (SPEC §7 `held`)."""
    data = {
        "id": run.id,
        "task": run.task,
        "machine": run.machine,
        "version": run.version,
        "status": run.status.value,
        "priority": run.priority,
        "attempt": run.attempt,
        "exit_code": run.exit_code,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "reason": run.reason,
        "slot": run.slot,
        "commit": run.commit,
        "not_before": iso(run.not_before),
        "error": run.error,
        "trigger": run.trigger,  # plan, or manual (`reconcile run`: `reason` is the person's)
        "actor": run.actor,
        "params": dict(run.params),
        "held": held.describe() if held is not None and run.status.is_active else None,
    }
    if detail:
        data["output"] = run.output
    return data
