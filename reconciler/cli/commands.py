"""The commands: each takes parsed arguments, prints its result and returns an exit code."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from contextlib import contextmanager

from reconciler.adapters.source.git import head_commit
from reconciler.cli import views, wiring
from reconciler.cli.passes import prepared_pass, run_pass, wired_engine, worker_inventory
from reconciler.cli.progress import json_line, progress_for
from reconciler.core.compile import shared_user_warnings
from reconciler.core.diagnostics import Diagnostic, Diagnostics, Location, Severity, did_you_mean
from reconciler.core.errors import InputError, VaultError, raise_if_errors
from reconciler.core.model import VaultRef
from reconciler.core.state import ExecutedState, RunStatus
from reconciler.inventory.lint import find_hardcoded_credentials
from reconciler.pipeline.engine import Engine, utc_now
from reconciler.pipeline.sinks import audit_queue_change

log = logging.getLogger(__name__)


def _print_warnings(warnings, log_format: str | None = None) -> None:
    for warning in warnings:
        print(
            json_line(str(warning), "warning") if log_format == "json" else str(warning),
            file=sys.stderr,
        )


def cmd_validate(args: argparse.Namespace) -> int:
    """Check the inventory: schemas, references, cycles, likely hardcoded credentials."""
    fmt = wiring.output_format(args)
    try:
        loaded = wiring.load(args)
        warnings = [
            *loaded.warnings,
            *find_hardcoded_credentials(loaded.inventory),
            *shared_user_warnings(loaded.inventory),
        ]
        warnings += _check_vault_references(args, loaded)
    except InputError as exc:
        if fmt != "json":
            raise  # one located line per problem on stderr (cli.main)
        # SPEC §7: a verdict on stdout even when the inventory is invalid.
        redact = args.redactor
        print(
            views.to_json(
                {
                    "valid": False,
                    "errors": [_diagnostic_json(d, redact) for d in exc.diagnostics.errors],
                    "warnings": [redact(str(w)) for w in exc.diagnostics.warnings],
                }
            )
        )
        return exc.exit_code
    if fmt == "json":
        print(
            views.to_json(
                {
                    "valid": not (args.strict and warnings),
                    "errors": [],
                    "teams": len(loaded.inventory.teams),
                    "machines": len(loaded.inventory.machines),
                    "tasks": len(loaded.desired.tasks),
                    "warnings": [str(w) for w in warnings],
                }
            )
        )
    else:
        _print_warnings(warnings)
        print(
            f"valid: {len(loaded.inventory.teams)} teams, {len(loaded.inventory.machines)} "
            f"machines, {len(loaded.desired.tasks)} tasks"
            + (f", {len(warnings)} warnings" if warnings else "")
        )
    return 2 if args.strict and warnings else 0


def _diagnostic_json(diagnostic: Diagnostic, redact) -> dict:
    """One problem of `validate --format json`: where (file, line, column), what, and the
    one-line text the text format prints."""
    where = diagnostic.location
    return {
        "path": where.path,
        "line": where.line or None,
        "column": where.column or None,
        "message": redact(diagnostic.message),
        "hint": redact(diagnostic.hint) if diagnostic.hint else None,
        "text": redact(str(diagnostic)),
    }


def _check_vault_references(args: argparse.Namespace, loaded) -> list:
    """With an identity, every `{vault: NAME}` must name a key of its team's vault: unknown
    names are errors (exit 2); vaults this identity cannot open are warnings (one may be a
    recipient of some teams only). Without an identity nothing is checked."""
    from reconciler.adapters.vault.secrets import VaultSecrets, load_identities

    identities = load_identities(getattr(args, "identity", None))
    if not identities:
        return []
    resolver = VaultSecrets(loaded.inventory.root, identities, args.redactor)
    errors, warnings = Diagnostics(), []
    for team, refs in sorted(_vault_references(loaded.inventory).items()):
        try:
            names = resolver.team_secrets(team)
        except VaultError as exc:
            warnings.append(
                Diagnostic(
                    Location(f"team {team}"),
                    f"cannot check its vault references: {exc}",
                    severity=Severity.WARNING,
                )
            )
            continue
        for ref in refs:
            if ref.name not in names:
                errors.error(
                    ref.location or Location(loaded.inventory.root),
                    f"secret '{ref.name}' is not in the vault of team '{team}'",
                    did_you_mean(ref.name, names)
                    or f"add it: reconcile vault set {team} {ref.name} -",
                )
    raise_if_errors(errors)
    return warnings


def _vault_references(inventory) -> dict[str, list[VaultRef]]:
    """Every `{vault: NAME}` of the inventory, by the team whose vault it reads."""
    refs: dict[str, list[VaultRef]] = {}
    for task in inventory.tasks.values():
        refs.setdefault(task.team, []).extend(v for _, v in task.env if isinstance(v, VaultRef))
    for machine in inventory.machines.values():
        if machine.key is not None:
            refs.setdefault(machine.team, []).append(machine.key)
    for team in inventory.teams.values():
        refs.setdefault(team.name, []).extend(
            a.url for a in team.alerts if isinstance(a.url, VaultRef)
        )
    return {team: found for team, found in refs.items() if found}


def cmd_plan(args: argparse.Namespace) -> int:
    """What the next pass would do; never creates or changes a store."""
    loaded = wiring.load(args)
    _print_warnings(loaded.warnings)
    store = wiring.store(args, loaded.inventory, read_only=True)
    try:
        executed = store.snapshot() if store is not None else ExecutedState()
    finally:
        if store is not None:
            store.close()
    from reconciler.core.plan import make_plan

    plan = make_plan(loaded.desired, executed, utc_now())
    fmt = wiring.output_format(args, ("text", "json", "markdown"))
    if fmt == "json":
        print(views.to_json(plan.to_json()))
    elif fmt == "markdown":
        print(views.plan_markdown(plan), end="")
    else:
        print(views.plan_text(plan))
    return 0


def cmd_once(args: argparse.Namespace) -> int:
    """One pass: validate, plan, record, run the queue to the end, summarise."""
    if args.dry_run:
        return cmd_plan(args)
    ctx = wiring.context(args)
    commit = head_commit(ctx.settings.inventory.value)
    ctx.settings.lock_timeout.check()  # a bad flag is exit 2 before anything is opened
    # Bad input stops in prepared_pass: nothing runs. Under git.verify, the inventory is the
    # commit's own (a private checkout), not the working tree.
    with prepared_pass(ctx, commit) as (loaded, store, trust):
        _print_warnings(loaded.warnings, args.log_format)
        with (
            progress_for(args.quiet, log_format=args.log_format) as progress,
            wired_engine(ctx, loaded, store, commit=commit, progress=progress) as (engine, sinks),
        ):
            engine.grace = ctx.settings.grace.value
            with _graceful_stop(engine) as stopped_by:
                report = run_pass(ctx, loaded, store, engine, sinks, commit, trust)
    return _once_result(args, report, commit, stopped_by)


def _once_result(
    args: argparse.Namespace, report, commit: str | None, stopped_by: list[int]
) -> int:
    """Print the end of `--once` and return its exit code. A pass a signal stopped with work
    left behind exits 128 + the signal (130 SIGINT, 143 SIGTERM), as a shell reports a killed
    command: neither 0 nor 1 ("a run failed") would say that the pass did not finish."""
    signum = stopped_by[0] if stopped_by and report.left_behind else None
    signame = signal.Signals(signum).name if signum else None
    runs = sorted(report.runs.values(), key=lambda r: r.id)
    if wiring.output_format(args) == "json":
        print(
            views.to_json(
                {
                    "runs": [views.run_json(r, held=report.held.get(r.id)) for r in runs],
                    "counts": report.counts(),
                    "commit": commit,
                    "stopped_by": signame,
                    "left_behind": report.left_behind if signum else [],
                }
            )
        )
    else:
        print(views.summary_text(runs, report.counts(), report.held))
        if signum:
            print(views.left_behind_text(signame, [report.runs[i] for i in report.left_behind]))
    return 128 + signum if signum else report.exit_code


@contextmanager
def _graceful_stop(engine: Engine):
    """First SIGINT/SIGTERM: claim nothing more; running runs get the engine's grace period
    (then they are stopped and recorded `unknown`). A second one stops them at once (exit
    130). Yields a list that receives the number of the first signal."""
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

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_status(args: argparse.Namespace) -> int:
    """Queue depth by priority and team, running runs, recent failures, machines."""
    from reconciler.pipeline.metrics import status_numbers

    loaded = wiring.load(args)
    store = wiring.store(args, loaded.inventory, read_only=True)
    try:
        numbers = status_numbers(store, loaded.desired, utc_now())
    finally:
        if store is not None:
            store.close()
    data = numbers.to_json()
    if wiring.output_format(args) == "json":
        print(views.to_json(data))
        return 0
    depth, by_team = data["queue_depth"], data["by_team"]
    print("queue depth by priority: " + ", ".join(f"{p}: {n}" for p, n in depth.items()))
    print(
        "queue depth by team:     "
        + (", ".join(f"{t}: {n}" for t, n in by_team.items()) or "empty")
    )
    print(
        f"running: {data['running']}    failed, blocked or unknown in the last 24h: "
        f"{data['failed_last_24h']}    alerts waiting in the outbox: {data['alert_outbox']}"
    )
    for h in data["held"]:
        print(
            f"held by deny window until {h['until']}: run {h['run']} {h['task']} on "
            f"{h['machine']} (priority {h['priority']})"
        )
    print()
    print(
        views.table(
            ("MACHINE", "TEAM", "TRANSPORT", "UP", "RUNNING", "PENDING"),
            [
                (
                    m["name"],
                    m["team"],
                    m["transport"],
                    "yes" if m["up"] else "NO",
                    m["running"],
                    m["pending"],
                )
                for m in data["machines"]
            ],
        )
    )
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    """`queue list|show|cancel|retry|prune`: read and steer the run history."""
    if args.queue_command == "prune":
        from reconciler.cli.prune_cmd import run

        return run(args)
    store = wiring.store(
        args,
        wiring.inventory_if_valid(args),
        create=False,
        read_only=args.queue_command in ("list", "show"),
    )
    if store is None:
        if args.queue_command == "list":
            print("[]" if wiring.output_format(args) == "json" else "No runs.")
            return 0
        from reconciler.core.errors import InputError

        raise InputError(f"no run {args.run}: there is no state store yet")
    try:
        return _QUEUE[args.queue_command](args, store)
    finally:
        store.close()


def _queue_list(args, store) -> int:
    statuses = None
    if args.status:
        try:
            statuses = [RunStatus(s) for s in args.status]
        except ValueError as exc:
            from reconciler.core.errors import UsageError

            raise UsageError(
                f"--status: {exc}; use one of " + ", ".join(s.value for s in RunStatus)
            ) from None
    runs = store.list_runs(statuses, args.team, args.limit)
    if wiring.output_format(args) == "json":
        print(views.to_json([views.run_json(r) for r in runs]))
    else:
        print(views.runs_text(runs))
    return 0


def _queue_show(args, store) -> int:
    run = store.get_run(args.run)
    if run is None:
        from reconciler.core.errors import InputError

        raise InputError(f"no run {args.run} in the state store", None)
    if wiring.output_format(args) == "json":
        print(views.to_json(views.run_json(run, detail=True)))
    else:
        print(views.run_detail_text(run))
    return 0


def _check_retryable(args, store) -> tuple[int, str]:
    """`queue retry` only for a run the next pass can run again: its task is still in the
    inventory, targets its machine, and the run is of the task's current version. Returns
    the run to flag (the latest of its version there, see `plan.retry_target`) and a note;
    raises `UsageError` (exit 2) saying why when the retry would not happen."""
    from reconciler.core.errors import UsageError
    from reconciler.core.plan import retry_target

    run = store.get_run(args.run)
    if run is None or run.status not in (RunStatus.FAILED, RunStatus.BLOCKED, RunStatus.UNKNOWN):
        return args.run, ""  # the store's own error names the missing or unretryable run
    spec = wiring.load(args).desired.tasks.get(run.task)
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
    return target.id, why


def _queue_change(verb: str):
    def change(args, store) -> int:
        run_id, note = args.run, ""
        if verb == "retry":
            run_id, note = _check_retryable(args, store)
        method = store.cancel_run if verb == "cancel" else store.request_retry
        run = method(run_id, utc_now())
        if note:
            print(note, file=sys.stderr)
        audit_queue_change(store, verb, run, redact=args.redactor)
        if wiring.output_format(args) == "json":
            print(views.to_json(views.run_json(run)))
        else:
            message = {
                "cancel": f"run {run.id} cancelled",
                "retry": f"run {run.id} ({run.task} on {run.machine}) will run again "
                "at the next pass",
            }[verb]
            print(message)
        return 0

    return change


_QUEUE = {
    "list": _queue_list,
    "show": _queue_show,
    "cancel": _queue_change("cancel"),
    "retry": _queue_change("retry"),
}


def cmd_worker(args: argparse.Namespace) -> int:
    """Execute queued runs of a shared (PostgreSQL) queue until SIGTERM/SIGINT; plans nothing."""
    from reconciler.core.errors import UsageError

    # Under git.verify: the store's last reconciled commit, never the working tree.
    ctx = wiring.context(args)
    follow = worker_inventory(ctx, lambda loaded: _FollowInventory(args, loaded))
    loaded = follow.loaded
    store = wiring.store(args, loaded.inventory)
    if not store.shared_queue:
        store.close()
        getattr(follow, "close", lambda: None)()
        raise UsageError(
            "reconcile worker needs a shared PostgreSQL store (--state "
            "postgresql://...); with SQLite, `reconcile --once` runs the queue"
        )
    try:
        with (
            progress_for(args.quiet, live=False, log_format=args.log_format) as progress,
            wired_engine(ctx, loaded, store, commit=None, progress=progress, desired=follow) as (
                engine,
                sinks,
            ),
        ):
            engine.grace = ctx.settings.grace.value
            if hasattr(follow, "on_refused"):  # git.verify turned on: stop claiming
                follow.on_refused, follow.read_last = engine.stop.set, store.last_commit
            sinks.worker_started()
            with _graceful_stop(engine):
                engine.work(follow)
        if getattr(follow, "refused", None):
            from reconciler.core.errors import SourceError

            raise SourceError(follow.refused)
    finally:
        store.close()
        getattr(follow, "close", lambda: None)()
    return 0


class _FollowInventory:
    """The worker's desired state: the inventory on disk, re-read every few seconds. A broken
    inventory keeps the last good one (and says so once), like a daemon riding out a typo."""

    INTERVAL = 5.0

    def __init__(self, args, loaded):
        self.args, self.loaded, self.read_at = args, loaded, time.monotonic()

    def __call__(self):
        from reconciler.core.errors import InputError

        if time.monotonic() - self.read_at >= self.INTERVAL:
            self.read_at = time.monotonic()
            try:
                self.loaded = wiring.load(self.args)
            except InputError as exc:
                log.error("inventory is invalid; keeping the last good one: %s", exc)
        return self.loaded.desired


def cmd_vault(args: argparse.Namespace) -> int:
    from reconciler.cli.vault_cmd import cmd_vault as run

    return run(args)


def cmd_machines(args: argparse.Namespace) -> int:
    """`machines` (reachability, last seen, load) and `machines keyscan HOST[:PORT]`."""
    from reconciler.cli.machines_cmd import run

    loaded = None if args.action == "keyscan" else wiring.load(args)
    secrets = wiring.secrets(args, loaded.inventory) if loaded is not None else None
    transports = wiring.transports(secrets)
    try:
        return run(args, loaded.inventory if loaded is not None else None, transports)
    finally:
        for transport in transports.values():
            transport.close()


def cmd_keys(args: argparse.Namespace) -> int:
    from reconciler.cli.keys_cmd import run

    return run(args)


def cmd_audit(args: argparse.Namespace) -> int:
    from reconciler.cli.audit_cmd import run

    return run(args)


def cmd_codeowners(args: argparse.Namespace) -> int:
    """A CODEOWNERS file from the teams' roles (the same rules `git.verify` enforces)."""
    from pathlib import Path

    from reconciler.core.trust import codeowners

    loaded = wiring.load(args)
    root = Path(loaded.inventory.root)
    try:
        prefix = "/" + str(root.relative_to(Path.cwd().resolve()))
    except ValueError:
        prefix = "/inventory"
    text = codeowners(loaded.inventory, prefix if prefix != "/." else "")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_accept_history(args: argparse.Namespace) -> int:
    from reconciler.cli.history_cmd import run

    return run(args)


def cmd_diff(args: argparse.Namespace) -> int:
    from reconciler.cli.diff_cmd import run

    return run(args)


def cmd_init(args: argparse.Namespace) -> int:
    from reconciler.cli.init_cmd import run

    return run(args)


COMMANDS = {
    "keys": cmd_keys,
    "machines": cmd_machines,
    "audit": cmd_audit,
    "codeowners": cmd_codeowners,
    "diff": cmd_diff,
    "init": cmd_init,
    "validate": cmd_validate,
    "plan": cmd_plan,
    "status": cmd_status,
    "queue": cmd_queue,
    "vault": cmd_vault,
    "worker": cmd_worker,
    "accept-history": cmd_accept_history,
}
