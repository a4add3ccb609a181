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

Issue 15 §5: `drift` and `succeeded` come with a run's end (a run that finds its check
holding ends the drift episode: its memory is dropped, at most once a few minutes per task
and machine); `overdue` from a timer of this consumer, set when a run of a task with
`alert_after` starts here and cancelled when it ends (a run another process holds is that
process's to report); `missed` when a pass ends (`pass_ended`), from the pending runs; `halted` when a run ends
`halted` and `awaiting_approval` when a run is held for approvals of its version, each once
per (task, version) by its dedupe key.

`AlertTargets` is the courier's resolver of outbox targets: a URL as written, or one read
from the team's vault, audited by key NAME.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

from reconciler.adapters.audit.writer import AuditWriter
from reconciler.adapters.notify.courier import Courier
from reconciler.core import alerts
from reconciler.core.errors import NotifyError, ReconcilerError, StoreError, VaultError
from reconciler.core.holds import HoldKind
from reconciler.core.missed import missed_slots
from reconciler.core.model import DesiredState, FailureAction, VaultRef
from reconciler.core.plan import rollout_stands
from reconciler.core.redact import Secret
from reconciler.core.state import RunStatus
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
# Events after which a run no longer runs here: its `overdue` timer is cancelled.
ENDING_KINDS = (
    Kind.FINISHED,
    Kind.BLOCKED,
    Kind.HALTED,
    Kind.RECOVERED,
    Kind.RETRYING,
    Kind.CANCELLED,
)
# How long a (task, machine) known to have no drift memory is trusted before a run that
# finds its check holding drops that memory again (another process may have set it).
DRIFT_CLEAR_SECONDS = 300.0
# At most this many pending runs are looked at for missed slots when a pass ends.
MISSED_LIMIT = 10_000


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
        self._drift_clear: dict[tuple[str, str], float] = {}  # no drift memory, since when
        self._overdue = _OverdueTimer(self._fire_overdue)

    def retry_outbox(self) -> int:
        """Hand the outbox's waiting deliveries to the courier; returns how many."""
        self._outbox_tried_at = time.monotonic()
        return self.courier.retry_outbox()

    def close(self, wait_seconds: float) -> bool:
        """Wait for pending deliveries at most `wait_seconds` (what is left stays in the
        outbox); True when every delivery was attempted."""
        self._overdue.close()
        return self.courier.close(wait_seconds)

    # --- events ---

    def __call__(self, event: Event) -> None:
        if event.kind is Kind.STARTED:
            self._retry_outbox_now_and_then()
            self._watch(event.run)
        elif event.kind in ENDING_KINDS:
            self._overdue.cancel(event.run.id)
        if event.kind is Kind.UNREACHABLE:  # one alert per machine, not per run on it
            self.machine_unreachable(event.run.machine, event.detail)
        elif event.kind in ALERTING_KINDS:
            self._alert_event(event)
        elif event.kind is Kind.HALTED:  # one alert per task version, not per run
            self._alert_once(event, alerts.halted, event.detail, commit=self.commit)
        elif _awaits_approval(event):
            self._alert_once(event, alerts.awaiting_approval, event.detail)
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
            found = self._alerting_team(run)
            if found is None:
                return
            team, spec = found
            action = spec.retry.failure_action if spec is not None else FailureAction.ALERT
            previous = (
                self.store.previous_outcome(run.task, run.machine, run.id)
                if alerts.wants_previous(event.kind, run)
                else None
            )
            checked = (
                spec is not None
                and spec.check is not None
                and spec.accepts(run.machine, run.version)
            )
            for alert in alerts.decide_all(
                event.kind,
                run,
                failure_action=action,
                previous=previous,
                checked=checked,
                commit=self.commit,
                redact=redact,
            ):
                if self._raise(alert, team) and alert.event == "drift":
                    self._drift_clear.pop((run.task, run.machine), None)
            if alerts.converged(event.kind, run, checked) and alerts.anyone_wants([team], "drift"):
                self._end_drift(run.task, run.machine)
        except ReconcilerError as exc:
            log.error(
                "alert for run %s of %s on %s not recorded: %s",
                run.id,
                run.task,
                run.machine,
                redact(str(exc)),
            )

    def _alerting_team(self, run):
        """The run's team and its task's spec (None once the task left the inventory), or
        None when the team is gone or has no alert routes: then nothing is raised."""
        desired = self.desired()
        team = desired.teams.get(run.team)
        if team is None or not team.alerts:
            return None
        return team, desired.tasks.get(run.task)

    def _alert_once(self, event: Event, make, detail: str, **extra) -> None:
        """Remember and deliver the alert `make` builds for the version of the event's task
        across its targets (`TaskSpec.release`; the store's dedupe key keeps it to one,
        whichever run and process raises it first). Never raises."""
        run = event.run
        redact = self.courier.redact
        try:
            found = self._alerting_team(run)
            if found is None:
                return
            team, spec = found
            current = spec is not None and spec.accepts(run.machine, run.version)
            release = spec.release if current else run.version
            self._raise(make(run, detail, release, redact=redact, **extra), team)
        except ReconcilerError as exc:
            log.error("%s alert for %s not recorded: %s", event.kind, run.task, redact(str(exc)))

    def _raise(self, alert: alerts.Alert, team) -> bool:
        """Remember `alert` (with no target wanting it, the memory alone: it still ends the
        opposite transition) and deliver it to the targets that want it."""
        rows = alerts.deliveries(alert, alerts.targets_for(team, alert.event))
        if not rows and alert.event in alerts.UNPAIRED_EVENTS:
            return False  # nobody wants it, and its memory would end nothing
        if not self.store.record_alert(alert, rows, self.courier.owner, self.courier.clock()):
            return False
        self.on_alert(alert)
        log.info("alert %s: %s", alert.id, alert.title)
        self.courier.submit(rows)
        return True

    def _end_drift(self, task: str, machine: str) -> None:
        """A run found the check holding: the next drift of (task, machine) alerts anew."""
        now = time.monotonic()
        since = self._drift_clear.get((task, machine))
        if since is not None and now - since < DRIFT_CLEAR_SECONDS:
            return
        self.store.forget_alerts(task, machine, ("drift",))
        self._drift_clear[(task, machine)] = now

    # --- overdue and missed ---

    def _watch(self, run) -> None:
        """A run starts here: alert `overdue` if it still runs `alert_after` from now."""
        try:
            spec = self.desired().tasks.get(run.task)
        except ReconcilerError:
            return
        if spec is not None and spec.alert_after:
            self._overdue.set(run, spec.alert_after)

    def _fire_overdue(self, run, after: int) -> None:
        """The timer's: `run` started `after` seconds ago here and has not ended."""
        redact = self.courier.redact
        try:
            team = self.desired().teams.get(run.team)
            if team is not None and team.alerts:
                self._raise(alerts.overdue(run, after, self.commit, redact), team)
        except ReconcilerError as exc:
            log.error("overdue alert for run %s not recorded: %s", run.id, redact(str(exc)))

    def pass_ended(self) -> None:
        """A pass ended: alert `missed` for each scheduled run still pending past its slot
        and its task's `grace` (a window, a freeze or a full queue held it). Never raises."""
        redact = self.courier.redact
        try:
            desired = self.desired()
            if not any(spec.schedule for spec in desired.tasks.values()):
                return
            if not alerts.anyone_wants(desired.teams.values(), "missed"):
                return
            pending = self.store.list_runs([RunStatus.PENDING], limit=MISSED_LIMIT)
            now = self.courier.clock()
            stands = _rollout_stands(desired, pending, self.store, now)
            for slot in missed_slots(desired, pending, now, stands):
                team = desired.teams.get(slot.task.split("/", 1)[0])
                if team is not None:
                    self._raise(alerts.missed(slot, redact), team)
        except ReconcilerError as exc:
            log.error("missed-slot alerts not recorded: %s", redact(str(exc)))

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


def _awaits_approval(event: Event) -> bool:
    """A run held because its own task's version waits for approvals (not one held behind a
    dependency that does: that task alerts for itself)."""
    hold = event.hold
    return (
        event.kind is Kind.HELD
        and hold is not None
        and hold.kind is HoldKind.APPROVAL
        and hold.after is None
    )


class _OverdueTimer:
    """One thread that calls `fire(run, after)` for each run `set` and not `cancel`led
    within `after` seconds (started on first use, stopped by `close`)."""

    def __init__(self, fire: Callable[[object, int], None]):
        self.fire = fire
        self.cond = threading.Condition()
        self.due: list[tuple[float, int]] = []  # (monotonic deadline, run id), a heap
        self.runs: dict[int, tuple[float, object, int]] = {}
        self.thread: threading.Thread | None = None
        self.closed = False

    def set(self, run, after: int) -> None:
        deadline = time.monotonic() + after
        with self.cond:
            if self.closed:
                return
            self.runs[run.id] = (deadline, run, after)
            heapq.heappush(self.due, (deadline, run.id))
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._loop, name="reconcile-overdue", daemon=True
                )
                self.thread.start()
            self.cond.notify()

    def cancel(self, run_id: int) -> None:
        with self.cond:
            self.runs.pop(run_id, None)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join(5)

    def _loop(self) -> None:
        while True:
            with self.cond:
                fired = None
                while fired is None and not self.closed:
                    now = time.monotonic()
                    while self.due and (
                        self.due[0][1] not in self.runs
                        or self.runs[self.due[0][1]][0] != self.due[0][0]
                    ):
                        heapq.heappop(self.due)  # cancelled, or set again later
                    if self.due and self.due[0][0] <= now:
                        _, run_id = heapq.heappop(self.due)
                        fired = self.runs.pop(run_id)
                    else:
                        self.cond.wait(self.due[0][0] - now if self.due else None)
                if self.closed:
                    return
            _, run, after = fired
            self.fire(run, after)


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


def _rollout_stands(desired: DesiredState, pending, store, now) -> dict:
    """Where the rollouts of the scheduled pending runs' tasks stand (read from the store
    only when one of them has a rollout), so a `missed` alert says a batch held its run."""
    tasks = {
        run.task
        for run in pending
        if (spec := desired.tasks.get(run.task)) is not None and spec.rollout and spec.schedule
    }
    if not tasks:
        return {}
    return rollout_stands(tasks, desired, store.snapshot(), now)
