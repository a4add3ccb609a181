"""Where the engine's events go: the audit log, alerts and metrics (and structured log lines).

`build_sinks(...)` returns a `Sinks`, the engine's `on_event` (chain it with the progress
view). For each event, in the engine's main thread:

1. audit: the entry is appended first. For `started` (the run is claimed, its command not yet
   sent) a failed write raises `StoreError` out of `on_event`, so the engine dispatches
   nothing and the pass fails with exit 3 (DESIGN §5). Any other failed audit write is logged
   and counted, every later `started` of the pass is refused, and `pass_finished` raises
   `StoreError`: the pass exits 3 having dispatched nothing after the gap.
2. metrics: counters and durations (never raises).
3. alerts: `alerts.decide` picks the alert, the store remembers it under its dedupe key
   together with its outbox rows (`record_alert`: a restart or another reconciler sending
   the same alert finds the key and sends nothing), and the courier delivers it from its
   thread (never raises into the pass).

Around the pass: `pass_started(commit)` audits the start, binds the metrics to the store and
retries the outbox; `pass_finished(report)` audits the plan and the end; `pass_failed(error)`
records a pass that did not complete; `close(wait_seconds)` waits for deliveries (at most
`wait_seconds`) and must be called before the store is closed. A worker calls
`worker_started()` instead of the pass methods (its sinks retry the outbox every minute or so
as runs start). `machine_unreachable` and
`machine_reachable` are for the transport. `audit_resolver` wraps the secret resolver so each
secret a run reads is audited (team and key NAME).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from reconciler.adapters.audit.writer import (
    AuditWriter,
    audit_keyscan,
    audit_queue_change,
    audit_validation_failed,
    audit_vault_read,
    audit_vault_write,
    default_actor,
    run_detail,
    utc_now,
)
from reconciler.adapters.notify.base import DEFAULT_TIMEOUT, Notifier
from reconciler.adapters.notify.courier import Courier
from reconciler.core import alerts
from reconciler.core.errors import NotifyError, ReconcilerError, StoreError, VaultError
from reconciler.core.model import DesiredState, FailureAction, Inventory, VaultRef
from reconciler.core.redact import Redactor, Secret
from reconciler.pipeline.metrics import Metrics, default_metrics

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Resolver = Callable[[str, VaultRef], "str | Secret"]
PLAN_KINDS = ("enqueued", "cancelled")
# A worker has no passes: it retries the outbox at a `started` event this often instead.
OUTBOX_RETRY_SECONDS = 60.0
QUIET_KINDS = ("held",)  # waits, not operations: neither audited nor alerted
# Events of a run whose command ran on its machine; with an exit code, the machine answered.
ANSWERED_KINDS = ("finished", "retrying", "recovered")
# How long the machines marked unreachable are remembered before the store is asked again
# (another process may mark one meanwhile); a run's end asks the store no more often.
DOWN_REFRESH_SECONDS = 5.0


def engine_owner() -> str:
    """The owner string the engine stamps on the runs it claims (`host:pid:token`)."""
    from reconciler.pipeline.engine import process_owner

    return process_owner()


class Sinks:
    """Fans engine events out to audit, metrics and alerts; see the module docstring."""

    def __init__(
        self,
        store,
        desired: DesiredState | Callable[[], DesiredState],
        redactor: Redactor | None,
        resolver: Resolver | None,
        *,
        commit: str | None = None,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        clock: Clock = utc_now,
        actor: str | None = None,
        owner: str | None = None,
        delivery_timeout: float = DEFAULT_TIMEOUT,
    ):
        self.store = store
        self._desired = desired if callable(desired) else (lambda: desired)
        self.redact: Callable[[str], str] = redactor or (lambda text: text)
        self.resolver = resolver
        self.commit = commit
        self.metrics = metrics if metrics is not None else default_metrics()
        self.clock = clock
        self.owner = owner or engine_owner()
        self.audit = AuditWriter(
            store, actor=actor or default_actor(), clock=clock, redact=self.redact
        )
        if notifier is None:
            from reconciler.adapters.notify.apprise import AppriseNotifier

            notifier = AppriseNotifier()
        self.courier = Courier(
            store,
            notifier,
            self._target_url,
            owner=self.owner,
            redact=self.redact,
            timeout=delivery_timeout,
            clock=clock,
            on_failure=self._delivery_failed,
        )
        self._pass_open = False
        self._plan: dict[str, Any] | None = None
        self._audit_error: StoreError | None = None
        self._outbox_tried_at: float | None = None
        self._down: set[str] = set()  # machines marked unreachable, as last read
        self._down_read_at: float | None = None

    @property
    def desired(self) -> DesiredState:
        return self._desired()

    @property
    def journal(self) -> Journal:
        """For the engine: the entries of its batched run changes (see `Journal`)."""
        return Journal(self)

    # --- the pass ---

    def pass_started(self, commit: str | None = None) -> None:
        """Audit the start of a pass (raises `StoreError`: then start nothing), bind the
        metrics to the store, and send what waits in the outbox."""
        if commit is not None:
            self.commit = commit
        self._audit_error = None
        self.audit.append("pass.start", commit=self.commit)
        self._pass_open = True
        self._plan = {"enqueued": 0, "cancelled": 0, "reasons": Counter(), "cancelled_runs": []}
        self.metrics.bind(self.store, self.desired)
        self.retry_outbox()

    def worker_started(self) -> None:
        """`reconcile worker`: bind the metrics to the store and send what waits in the
        outbox (a worker has no pass; it retries the outbox now and then as it runs)."""
        self.metrics.bind(self.store, self.desired)
        self.retry_outbox()

    def retry_outbox(self) -> int:
        """Hand the outbox's waiting deliveries to the courier; returns how many."""
        self._outbox_tried_at = time.monotonic()
        return self.courier.retry_outbox()

    def pass_finished(self, report) -> None:
        """Audit the plan (if no run event did yet) and the end of the pass with its counts
        and exit code. Raises `StoreError` if any audit entry of the pass was not written."""
        try:
            self._flush_plan()
            self.audit.append(
                "pass.end", commit=self.commit, counts=report.counts(), exit_code=report.exit_code
            )
        except StoreError as exc:
            self._audit_failed(exc)
        self._pass_open = False
        self.metrics.pass_ended(None if self._audit_error else report.exit_code)
        self.metrics.refresh()
        if self._audit_error is not None:
            raise StoreError(
                f"the audit log could not be written during this pass: {self._audit_error}"
            )

    def pass_failed(self, error: BaseException) -> None:
        """A pass that did not complete (lock, store, source error): recorded if possible."""
        self._pass_open = False
        self.metrics.pass_ended(None)
        try:
            self._flush_plan()
            self.audit.append(
                "pass.end", commit=self.commit, error=str(error) or type(error).__name__
            )
        except StoreError as exc:
            log.error("cannot write the end of the pass to the audit log: %s", exc)

    def close(self, wait_seconds: float = 10.0) -> bool:
        """Wait for pending deliveries at most `wait_seconds` (what is left stays in the
        outbox), and stop reading the store for metrics. Call before closing the store.
        True when every delivery was attempted."""
        drained = self.courier.close(wait_seconds)
        self.metrics.unbind(self.store)
        try:  # a worker's last batches: chain what it queued (a pass's end already did)
            self.store.seal_audit(wait=True)
        except StoreError as exc:
            log.error("cannot seal the audit entries written by this process: %s", exc)
        return drained

    # --- events ---

    def __call__(self, event) -> None:
        """Handle one engine event (see the module docstring for what raises)."""
        if event.kind in QUIET_KINDS:
            return
        self._log(event)
        self._audit_event(event)
        if self._ended_here(event):
            self.metrics.run_finished(event.run)
        self._alert_event(event)
        self._note_answer(event)

    def _audit_event(self, event) -> None:
        kind, run = event.kind, event.run
        if kind in PLAN_KINDS:
            self._note_plan(kind, run, event.detail)
            return
        if event.audited:  # written with the change itself (the journal)
            if kind == "started":
                self._retry_outbox_now_and_then()
            return
        if kind == "started":
            if self._audit_error is not None:
                raise StoreError(
                    f"not dispatching run {run.id}: the audit log could not be "
                    f"written earlier in this pass ({self._audit_error})"
                )
            records = self._plan_records() + [
                self.audit.record("run.claimed", **run_detail(run, "attempt", "epoch", "owner")),
                self.audit.record("run.dispatched", **run_detail(run, "attempt")),
            ]
            try:
                self.audit.write(records)
            except StoreError as exc:
                self._audit_failed(exc)
                raise
            self._plan = None
            self._retry_outbox_now_and_then()
            return
        try:
            if kind != "recovered":  # recovery comes before the plan; the rest after it
                self._flush_plan()
            self.audit.write([self._run_record(event)])
        except StoreError as exc:
            self._audit_failed(exc)

    def _retry_outbox_now_and_then(self) -> None:
        """A worker has no pass: it retries the outbox as runs start, once a minute or so."""
        if not self._pass_open and (
            self._outbox_tried_at is None
            or time.monotonic() - self._outbox_tried_at >= OUTBOX_RETRY_SECONDS
        ):
            self.retry_outbox()

    def _run_record(self, event):
        run = event.run
        if event.kind == "recovered":
            return self.audit.record("run.recovered", **run_detail(run, "status"))
        if event.kind == "retrying":
            return self.audit.record(
                "run.retrying", **run_detail(run, "attempt", "not_before", "exit_code", "error")
            )
        if event.kind == "blocked":
            return self.audit.record("run.blocked", **run_detail(run), reason=event.detail)
        return self.audit.record(
            f"run.{event.kind}",
            **run_detail(run, "status", "attempt", "exit_code", "error", "owner"),
        )

    def _note_plan(self, kind: str, run, detail: str) -> None:
        if self._plan is None:  # a worker: no pass, no plan
            return
        if kind == "enqueued":
            self._plan["enqueued"] += 1
            self._plan["reasons"][detail or run.reason] += 1
        else:
            self._plan["cancelled"] += 1
            self._plan["cancelled_runs"].append(run.id)

    def _plan_records(self) -> list:
        if self._plan is None or not self._pass_open:
            return []
        plan = self._plan
        return [
            self.audit.record(
                "plan.recorded",
                commit=self.commit,
                enqueued=plan["enqueued"],
                cancelled=plan["cancelled"],
                reasons=dict(sorted(plan["reasons"].items())),
                cancelled_runs=plan["cancelled_runs"],
            )
        ]

    def _flush_plan(self) -> None:
        """Write `plan.recorded` once, before the first entry of the drain."""
        records = self._plan_records()
        if records:
            self.audit.write(records)
        self._plan = None

    def _audit_failed(self, exc: StoreError) -> None:
        if self._audit_error is None:
            self._audit_error = exc
        self.metrics.audit_failures.inc()
        log.error("cannot write the audit log: %s; nothing more is dispatched in this pass", exc)

    def _ended_here(self, event) -> bool:
        """Whether this process gave the run its final status: it finished or blocked it, or
        recovered it as unknown. A pass on a shared queue also reports runs that workers
        ended: the worker counts those."""
        run = event.run
        if event.kind == "recovered":
            return run.status.is_final
        mine = run.owner is None or run.owner == self.owner
        return event.kind in ("finished", "blocked") and mine

    def _log(self, event) -> None:
        run = event.run
        log.info(
            "%s %s on %s (run %s, attempt %s)%s",
            event.kind,
            run.task,
            run.machine,
            run.id,
            run.attempt,
            f": {event.detail}" if event.detail else "",
            extra={
                "task": run.task,
                "machine": run.machine,
                "run": run.id,
                "attempt": run.attempt,
                "commit": run.commit or self.commit,
                "status": run.status.value,
            },
        )

    # --- alerts ---

    def _alert_event(self, event) -> None:
        """Decide, remember and hand over an alert; any failure is logged, never raised."""
        run = event.run
        if event.kind not in ("finished", "blocked", "recovered"):
            return
        try:
            desired = self.desired
            team = desired.teams.get(run.team)
            if team is None or not team.alerts:
                return
            spec = desired.tasks.get(run.task)
            action = spec.retry.failure_action if spec is not None else FailureAction.ALERT
            previous = (
                self.store.previous_outcome(run.task, run.machine, run.id)
                if alerts.wants_previous(event.kind, run)
                else None
            )
            alert = alerts.decide(
                event.kind,
                run,
                failure_action=action,
                previous=previous,
                commit=self.commit,
                redact=self.redact,
            )
            if alert is not None:
                self._raise_alert(alert, team)
        except ReconcilerError as exc:
            log.error(
                "alert for run %s of %s on %s not recorded: %s",
                run.id,
                run.task,
                run.machine,
                self.redact(str(exc)),
            )

    def _raise_alert(self, alert: alerts.Alert, team) -> bool:
        """Remember `alert` (with no target wanting it, the memory alone: it still ends the
        opposite transition) and deliver it to the targets that want it."""
        rows = alerts.deliveries(alert, alerts.targets_for(team, alert.event))
        if not self.store.record_alert(alert, rows, self.owner, self.clock()):
            return False
        self.metrics.alerts.labels(alert.event).inc()
        log.info("alert %s: %s", alert.id, alert.title)
        self.courier.submit(rows)
        return True

    def machine_unreachable(self, machine: str, error: str = "") -> None:
        """The transport could not reach `machine`: alert once (until `machine_reachable`),
        and `reconciler_machine_up` is 0 meanwhile. Thread-safe; never raises."""
        try:
            desired = self.desired
            found = desired.machines.get(machine)
            team_name = found.team if found is not None else ""
            alert = alerts.unreachable(machine, team_name, error, redact=self.redact)
            self._down.add(machine)
            if self._raise_alert(alert, desired.teams.get(team_name)):
                self.audit.append("alert.unreachable", machine=machine, error=error or None)
        except ReconcilerError as exc:
            log.error("unreachable alert for %s not recorded: %s", machine, self.redact(str(exc)))

    def commit_refused(self, commit: str | None, error: str) -> None:
        """A pass refused `commit`: alert every team once per commit. Never raises."""
        if not commit:
            return
        try:
            desired = self.desired
            for team in sorted(desired.teams):
                self._raise_alert(
                    alerts.commit_refused(commit, team, error, redact=self.redact),
                    desired.teams[team],
                )
            self.audit.append("commit.refused", commit=commit, error=error)
        except ReconcilerError as exc:
            log.error("refused-commit alert not recorded: %s", self.redact(str(exc)))

    def machine_reachable(self, machine: str) -> None:
        """`machine` answered again: the next unreachable episode alerts anew."""
        try:
            self.store.forget_alerts("", machine, ("unreachable",))
            self._down.discard(machine)
        except ReconcilerError as exc:
            log.error("cannot clear the unreachable state of %s: %s", machine, exc)

    def _note_answer(self, event) -> None:
        """A run with an exit code ran on its machine (now, or adopted from what the machine
        kept): the machine answers, so its unreachable mark is cleared and its next outage
        alerts once more. No note is sent: SPEC's alert events have no "reachable"."""
        run = event.run
        if event.kind not in ANSWERED_KINDS or run.exit_code is None:
            return
        try:
            if run.machine in self._marked_down():
                log.info("machine %s answers again", run.machine, extra={"machine": run.machine})
                self.machine_reachable(run.machine)
        except ReconcilerError as exc:
            log.error("cannot read the unreachable machines: %s", self.redact(str(exc)))

    def _marked_down(self) -> set[str]:
        now = time.monotonic()
        if self._down_read_at is None or now - self._down_read_at >= DOWN_REFRESH_SECONDS:
            self._down = set(self.store.unreachable_machines())
            self._down_read_at = now
        return self._down

    def _delivery_failed(self, delivery: alerts.Delivery, error: str) -> None:
        self.metrics.delivery_failures.labels(delivery.team).inc()

    def _target_url(self, team: str, target: str) -> str:
        """The URL of an outbox target: as written, or read from the team's vault (audited,
        by NAME; a read that cannot be audited is not made)."""
        if target.startswith("url:"):
            return target[len("url:") :]
        if not target.startswith("vault:"):
            raise NotifyError(f"unknown alert target form {target!r}")
        name = target[len("vault:") :]
        if self.resolver is None:
            raise VaultError(
                f"cannot read secret '{name}' of team '{team}' for an alert: no "
                "identity (set --identity, RECONCILE_IDENTITY_FILE or "
                "RECONCILE_IDENTITY)"
            )
        try:
            self.audit.append("vault.read", team=team, key=name, purpose="alert")
        except StoreError as exc:
            self.metrics.audit_failures.inc()
            raise NotifyError(f"the vault read of '{name}' could not be audited: {exc}") from exc
        value = self.resolver(team, VaultRef(name))
        return value.reveal() if isinstance(value, Secret) else str(value)

    # --- secrets read by runs ---

    def audit_resolver(self, resolver: Resolver) -> Resolver:
        """`resolver`, auditing each secret a run reads (team, key NAME; never the value)
        before reading it. A read that cannot be audited is refused with `VaultError` (the
        run fails; its command is not executed)."""

        def resolve(team: str, ref: VaultRef):
            try:
                self.audit.append("vault.read", team=team, key=ref.name, purpose="run")
            except StoreError as exc:
                self._audit_failed(exc)
                raise VaultError(
                    f"secret '{ref.name}' of team '{team}' not read: the read "
                    f"could not be audited ({exc})"
                ) from exc
            return resolver(team, ref)

        return resolve


class Journal:
    """The audit entries of the run changes the engine writes in batches (group commit): the
    store writes them in the change's own transaction, so a run is never claimed, dispatched
    or ended without its entry, and no entry is written for a change that did not happen.
    The entries are those `Sinks` would write for the same events."""

    def __init__(self, sinks: Sinks):
        self.sinks = sinks

    def check(self) -> None:
        error = self.sinks._audit_error
        if error is not None:
            raise StoreError(
                f"not dispatching: the audit log could not be written earlier in this pass "
                f"({error})"
            )

    def leading(self) -> list:
        return self.sinks._plan_records()

    def flushed(self) -> None:
        self.sinks._plan = None

    def claimed(self, run) -> list:
        return [
            self.sinks.audit.record("run.claimed", **run_detail(run, "attempt", "epoch", "owner"))
        ]

    def dispatched(self, run) -> list:
        return [self.sinks.audit.record("run.dispatched", **run_detail(run, "attempt"))]

    def ended(self, run) -> list:
        audit = self.sinks.audit
        if run.status.is_active:  # back to pending for another attempt
            return [
                audit.record(
                    "run.retrying",
                    **run_detail(run, "attempt", "not_before", "exit_code", "error"),
                )
            ]
        return [
            audit.record(
                "run.finished",
                **run_detail(run, "status", "attempt", "exit_code", "error", "owner"),
            )
        ]

    def failed(self, error: StoreError) -> None:
        self.sinks._audit_failed(error)


def build_sinks(
    store,
    inventory: Inventory | None,
    desired,
    redactor: Redactor | None,
    resolver: Resolver | None,
    *,
    commit: str | None,
    metrics: Metrics | None = None,
    notifier: Notifier | None = None,
    clock: Clock = utc_now,
    actor: str | None = None,
    owner: str | None = None,
    delivery_timeout: float = DEFAULT_TIMEOUT,
) -> Sinks:
    """The sinks of one pass (or worker) on `store`. `desired` is a `DesiredState` or a
    callable returning the current one (a worker following its inventory); `inventory` is
    accepted for symmetry with the other wiring and not needed beyond `desired`. `owner`
    must equal the engine's (`host:pid`, the default) so runs this process ended are told
    from runs other workers ended."""
    del inventory  # the teams and their alert targets come with `desired`
    return Sinks(
        store,
        desired,
        redactor,
        resolver,
        commit=commit,
        metrics=metrics,
        notifier=notifier,
        clock=clock,
        actor=actor,
        owner=owner,
        delivery_timeout=delivery_timeout,
    )


__all__ = [
    "Journal",
    "Sinks",
    "audit_keyscan",
    "audit_queue_change",
    "audit_validation_failed",
    "audit_vault_read",
    "audit_vault_write",
    "build_sinks",
    "engine_owner",
]
