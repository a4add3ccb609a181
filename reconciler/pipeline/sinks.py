"""Where the engine's events go: one composition of the consumers of the event stream.

`build_sinks(...)` returns a `Sinks`, the engine's `on_event` (chain it with the progress
view). Each consumer has one job (see `pipeline.consumers`): the audit log
(`AuditConsumer`), metrics (`MetricsConsumer`), alerts (`AlertConsumer`, with the courier)
and the structured log line (`LogConsumer`). `Sinks` fans each event out to them in this
fixed order, in the engine's main thread:

1. audit: the entry is appended first. For `started` (the run is claimed, its command not yet
   sent) a failed write raises `StoreError` out of `on_event`, so the engine dispatches
   nothing (the other consumers do not see the event) and the pass fails with exit 3
   (DESIGN §5). Any other failed audit write is logged and counted, every later `started` of
   the pass is refused, and `pass_finished` raises `StoreError`: the pass exits 3 having
   dispatched nothing after the gap. With the engine's `journal` (group commit) the entries
   of claims, dispatches and ends are written in the change's own transaction instead
   (`Event.audited`), under the same failure state.
2. metrics: counters and durations (never raises).
3. alerts: `alerts.decide` picks the alert, the store remembers it under its dedupe key
   together with its outbox rows (`record_alert`: a restart or another reconciler sending
   the same alert finds the key and sends nothing), and the courier delivers it from its
   thread (never raises into the pass).
4. logs: one structured line per event (not for `held`, a wait).

An `unreachable` event is the alert consumer's alone (one alert per machine, audited as
`alert.unreachable` when it is raised), as the commands' `on_event` routes it to
`machine_unreachable` by hand.

Around the pass: `pass_started(commit)` audits the start, binds the metrics to the store and
retries the outbox; `pass_finished(report)` audits the plan and the end; `pass_failed(error)`
records a pass that did not complete; `close(wait_seconds)` waits for deliveries (at most
`wait_seconds`) and must be called before the store is closed. A worker calls
`worker_started()` instead of the pass methods (its sinks retry the outbox every minute or so
as runs start). `machine_unreachable` and `machine_reachable` are for the transport (a
machine down is remembered for a few seconds, so a run's end asks the store no more often).
`audit_resolver` wraps the secret resolver so each secret a run reads is audited (team and
key NAME).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from reconciler.adapters.audit.writer import (
    AuditWriter,
    audit_keyscan,
    audit_queue_change,
    audit_validation_failed,
    audit_vault_read,
    audit_vault_write,
    default_actor,
    utc_now,
)
from reconciler.adapters.notify.base import DEFAULT_TIMEOUT, Notifier
from reconciler.adapters.notify.courier import Courier
from reconciler.core.model import DesiredState, Inventory
from reconciler.core.redact import Redactor
from reconciler.pipeline.consumers.alerts import AlertConsumer, AlertTargets
from reconciler.pipeline.consumers.audit import AuditConsumer, Journal, Resolver
from reconciler.pipeline.consumers.logs import LogConsumer
from reconciler.pipeline.consumers.metrics import MetricsConsumer
from reconciler.pipeline.events import Event
from reconciler.pipeline.metrics import Metrics, default_metrics

Clock = Callable[[], datetime]


def engine_owner() -> str:
    """The owner string the engine stamps on the runs it claims (`host:pid:token`)."""
    from reconciler.pipeline.engine import process_owner

    return process_owner()


class Sinks:
    """Fans engine events out to the consumers, audit first; see the module docstring."""

    def __init__(
        self,
        audit: AuditConsumer,
        metrics: MetricsConsumer,
        alerts: AlertConsumer,
        logs: LogConsumer,
    ):
        self.audit_log, self.counters, self.alerts, self.logs = audit, metrics, alerts, logs
        # The order is the guarantee: a `started` the audit refuses reaches no one else.
        self.consumers: tuple[Callable[[Event], None], ...] = (audit, metrics, alerts, logs)

    # --- what the commands and tests reach through the sinks ---

    @property
    def audit(self) -> AuditWriter:
        """The audit writer (the lineage check appends its entries with it)."""
        return self.audit_log.writer

    @property
    def metrics(self) -> Metrics:
        return self.counters.metrics

    @property
    def courier(self) -> Courier:
        return self.alerts.courier

    @property
    def desired(self) -> DesiredState:
        return self.counters.desired()

    @property
    def journal(self) -> Journal:
        """For the engine: the entries of its batched run changes (see `Journal`)."""
        return self.audit_log.journal

    @property
    def commit(self) -> str | None:
        return self.audit_log.commit

    @commit.setter
    def commit(self, commit: str | None) -> None:
        self.audit_log.commit = self.alerts.commit = self.logs.commit = commit

    # --- the pass ---

    def pass_started(self, commit: str | None = None, frozen: list[dict] | None = None) -> None:
        """Audit the start of a pass (raises `StoreError`: then start nothing) with the
        freezes in force, bind the metrics to the store, and send what waits in the outbox."""
        if commit is not None:
            self.commit = commit
        self.audit_log.pass_started(frozen)
        self.alerts.in_pass = True
        self.counters.bind()
        self.alerts.retry_outbox()

    def worker_started(self) -> None:
        """`reconcile worker`: bind the metrics to the store and send what waits in the
        outbox (a worker has no pass; it retries the outbox now and then as it runs)."""
        self.counters.bind()
        self.alerts.retry_outbox()

    def retry_outbox(self) -> int:
        """Hand the outbox's waiting deliveries to the courier; returns how many."""
        return self.alerts.retry_outbox()

    def pass_finished(self, report) -> None:
        """Audit the plan (if no run event did yet) and the end of the pass with its counts
        and exit code, and alert the slots missed. Raises `StoreError` if any audit entry of the
        pass was not written."""
        self.audit_log.pass_finished(report)
        self.alerts.in_pass = False
        self.alerts.pass_ended()  # `missed`: scheduled runs still pending past their grace
        lost = self.audit_log.error is not None
        self.counters.pass_ended(None if lost else report.exit_code, refresh=True)
        self.audit_log.raise_if_failed()

    def pass_failed(self, error: BaseException) -> None:
        """A pass that did not complete (lock, store, source error): recorded if possible."""
        self.alerts.in_pass = False
        self.counters.pass_ended(None)
        self.audit_log.pass_failed(error)

    def close(self, wait_seconds: float = 10.0) -> bool:
        """Wait for pending deliveries at most `wait_seconds` (what is left stays in the
        outbox), and stop reading the store for metrics. Call before closing the store.
        True when every delivery was attempted."""
        drained = self.alerts.close(wait_seconds)
        self.counters.close()
        self.audit_log.close()
        return drained

    # --- events ---

    def __call__(self, event: Event) -> None:
        """Handle one engine event (see the module docstring for what raises)."""
        for consumer in self.consumers:
            consumer(event)

    def machine_unreachable(self, machine: str, error: str = "") -> None:
        """The transport could not reach `machine`: alert once (until `machine_reachable`).
        Thread-safe; never raises."""
        self.alerts.machine_unreachable(machine, error)

    def machine_reachable(self, machine: str) -> None:
        """`machine` answered again: the next unreachable episode alerts anew."""
        self.alerts.machine_reachable(machine)

    def commit_refused(self, commit: str | None, error: str) -> None:
        """A pass refused `commit`: alert every team once per commit. Never raises."""
        self.alerts.commit_refused(commit, error)

    def audit_resolver(self, resolver: Resolver) -> Resolver:
        """`resolver`, auditing each secret a run reads (team, key NAME; never the value)
        before reading it; a read that cannot be audited is refused with `VaultError`."""
        return self.audit_log.audit_resolver(resolver)


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
    current = desired if callable(desired) else (lambda: desired)
    redact: Callable[[str], str] = redactor or (lambda text: text)
    owner = owner or engine_owner()
    writer = AuditWriter(store, actor=actor or default_actor(), clock=clock, redact=redact)
    counters = MetricsConsumer(
        metrics if metrics is not None else default_metrics(), store, current, owner=owner
    )
    if notifier is None:  # imported only when needed: apprise is slow to load
        from reconciler.adapters.notify.apprise import AppriseNotifier

        notifier = AppriseNotifier()
    courier = Courier(
        store,
        notifier,
        AlertTargets(writer, resolver, on_audit_failure=counters.audit_failed),
        owner=owner,
        redact=redact,
        timeout=delivery_timeout,
        clock=clock,
        on_failure=counters.delivery_failed,
    )
    sinks = Sinks(
        AuditConsumer(writer, on_failure=counters.audit_failed),
        counters,
        AlertConsumer(store, current, courier, writer, on_alert=counters.alert_raised),
        LogConsumer(),
    )
    sinks.commit = commit
    return sinks


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
