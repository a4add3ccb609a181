"""The alert consumer: engine events (and what the transport and the lineage check report)
as alerts, remembered in the store and delivered by the courier. Never raises into a pass.

For a run that finished, was blocked or was recovered, `alerts.decide` picks the alert; the
store remembers it under its dedupe key together with its outbox rows (`record_alert`: a
restart or another reconciler sending the same alert finds the key and sends nothing), and
the courier delivers it from its thread. A machine that cannot be reached (an `unreachable`
event of any run on it, or `machine_unreachable`) alerts once until it answers again
(`machine_reachable`, or a run with an exit code on it); a refused commit alerts once per
commit. The outbox is retried when a pass begins, and by a worker (which has no passes) as
its runs start, about once a minute.

`AlertTargets` is the courier's resolver of outbox targets: a URL as written, or one read
from the team's vault, audited by key NAME.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from reconciler.adapters.audit.writer import AuditWriter
from reconciler.adapters.notify.courier import Courier
from reconciler.core import alerts
from reconciler.core.errors import NotifyError, ReconcilerError, StoreError, VaultError
from reconciler.core.model import DesiredState, FailureAction, VaultRef
from reconciler.core.redact import Secret
from reconciler.pipeline.consumers.logs import LOGGER
from reconciler.pipeline.events import Event, Kind

log = logging.getLogger(LOGGER)

Resolver = Callable[[str, VaultRef], "str | Secret"]

# A worker has no passes: it retries the outbox at a `started` event this often instead.
OUTBOX_RETRY_SECONDS = 60.0
# The events that may alert about their run.
ALERTING_KINDS = (Kind.FINISHED, Kind.BLOCKED, Kind.RECOVERED)
# Events of a run whose command ran on its machine; with an exit code, the machine answered.
ANSWERED_KINDS = (Kind.FINISHED, Kind.RETRYING, Kind.RECOVERED)
# How long the machines marked unreachable are remembered before the store is asked again
# (another process may mark one meanwhile); a run's end asks the store no more often.
DOWN_REFRESH_SECONDS = 5.0


class AlertConsumer:
    """Alerts of one pass (or worker). The courier's owner, clock and redaction are this
    consumer's too: an alert is recorded as claimed by the process whose courier sends it.
    `audit` writes the entries of the alerts that are operations (`alert.unreachable`,
    `commit.refused`); `on_alert` hears of each alert recorded (the metrics count it)."""

    def __init__(
        self,
        store,
        desired: Callable[[], DesiredState],
        courier: Courier,
        audit: AuditWriter,
        *,
        on_alert: Callable[[alerts.Alert], None] = lambda a: None,
    ):
        self.store = store
        self.desired = desired
        self.courier = courier
        self.audit = audit
        self.on_alert = on_alert
        self.commit: str | None = None
        self.in_pass = False  # a pass retries the outbox as it begins, a worker as runs start
        self._outbox_tried_at: float | None = None
        self._down: set[str] = set()  # machines marked unreachable, as last read
        self._down_read_at: float | None = None

    def retry_outbox(self) -> int:
        """Hand the outbox's waiting deliveries to the courier; returns how many."""
        self._outbox_tried_at = time.monotonic()
        return self.courier.retry_outbox()

    def close(self, wait_seconds: float) -> bool:
        """Wait for pending deliveries at most `wait_seconds` (what is left stays in the
        outbox); True when every delivery was attempted."""
        return self.courier.close(wait_seconds)

    # --- events ---

    def __call__(self, event: Event) -> None:
        if event.kind is Kind.STARTED:
            self._retry_outbox_now_and_then()
        elif event.kind is Kind.UNREACHABLE:  # one alert per machine, not per run on it
            self.machine_unreachable(event.run.machine, event.detail)
        elif event.kind in ALERTING_KINDS:
            self._alert_event(event)
        self._note_answer(event)

    def _retry_outbox_now_and_then(self) -> None:
        """A worker has no pass: it retries the outbox as runs start, once a minute or so."""
        if not self.in_pass and (
            self._outbox_tried_at is None
            or time.monotonic() - self._outbox_tried_at >= OUTBOX_RETRY_SECONDS
        ):
            self.retry_outbox()

    def _alert_event(self, event: Event) -> None:
        """Decide, remember and hand over an alert; any failure is logged, never raised."""
        run = event.run
        redact = self.courier.redact
        try:
            desired = self.desired()
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
                redact=redact,
            )
            if alert is not None:
                self._raise(alert, team)
        except ReconcilerError as exc:
            log.error(
                "alert for run %s of %s on %s not recorded: %s",
                run.id,
                run.task,
                run.machine,
                redact(str(exc)),
            )

    def _raise(self, alert: alerts.Alert, team) -> bool:
        """Remember `alert` (with no target wanting it, the memory alone: it still ends the
        opposite transition) and deliver it to the targets that want it."""
        rows = alerts.deliveries(alert, alerts.targets_for(team, alert.event))
        if not self.store.record_alert(alert, rows, self.courier.owner, self.courier.clock()):
            return False
        self.on_alert(alert)
        log.info("alert %s: %s", alert.id, alert.title)
        self.courier.submit(rows)
        return True

    # --- machines and commits ---

    def machine_unreachable(self, machine: str, error: str = "") -> None:
        """The transport could not reach `machine`: alert once (until `machine_reachable`),
        and `reconciler_machine_up` is 0 meanwhile. Thread-safe; never raises."""
        redact = self.courier.redact
        try:
            desired = self.desired()
            found = desired.machines.get(machine)
            team_name = found.team if found is not None else ""
            alert = alerts.unreachable(machine, team_name, error, redact=redact)
            self._down.add(machine)
            if self._raise(alert, desired.teams.get(team_name)):
                self.audit.append("alert.unreachable", machine=machine, error=error or None)
        except ReconcilerError as exc:
            log.error("unreachable alert for %s not recorded: %s", machine, redact(str(exc)))

    def machine_reachable(self, machine: str) -> None:
        """`machine` answered again: the next unreachable episode alerts anew."""
        try:
            self.store.forget_alerts("", machine, ("unreachable",))
            self._down.discard(machine)
        except ReconcilerError as exc:
            log.error("cannot clear the unreachable state of %s: %s", machine, exc)

    def commit_refused(self, commit: str | None, error: str) -> None:
        """A pass refused `commit`: alert every team once per commit. Never raises."""
        if not commit:
            return
        redact = self.courier.redact
        try:
            desired = self.desired()
            for team in sorted(desired.teams):
                self._raise(
                    alerts.commit_refused(commit, team, error, redact=redact),
                    desired.teams[team],
                )
            self.audit.append("commit.refused", commit=commit, error=error)
        except ReconcilerError as exc:
            log.error("refused-commit alert not recorded: %s", redact(str(exc)))

    def _note_answer(self, event: Event) -> None:
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
            log.error("cannot read the unreachable machines: %s", self.courier.redact(str(exc)))

    def _marked_down(self) -> set[str]:
        now = time.monotonic()
        if self._down_read_at is None or now - self._down_read_at >= DOWN_REFRESH_SECONDS:
            self._down = set(self.store.unreachable_machines())
            self._down_read_at = now
        return self._down


class AlertTargets:
    """The courier's `resolve`: the URL of an outbox target, as written (`url:...`) or read
    from the team's vault (`vault:NAME`), audited by NAME before it is read; a read that
    cannot be audited is not made. `on_audit_failure` hears of such a lost entry."""

    def __init__(
        self,
        audit: AuditWriter,
        resolver: Resolver | None,
        *,
        on_audit_failure: Callable[[StoreError], None] = lambda e: None,
    ):
        self.audit = audit
        self.resolver = resolver
        self.on_audit_failure = on_audit_failure

    def __call__(self, team: str, target: str) -> str:
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
            self.on_audit_failure(exc)
            raise NotifyError(f"the vault read of '{name}' could not be audited: {exc}") from exc
        value = self.resolver(team, VaultRef(name))
        return value.reveal() if isinstance(value, Secret) else str(value)


__all__ = ["AlertConsumer", "AlertTargets"]
