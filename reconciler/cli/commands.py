"""The commands of a pass and the queue: each takes parsed arguments and returns its result
as a `views.Output` (main prints it in the format asked for) or an exit code (args.COMMANDS
names which function runs which command)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from contextlib import contextmanager
from datetime import timedelta

from reconciler.adapters.source.git import head_commit
from reconciler.cli import views, wiring
from reconciler.cli.passes import (
    prepared_pass,
    run_pass,
    stream_of,
    wired_engine,
    worker_inventory,
)
from reconciler.cli.progress import print_warnings as _print_warnings
from reconciler.cli.progress import progress_for
from reconciler.cli.settings import Context
from reconciler.core.state import ExecutedState, RunStatus
from reconciler.pipeline.approvals import Approving, with_approvals, with_protected_rules
from reconciler.pipeline.engine import Engine, utc_now
from reconciler.pipeline.reconciled import HonouringFreezes
from reconciler.pipeline.sinks import audit_queue_change

log = logging.getLogger(__name__)


def _protected(ctx: Context, desired, store):
    """`desired` (the working tree's) with the approval rules a pass of its commit would
    judge by: none weaker than the commit reconciled before it (`with_protected_rules`)."""
    inventory = ctx.settings.inventory.value
    return with_protected_rules(desired, store, inventory, head_commit(inventory))


def cmd_plan(args: argparse.Namespace, ctx: Context) -> views.Output:
    """What the next pass would do; never creates or changes a store."""
    loaded = wiring.load(args)
    _print_warnings(loaded.warnings)
    store = wiring.store(args, loaded.inventory, read_only=True)
    try:
        executed = store.snapshot() if store is not None else ExecutedState()
        desired = with_approvals(_protected(ctx, loaded.desired, store), store)
    finally:
        if store is not None:
            store.close()
    from reconciler.cli.slot_views import next_slots_markdown, next_slots_text
    from reconciler.core.next_slots import next_slots
    from reconciler.core.plan import make_plan

    now = utc_now()
    plan = make_plan(desired, executed, now)
    slots = next_slots(loaded.desired, now)  # each scheduled task's, in its zone and UTC
    rollouts = _planned_rollouts(plan, desired, executed, now)
    data = plan.to_json() | ({"schedules": [s.to_json() for s in slots]} if slots else {})
    data |= {"rollouts": rollouts} if rollouts else {}
    return views.Output(
        data,
        lambda: views.plan_text(plan) + next_slots_text(slots) + views.rollouts_text(rollouts),
        lambda: (
            views.plan_markdown(plan)
            + next_slots_markdown(slots)
            + views.rollouts_markdown(rollouts)
        ),
    )


def _planned_rollouts(plan, desired, executed, now) -> list[dict]:
    """Where the rollout of each task the plan enqueues stands once the plan is recorded
    (`rollout.Stand.to_json`), by task."""
    from reconciler.core.plan import planned_rollouts, rollout_stands

    stands = rollout_stands(planned_rollouts(plan.enqueue, desired), desired, executed, now)
    return [stands[task].to_json() for task in sorted(stands)]


def cmd_once(args: argparse.Namespace, ctx: Context) -> int | views.Output:
    """One pass: validate, plan, record, run the queue to the end, summarise."""
    if args.dry_run:
        return cmd_plan(args, ctx)
    commit = head_commit(ctx.settings.inventory.value)
    ctx.settings.lock_timeout.check()  # a bad flag is exit 2 before anything is opened
    # Bad input stops in prepared_pass: nothing runs. Under git.verify, the inventory is the
    # commit's own (a private checkout), not the working tree.
    with prepared_pass(ctx, commit) as (loaded, store, trust):
        _print_warnings(loaded.warnings, args.log_format)
        with (
            progress_for(args.quiet, log_format=args.log_format) as progress,
            wired_engine(
                ctx, loaded, store, commit=commit, progress=progress, stream=stream_of(args)
            ) as (engine, sinks),
        ):
            engine.grace = ctx.settings.grace.value
            # The pauses of rollouts that end by then are waited for; later ones wait, held.
            engine.pause_deadline = engine.clock() + timedelta(seconds=ctx.settings.max_wait.value)
            with graceful_stop(engine) as stopped_by:
                report = run_pass(ctx, loaded, store, engine, sinks, commit, trust)
    return _once_result(args, report, commit, stopped_by)


def _once_result(
    args: argparse.Namespace, report, commit: str | None, stopped_by: list[int]
) -> views.Output:
    """The end of `--once` and its exit code. A pass a signal stopped with work left behind
    exits 128 + the signal (130 SIGINT, 143 SIGTERM), as a shell reports a killed command:
    neither 0 nor 1 ("a run failed") would say that the pass did not finish."""
    signum = stopped_by[0] if stopped_by and report.left_behind else None
    signame = signal.Signals(signum).name if signum else None
    runs = sorted(report.runs.values(), key=lambda r: r.id)
    left_behind = [report.runs[i] for i in report.left_behind] if signum else []
    return views.Output(
        {
            "runs": [views.run_json(r, held=report.held.get(r.id)) for r in runs],
            "counts": report.counts(),
            "commit": commit,
            "stopped_by": signame,
            "left_behind": report.left_behind if signum else [],
            "elsewhere": report.elsewhere,
        },
        lambda: views.once_text(
            runs, report.counts(), report.held, signame, left_behind, report.elsewhere
        ),
        exit_code=128 + signum if signum else report.exit_code,
    )


@contextmanager
def graceful_stop(engine: Engine):
    """First SIGINT/SIGTERM/SIGHUP: claim nothing more; running runs get the engine's grace
    period (then they are stopped and recorded `unknown`). A second one stops them at once
    (the summary still lists them). Yields a list that receives the number of the first
    signal."""
    received: list[int] = []

    def handler(signum, frame):
        if engine.stop.is_set():
            raise KeyboardInterrupt
        received.append(signum)
        engine.stop.set()
        log.warning(
            "%s: starting nothing more; running runs get %s to finish (again to stop them at once)",
            signal.Signals(signum).name,
            "as long as they take" if engine.grace is None else f"{engine.grace:g}s",
        )

    # SIGHUP (a closed terminal) too, as SIGTERM, unless the process was started ignoring it.
    stops = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    stops = [s for s in stops if s != signal.SIGHUP or signal.getsignal(s) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in stops}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_status(args: argparse.Namespace, ctx: Context) -> views.Output:
    """Queue depth by priority and team, running runs, recent failures, machines; with
    `--format html -o DIR`, the web console's pages as files."""
    if getattr(args, "format", None) == "html":
        from reconciler.cli.serve_cmd import write_static

        return write_static(args, ctx)
    if getattr(args, "output", None):
        from reconciler.core.errors import UsageError

        raise UsageError("-o DIR goes with --format html (the console's pages as files)")
    from reconciler.pipeline.metrics import status_numbers

    loaded = wiring.load(args)
    store = wiring.store(args, loaded.inventory, read_only=True)
    try:
        desired = with_approvals(_protected(ctx, loaded.desired, store), store)
        numbers = status_numbers(store, desired, utc_now())
    finally:
        if store is not None:
            store.close()
    data = numbers.to_json()
    return views.Output(data, lambda: views.status_text(data))


def cmd_queue(args: argparse.Namespace, ctx: Context) -> int | views.Output:
    """`queue list|show|cancel|retry|kill|prune`: read and steer the run history."""
    if args.queue_command == "prune":
        from reconciler.cli.prune_cmd import run

        return run(args, ctx)
    store = wiring.store(
        args,
        wiring.inventory_if_valid(args),
        create=False,
        read_only=args.queue_command in ("list", "show"),
    )
    if store is None:
        if args.queue_command == "list":
            return views.Output([], lambda: views.runs_text([]))
        from reconciler.core.errors import InputError

        raise InputError(f"no run {args.run}: there is no state store yet")
    try:
        return _QUEUE[args.queue_command](args, ctx, store)
    finally:
        store.close()


def _queue_list(args, ctx, store) -> views.Output:
    statuses = None
    if args.status:
        try:
            statuses = [RunStatus(s) for s in args.status]
        except ValueError as exc:
            from reconciler.core.errors import UsageError

            raise UsageError(
                f"--status: {exc}; use one of " + ", ".join(s.value for s in RunStatus)
            ) from None
    team = views.utf8_argument("--team", args.team) if args.team is not None else None
    runs = store.list_runs(statuses, team, args.limit)
    return views.Output([views.run_json(r) for r in runs], lambda: views.runs_text(runs))


def _queue_show(args, ctx, store) -> int | views.Output:
    if getattr(args, "follow", False):
        from reconciler.cli import follow_cmd

        return follow_cmd.run(args, store)
    run = store.get_run(args.run)
    if run is None:
        from reconciler.core.errors import InputError

        raise InputError(f"no run {args.run} in the state store", None)
    return views.Output(views.run_json(run, detail=True), lambda: views.run_detail_text(run))


def _check_retryable(args, ctx, store) -> tuple[int, str]:
    """`queue retry` only for a run the next pass can run again: its task is still in the
    inventory, targets its machine, and the run is of the task's current version. Returns
    the run to flag (the latest of its version there, see `plan.retry_target`) and a note;
    raises `UsageError` (exit 2) saying why when the retry would not happen, or would start
    beside an `unknown` run's command still running on its machine."""
    from reconciler.core.errors import UsageError
    from reconciler.core.plan import retry_target

    run = store.get_run(args.run)
    if run is None or not run.status.is_problem:
        return args.run, ""  # the store's own error names the missing or unretryable run
    if run.manual:
        raise UsageError(
            f"run {run.id} was run on demand (trigger manual), which no pass repeats: run the "
            f"task again with `reconcile run {run.task} --reason TEXT`"
        )
    loaded = wiring.load(args)
    spec = loaded.desired.tasks.get(run.task)
    if spec is None:
        raise UsageError(f"run {run.id}: task {run.task} is no longer in the inventory")
    if run.machine not in spec.versions:
        raise UsageError(f"run {run.id}: task {run.task} no longer targets {run.machine}")
    if not spec.accepts(run.machine, run.version):
        raise UsageError(
            f"run {run.id} is of an older version of {run.task}; the current "
            "version runs on its own (see `reconcile plan`)"
        )
    target, why = retry_target(run, spec, store.snapshot())
    if target is None:
        raise UsageError(f"run {run.id} will not run again: {why}")
    for lost in {r.id: r for r in (run, target) if r.status is RunStatus.UNKNOWN}.values():
        _refuse_beside_orphan(args, ctx, lost, loaded)
    return target.id, why


def _refuse_beside_orphan(args, ctx, run, loaded) -> None:
    """An `unknown` run's command may still run on its machine (its result was lost, not
    necessarily its process): retrying it then would run a second copy beside the first.
    Ask the machine (cli/orphan.py); refuse (exit 2) while it runs, or when it cannot be
    asked, unless `--force`. A command that ended leaves its kept result for the next pass
    to adopt, before it plans the retry (see `Engine._adopt_lost`)."""
    from reconciler.cli import orphan
    from reconciler.core.errors import UsageError

    answer = orphan.ask(ctx, loaded, run)
    if answer.state == orphan.RUNNING:
        raise UsageError(
            f"run {run.id} ({run.task}) still runs on {run.machine}: stop it with "
            f"`reconcile queue kill {run.id}` first, or wait for it to end"
        )
    if answer.state == orphan.UNTOLD and not args.force:
        why = " ".join(answer.why.split())  # one line, whatever the transport said
        raise UsageError(
            f"cannot tell whether run {run.id} ({run.task}) still runs on {run.machine}: "
            f"{why}; once you know it does not, retry with --force"
        )
    if answer.state == orphan.UNTOLD:
        print(
            f"run {run.id}: {run.machine} could not be asked whether it still runs; "
            "retried anyway (--force)",
            file=sys.stderr,
        )


def _resume_rollout(args, ctx, store, run) -> None:
    """`queue retry` of a halted run resumes its rollout: every other halted run of the same
    version (the latest run on its machine) is flagged too, each audited, and the version's
    `halted` alert is forgotten, so that halting again alerts again."""
    from reconciler.core.plan import current_run

    spec = wiring.load(args).desired.tasks.get(run.task)
    snapshot = store.snapshot()
    halted = [
        latest
        for machine in (spec.targets if spec is not None else ())
        if (latest := current_run(snapshot, spec, machine)) is not None
        and latest.status is RunStatus.HALTED
        and latest.id != run.id
    ]
    for other in halted:
        if not other.retry_requested:  # asked already: flagged and audited then
            flagged = store.request_retry(other.id, utc_now())
            audit_queue_change(store, "retry", flagged, redact=ctx.redactor)
    store.forget_alerts(run.task, "", ("halted",))
    # Every halted run of the version, whether this retry flagged it or an earlier one did:
    # asking twice says the same thing.
    print(
        f"resuming the rollout of {run.task}: {len(halted) + 1} halted run(s) of this version "
        "will run again at the next pass, batch by batch; failures before now no longer count "
        "against max_failed",
        file=sys.stderr,
    )


def _queue_change(verb: str):
    def change(args, ctx, store) -> views.Output:
        run_id, note = args.run, ""
        if verb == "retry":
            run_id, note = _check_retryable(args, ctx, store)
        method = store.cancel_run if verb == "cancel" else store.request_retry
        run = method(run_id, utc_now())
        if note:
            print(note, file=sys.stderr)
        forced = {"force": True} if getattr(args, "force", False) else {}
        audit_queue_change(store, verb, run, redact=ctx.redactor, **forced)
        if verb == "retry" and run.status is RunStatus.HALTED:
            _resume_rollout(args, ctx, store, run)
        return views.Output(views.run_json(run), lambda: views.queue_change_text(verb, run))

    return change


def _queue_kill(args, ctx, store) -> views.Output:
    from reconciler.cli import kill_cmd

    return kill_cmd.run(args, ctx, store)


_QUEUE = {
    "kill": _queue_kill,
    "list": _queue_list,
    "show": _queue_show,
    "cancel": _queue_change("cancel"),
    "retry": _queue_change("retry"),
}


def cmd_worker(args: argparse.Namespace, ctx: Context) -> int:
    """Execute queued runs of a shared (PostgreSQL) queue until SIGTERM/SIGINT; plans nothing."""
    from reconciler.core.errors import UsageError

    def refuse_unshared(url: str) -> None:
        # Before any store is opened: opening an SQLite URL creates and migrates the file,
        # and a worker refusing it must leave nothing behind (a typo made a store).
        if "://" not in url or url.split("://", 1)[0].lower() not in ("postgresql", "postgres"):
            raise UsageError(
                "reconcile worker needs a shared PostgreSQL store (--state "
                "postgresql://...); with SQLite, `reconcile --once` runs the queue"
            )

    if ctx.settings.state is not None:  # the host's word, known before the inventory loads
        refuse_unshared(ctx.settings.state_url(None).value)
    # Under git.verify: the store's last reconciled commit, never the working tree.
    since = time.time()  # before the inventory is read
    follow = worker_inventory(ctx, lambda loaded: _FollowInventory(args, loaded, since))
    loaded = follow.loaded
    try:
        refuse_unshared(wiring.state_url(args, loaded.inventory))
    except UsageError:
        getattr(follow, "close", lambda: None)()
        raise
    store = wiring.store(args, loaded.inventory)
    try:
        with (
            progress_for(args.quiet, live=False, log_format=args.log_format) as progress,
            wired_engine(
                ctx, loaded, store, commit=None, progress=progress, desired=follow.current
            ) as (
                engine,
                sinks,
            ),
        ):
            engine.grace = ctx.settings.grace.value
            if hasattr(follow, "on_refused"):  # git.verify turned on: stop claiming
                follow.on_refused, follow.read_last = engine.stop.set, store.last_commit
            sinks.worker_started()
            with graceful_stop(engine):
                # Approvals given meanwhile too; and the freezes the passes reconciled, which
                # hold here even while this checkout lags (it may not have the freeze yet).
                inventory = ctx.settings.inventory.value
                engine.work(Approving(HonouringFreezes(follow, store, inventory), store))
        if getattr(follow, "refused", None):
            from reconciler.core.errors import SourceError

            raise SourceError(follow.refused)
    finally:
        store.close()
        getattr(follow, "close", lambda: None)()
    return 0


class _FollowInventory:
    """The worker's desired state: the inventory on disk, looked at every few seconds and
    re-read when a file of it changed. A broken inventory keeps the last good one (and says
    so once), like a daemon riding out a typo.

    Re-reading costs a worker's dispatch loop most of a second on a large inventory, so the
    files' sizes and times are compared first (`wiring.inventory_stamp`). A file written
    within `RACY` seconds of the last read may have changed again within one tick of the
    file system's clock (a few milliseconds on Linux file systems), unseen by its stamp:
    then it is re-read anyway."""

    INTERVAL = 5.0
    RACY = 0.1

    def __init__(self, args, loaded, since: float):
        """`loaded` was read after `since` (a `time.time()`): a file changed after that is
        re-read at the first look."""
        self.args, self.loaded, self.read_at = args, loaded, time.monotonic()
        self.folder = wiring.inventory_dir(args)
        self.stamp, _ = wiring.inventory_stamp(self.folder)
        self.loaded_at = since

    def __call__(self):
        from reconciler.core.errors import InputError

        if time.monotonic() - self.read_at >= self.INTERVAL:
            self.read_at = time.monotonic()
            stamp, newest = wiring.inventory_stamp(self.folder)
            if stamp != self.stamp or newest >= self.loaded_at - self.RACY:
                self.stamp, self.loaded_at = stamp, time.time()
                try:
                    self.loaded = wiring.load(self.args)
                except InputError as exc:
                    log.error("inventory is invalid; keeping the last good one: %s", exc)
        return self.loaded.desired


def cmd_machines(args: argparse.Namespace, ctx: Context) -> int:
    """`machines` (reachability, last seen, load) and `machines keyscan HOST[:PORT]`."""
    from reconciler.cli.machines_cmd import run

    loaded = None if args.action == "keyscan" else wiring.load(args)
    secrets = wiring.vault_secrets(ctx, loaded.inventory) if loaded is not None else None
    transports = wiring.transports(secrets)
    try:
        return run(args, loaded.inventory if loaded is not None else None, transports)
    finally:
        for transport in transports.values():
            transport.close()


def cmd_codeowners(args: argparse.Namespace, ctx: Context) -> int:
    """A CODEOWNERS file from the teams' roles (the same rules `git.verify` enforces)."""
    from reconciler.cli.codeowners_cmd import run

    return run(args, ctx)
