"""`reconcile run TASK`: run a task's current version now, with declared parameters (issue 16 §3).

The version is the one passes run: under `git.verify`, the task as the store's last reconciled
commit defines it (never the working tree, which anyone may edit); otherwise the task in the
inventory on disk, as `--once` and `reconcile worker` read it. The runs are queued with trigger
`manual`, who asked (`actor`) and why (`reason`), in one transaction with their audit entries
(`run.manual`), outside the planner's bookkeeping: what a pass decides for the task is the
same as without them.

Who may: under `git.verify` a member of the task's team holding operator or admin in the last
reconciled commit, proven by signing the request with their SSH key (`--key`, `ssh-keygen -Y
sign`, namespace `reconciler-run`); otherwise whoever can write the store. A refused request
changes nothing and exits 2.

Without `--wait` the runs wait for the next pass, the daemon or a worker (any may take them at
once); with `--wait` this process runs them itself unless a worker takes one first, streaming their
output lines on stderr as they come, then prints each run's status: exit 0 if all succeeded, 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.adapters.audit.writer import AuditWriter, default_actor, run_detail
from reconciler.adapters.store.base import ManualRun
from reconciler.adapters.store.factory import open_store
from reconciler.cli import views
from reconciler.cli.passes import run_inventory
from reconciler.core.errors import InputError, UsageError
from reconciler.core.model import Role, TaskSpec
from reconciler.core.params import NAME, checked_values
from reconciler.core.state import Run
from reconciler.pipeline.engine import process_owner, utc_now

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

NAMESPACE = "reconciler-run"  # no approval, commit or file signature passes for a request
MAY_RUN = (Role.OPERATOR, Role.ADMIN)


class Refused(InputError):
    """A request that is not accepted: exit 2, with why; nothing was queued."""


@dataclass(frozen=True)
class Request:
    """What was asked: the task, the machines (each with the version that runs there), the
    parameters (defaults filled in), the priority and why."""

    task: TaskSpec
    versions: dict[str, str]
    params: dict[str, str]
    priority: int
    reason: str

    def text(self, commit: str | None) -> bytes:
        """What a member signs under git.verify: every part of the request, one a line."""
        lines = [f"reconciler run v1\ntask {self.task.id}\ncommit {commit or '-'}\n"]
        lines += [f"machine {m} version {v}\n" for m, v in sorted(self.versions.items())]
        lines += [f"param {json.dumps([k, v])}\n" for k, v in sorted(self.params.items())]
        lines.append(f"priority {self.priority}\nreason {json.dumps(self.reason)}\n")
        return "".join(lines).encode()


def run(args: argparse.Namespace, ctx: Context) -> views.Output:
    given = _given_params(args.param or [])
    reason = _reason(args.reason)
    with run_inventory(ctx) as source:
        request = _request(args, source.loaded.desired, given, reason, source.last)
        actor, signed = _who(args, source, request)
        store = open_store(source.url)
        try:
            runs = _enqueue(ctx, source, store, request, actor, signed, args.wait)
            if not args.wait:
                return _queued(runs)
            json_lines = "json" in (getattr(args, "format", None), args.log_format)
            return _waited(ctx, source, store, runs, json_lines)
        finally:
            store.close()


def _given_params(pairs: Sequence[str]) -> dict[str, str]:
    """`--param NAME=VALUE`, each name once; a malformed one is exit 2."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not NAME.fullmatch(name):
            raise UsageError(
                f"--param {_typed(pair)}: write NAME=VALUE, NAME an environment "
                "variable name (letters, digits and '_', not starting with a digit)"
            )
        if name in found:
            raise UsageError(f"--param {name} is given twice: give each parameter once")
        found[name] = value
    return found


def _typed(pair: str) -> str:
    """A malformed `--param` quoted as typed (escaped by repr; a long one cut, marked)."""
    return repr(pair) if len(pair) <= 60 else f"{pair[:60]!r}..."


def _reason(text: str) -> str:
    reason = views.utf8_argument("--reason", (text or "").strip())
    if not reason:
        raise UsageError("--reason must say why the task runs now (it is recorded and audited)")
    if len(reason) > 1000:
        raise UsageError("--reason is at most 1000 characters")
    bad = next((char for char in reason if views.is_control(char)), None)
    if bad is not None:
        raise UsageError(
            f"--reason holds the control character {bad!r}: write it on one line, without "
            "escape codes (it is printed in `queue list` and `queue show`)"
        )
    return reason


def _request(
    args: argparse.Namespace, desired, given: dict[str, str], reason: str, last: str | None
) -> Request:
    """The request as the inventory passes run defines it; refused (exit 2, why) when the
    task, a machine or a parameter is not one it declares."""
    where = f"in {last[:12]}, the last reconciled commit" if last else "in the inventory"
    spec = desired.tasks.get(args.task)
    if spec is None:
        raise Refused(f"refusing to run: no task '{args.task}' {where}")
    machines = list(dict.fromkeys(args.machine or spec.targets))
    if not machines:
        raise Refused(f"refusing to run: task '{spec.id}' has no target machine {where}")
    for machine in machines:
        if machine not in spec.versions:
            raise Refused(
                f"refusing to run: '{machine}' is no target of task '{spec.id}' "
                f"(its targets: {', '.join(spec.targets) or 'none'})"
            )
    values, problems = checked_values(spec.params, given)
    if problems:
        raise Refused("refusing to run " + spec.id + ": " + "; ".join(problems))
    priority = spec.priority if args.priority is None else args.priority
    return Request(spec, {m: spec.version_for(m) for m in machines}, values, priority, reason)


def _who(args: argparse.Namespace, source, request: Request) -> tuple[str, dict | None]:
    """Who asks (the audit's actor) and, for a signed request, what proves it. Under
    git.verify a signature by an operator or admin of the task's team in the last reconciled
    commit is required; without verify a key given is checked the same way against the
    inventory that defines the task, and no key means whoever runs this command."""
    if args.key is None:
        if source.verified:
            raise Refused(
                f"refusing to run {request.task.id}: git.verify is on, so the request must be "
                "signed by an operator or admin of team "
                f"{request.task.team}: give your SSH key with --key FILE"
            )
        return default_actor(), None
    from reconciler.adapters.source import approvals as signing
    from reconciler.core.trust import key_fingerprint, memberships, signers

    key = Path(args.key).expanduser()
    fingerprint = key_fingerprint(signing.public_key(key))
    text = request.text(source.last)
    signature = signing.sign(key, text, namespace=NAMESPACE)
    trusted = source.loaded.inventory
    at = f"{source.last[:12]}, the last reconciled commit" if source.last else "the inventory"
    signer = signing.verify_signature(tuple(signers(trusted)), text, signature, NAMESPACE)
    if signer is None:
        raise Refused(
            f"refusing to run {request.task.id}: the key {fingerprint} is no team member's "
            f"ssh: key in {at}"
        )
    role = memberships(trusted).get(signer, {}).get(request.task.team)
    if role not in MAY_RUN:
        held = (
            f"is {role.value} of team {request.task.team}"
            if role
            else f"is no member of team {request.task.team}"
        )
        raise Refused(
            f"refusing to run {request.task.id}: {signer} {held} in {at}; running a task on "
            "demand takes an operator or admin of its team"
        )
    name = next(
        (
            m.name
            for m in trusted.teams[request.task.team].members
            if m.ssh and key_fingerprint(m.ssh) == signer
        ),
        signer,
    )
    proof = {"signer": signer, "role": role.value, "signature": signature}
    return f"{name} ({signer})", proof


def _enqueue(
    ctx: Context, source, store, request: Request, actor: str, signed, wait: bool
) -> list[Run]:
    """Queue the runs with their audit entries in one transaction. With `wait` this process
    is their planner (no pass takes them while it lives); otherwise any pass, the daemon or
    a worker may take them at once."""
    from reconciler.cli import wiring

    # Parameters are not secrets, but one that equals a vault secret is masked wherever it is
    # shown or audited, as everything else is.
    wiring.vault_secrets(ctx, source.loaded.inventory).learn_every_vault(
        source.loaded.inventory.teams
    )
    writer = AuditWriter(store, actor=actor, clock=utc_now, redact=ctx.redactor)
    planner = process_owner() if wait else None
    if planner is not None:
        store.beat_drain(planner)  # alive before its runs exist: no pass adopts them

    def audit(run: Run):
        detail = run_detail(run, "priority", "reason", "trigger")
        return [
            writer.record(
                "run.manual", **detail, params=dict(run.params), commit=source.last, **signed or {}
            )
        ]

    runs = store.enqueue_manual(
        [
            ManualRun(
                request.task.id,
                machine,
                version,
                request.priority,
                request.reason,
                actor,
                tuple(sorted(request.params.items())),
                source.last,
                planner,
            )
            for machine, version in request.versions.items()
        ],
        utc_now(),
        audit,
    )
    store.seal_audit(wait=True)  # the entries this process queued are in the chain when it ends
    return runs


def _queued(runs: list[Run]) -> views.Output:
    ids = [run.id for run in runs]

    def text() -> str:
        lines = [f"queued run {r.id}: {r.task} on {r.machine} (manual)" for r in runs]
        return "\n".join(lines + ["the next pass, the daemon or a worker runs them"])

    return views.Output(ids, text)


def _waited(ctx: Context, source, store, runs: list[Run], json_lines: bool) -> views.Output:
    """Run `runs` here (or wait for the worker that took one), their output lines streamed on
    stderr as they come (`[task@machine] line`, as `--once --stream`), then each run's status
    line; exit 0 when every one succeeded."""
    from reconciler.cli.commands import graceful_stop
    from reconciler.cli.passes import wired_engine
    from reconciler.cli.progress import progress_for
    from reconciler.cli.stream_view import stream_printer
    from reconciler.pipeline.approvals import with_approvals

    printer = stream_printer(json_lines)
    shown: set[int] = set()

    def stream(run: Run, text: str) -> None:  # as `--once --stream`: live, on stderr
        shown.add(run.id)
        printer(run, text)

    with (
        progress_for(True, live=False) as progress,
        wired_engine(ctx, source.loaded, store, commit=None, progress=progress, stream=stream) as (
            engine,
            sinks,
        ),
    ):
        sinks.worker_started()
        # SIGTERM, SIGINT or SIGHUP end it as they end `--once`: nothing more starts, a
        # running run gets the grace, then is stopped and recorded `unknown` (not left
        # `running` until its lease runs out).
        engine.grace = ctx.settings.grace.value
        with graceful_stop(engine) as stopped_by:
            report = engine.run_now(with_approvals(source.loaded.desired, store), runs)
        engine.journal.check()  # an audit entry that was not written is exit 3
    ended = store.get_runs([run.id for run in runs])
    final = [ended.get(run.id, report.runs.get(run.id, run)) for run in runs]
    for run in final:  # a run a worker elsewhere executed: its output, now that it ended
        if run.id not in shown and run.output:
            printer(run, run.output)
    held = {i: h.describe() for i, h in report.held.items()}
    ok = all(run.status.is_success for run in final)
    data = {
        "ok": ok,
        "runs": [
            views.run_json(run, detail=True)
            | {"params": _shown(ctx, run), "held": held.get(run.id)}
            for run in final
        ],
        "errors": [
            {"run": run.id, "message": _status_line(run, held)}
            for run in final
            if not run.status.is_success
        ],
    }
    exit_code = 0 if ok else 1
    if stopped_by and any(run.status.is_active or run.id in report.left_behind for run in final):
        exit_code = 128 + stopped_by[0]  # stopped before its runs ended, as `--once`
        data["stopped_by"] = signal.Signals(stopped_by[0]).name
    return views.Output(data, lambda: _waited_text(final, held), exit_code=exit_code)


def _shown(ctx: Context, run: Run) -> dict[str, str]:
    return {k: ctx.redactor(v) or "" for k, v in run.params}


def _waited_text(runs: list[Run], held: dict[int, str]) -> str:
    return "\n".join(_status_line(run, held) for run in runs)


def _status_line(run: Run, held: dict[int, str]) -> str:
    """`run 7 ops/deploy on box: failed (exit 3): exit code 3`: how a run ended, or why a
    pending one still waits."""
    why = (held.get(run.id) or "still queued") if run.status.is_active else run.error
    return (
        f"run {run.id} {run.task} on {run.machine}: {run.status.value}"
        + (f" (exit {run.exit_code})" if run.exit_code is not None else "")
        + (f": {why}" if why else "")
    )


__all__ = ["run"]
