"""`queue kill RUN [--grace D] [--reason TEXT]` (issue 16 §2): stop a run wherever it runs.

A pending run that never ran is cancelled at once. A pending run that has run (attempt > 1:
it waits out its retry back-off) is recorded `killed` at once: final like any kill, never
retried, its dependents blocked, alerted (the pass that holds it reports its end). A running run gets a kill request in the store, which the
process holding it (this host's pass or daemon, or a worker on another host) reads within a
second: it sends TERM to the run's whole process group on its target, KILL after the grace,
and records the run `killed` once nothing of it runs. This command waits for that record.
Audited before anything is asked (`queue.kill`: who, why, the grace). A run that already
ended, or does not exist, is exit 2; a holder that did not act within the grace and a
margin is exit 3 (the request stays for it). An `unknown` run (its result lost) has no
holder: its machine is asked directly whether its command still runs, and if so it is
stopped there (cli/orphan.py); exit 2 when nothing of it runs, 3 when the machine cannot be
asked.
"""

from __future__ import annotations

import time

from reconciler.adapters.audit.writer import audit_queue_change, default_actor
from reconciler.adapters.store.base import KillRequest
from reconciler.cli import views, wiring
from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.errors import InfrastructureError, InputError, UsageError
from reconciler.core.state import Run, RunStatus
from reconciler.pipeline.engine import utc_now

DEFAULT_GRACE = 10.0
# Beyond the grace: the holder looks for requests every second, a remote stop takes a round
# trip or two, and KILL may take a moment to reap the group.
MARGIN_SECONDS = 30.0
POLL_SECONDS = 0.2


def run(args, ctx, store) -> views.Output:
    """Kill (or cancel) run `args.run`; its outcome."""
    grace = _grace(args.kill_grace)
    actor = default_actor()
    reason = views.utf8_argument("--reason", args.reason) if args.reason else None
    found = store.get_run(args.run)
    if found is None:
        raise UsageError(f"run {args.run} does not exist (see `reconcile queue list`)")
    if found.status is RunStatus.PENDING and found.attempt > 1:
        stopped = _kill_between_attempts(store, found, actor, reason, ctx)
        if stopped is not None:
            return _output(
                stopped,
                f"killed between attempts (attempt {found.attempt - 1} had run; "
                "no further attempt)",
            )
        found = store.get_run(args.run) or found  # claimed meanwhile: kill it instead
    if found.status is RunStatus.PENDING:
        cancelled = _cancel(store, found, actor, reason, ctx)
        if cancelled is not None:
            return _output(cancelled, "cancelled (it had not started)")
        found = store.get_run(args.run) or found  # claimed meanwhile: kill it instead
    if found.status is RunStatus.UNKNOWN:
        return _stop_orphan(args, ctx, store, found, reason)
    if found.status.is_final:
        raise UsageError(
            f"run {found.id} already ended {found.status.value}; there is nothing to kill"
        )
    request = KillRequest(found.id, found.epoch, grace, actor, reason)
    # Audited first: a kill that cannot be recorded is not asked for.
    audit_queue_change(
        store, "kill", found, redact=ctx.redactor, grace=format_duration(int(grace)), reason=reason
    )
    store.request_kill(request, utc_now())
    ended = _wait(store, found, grace + MARGIN_SECONDS)
    if ended is None:
        raise InfrastructureError(
            f"run {found.id} is still running {format_duration(int(grace + MARGIN_SECONDS))} "
            f"after the kill request: its holder ({found.owner or 'unknown'}) did not act on "
            "it. The request stays: the holder stops the run when it looks again, or the run "
            "ends unknown once its lease runs out"
        )
    if ended.status is RunStatus.KILLED:
        return _output(ended, "killed")
    return _output(ended, f"ended {ended.status.value} before the kill reached it", exit_code=1)


def _stop_orphan(args, ctx, store, found: Run, reason: str | None) -> views.Output:
    """An `unknown` run has no holder to ask, but its command may still run on its machine
    (its result was lost, not its process): stop it there directly, through the run's
    transport (TERM to its process group, KILL two seconds later). The run stays `unknown`:
    what its command did is still not known. Audited once the machine said it runs, before
    it is stopped."""
    from reconciler.cli import orphan

    loaded = wiring.load(args)
    answer = orphan.ask(ctx, loaded, found)
    if answer.state == orphan.RUNNING:
        audit_queue_change(store, "kill", found, redact=ctx.redactor, reason=reason)
        answer = orphan.ask(ctx, loaded, found, stop=True)
    if answer.state == orphan.STOPPED:
        return _output(
            found, f"ended unknown; its command still ran on {found.machine} and was stopped"
        )
    if answer.state == orphan.UNTOLD:
        why = " ".join(answer.why.split())
        raise InfrastructureError(
            f"run {found.id} ended unknown and {found.machine} cannot be asked whether its "
            f"command still runs: {why}"
        )
    raise UsageError(
        f"run {found.id} already ended unknown and nothing of it runs on {found.machine}; "
        "there is nothing to kill"
    )


def _grace(text: str | None) -> float:
    if text is None:
        return DEFAULT_GRACE
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise UsageError(f"--grace {text!r}: {exc}") from None


def _cancel(store, found: Run, actor: str, reason: str | None, ctx) -> Run | None:
    """Cancel a pending run (audited); None when it is no longer pending."""
    why = f": {reason}" if reason else ""
    try:
        cancelled = store.cancel_run(
            found.id, utc_now(), error=f"cancelled by {actor} (queue kill){why}"
        )
    except InputError:
        return None
    audit_queue_change(store, "kill", cancelled, redact=ctx.redactor, reason=reason)
    return cancelled


def _kill_between_attempts(store, found: Run, actor: str, reason: str | None, ctx) -> Run | None:
    """Record `killed` a pending run that already ran an attempt (audited); None when it is
    no longer pending (an attempt started meanwhile)."""
    why = f": {reason}" if reason else ""
    stopped = store.block(
        found.id,
        f"killed by {actor} (queue kill) while it waited to retry{why}",
        utc_now(),
        RunStatus.KILLED,
    )
    if stopped is not None:
        audit_queue_change(store, "kill", stopped, redact=ctx.redactor, reason=reason)
    return stopped


def _wait(store, found: Run, seconds: float) -> Run | None:
    """The run once it ended (or its claim did: a retry), None after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        latest = store.get_run(found.id)
        if latest is None or latest.status.is_final or latest.epoch != found.epoch:
            return latest or found
        time.sleep(POLL_SECONDS)  # polling the store, bounded by the deadline
    return None


def _output(run: Run, what: str, exit_code: int = 0) -> views.Output:
    error = f": {run.error}" if run.error and run.status is not RunStatus.CANCELLED else ""
    text = views.printable(f"run {run.id} ({run.task} on {run.machine}) {what}{error}")
    return views.Output(views.run_json(run), lambda: text, exit_code=exit_code)


__all__ = ["run"]
