"""The audit consumer: engine events and the pass around them, as audit log entries.

It writes the entry of each event that was not written with its change (`Event.audited`),
records the plan of a pass (`plan.recorded`, once) between `pass.start` and `pass.end` (with
the engine's journal in the plan's own transaction, made from the runs it inserted and
cancelled; without one from the plan's events, before the first entry of the drain), and
owns the pass's audit-failure state: once an entry could not be written, every later
`started` is refused (raises `StoreError`, so the engine dispatches nothing after the gap)
and `pass_finished` raises. Its `Journal` makes the entries
the engine writes in its own transactions (group commit), and `audit_resolver` audits each
secret a run reads before it is read.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from reconciler.adapters.audit.writer import AuditWriter, run_detail
from reconciler.core.errors import StoreError, VaultError
from reconciler.core.model import VaultRef
from reconciler.core.redact import Secret
from reconciler.pipeline.consumers.logs import LOGGER
from reconciler.pipeline.events import Event, Kind

log = logging.getLogger(LOGGER)

Resolver = Callable[[str, VaultRef], "str | Secret"]
# Counted into the plan's one entry rather than written one by one.
PLAN_KINDS = (Kind.ENQUEUED, Kind.CANCELLED)


class AuditConsumer:
    """Writes the audit entries of one pass (or worker); see the module docstring.
    `on_failure` hears of each entry that could not be written (the metrics count it)."""

    def __init__(
        self, writer: AuditWriter, *, on_failure: Callable[[StoreError], None] = lambda e: None
    ):
        self.writer = writer
        self.on_failure = on_failure
        self.commit: str | None = None
        self.error: StoreError | None = None  # the first entry of the pass not written
        self._pass_open = False
        self._plan: dict[str, Any] | None = None  # None: no pass (a worker), or written

    @property
    def journal(self) -> Journal:
        """For the engine: the entries of its batched run changes (see `Journal`)."""
        return Journal(self)

    # --- the pass ---

    def pass_started(self, frozen: list[dict] | None = None) -> None:
        """Write `pass.start` (raises `StoreError`: then start nothing) and begin counting
        the plan. `frozen`: the freezes in force at the commit (`holds.freezes_in_force`),
        so the log shows from which commit on each one held runs, and when it was lifted."""
        self.error = None
        extra = {"frozen": frozen} if frozen else {}
        self.writer.append("pass.start", commit=self.commit, **extra)
        self._pass_open = True
        self._plan = {"enqueued": 0, "cancelled": 0, "reasons": Counter(), "cancelled_runs": []}

    def pass_finished(self, report) -> None:
        """Write the plan (if no run entry did yet) and `pass.end` with the counts and exit
        code. A failure is remembered like any other: the caller asks `error`."""
        try:
            self.flush_plan()
            self.writer.append(
                "pass.end", commit=self.commit, counts=report.counts(), exit_code=report.exit_code
            )
        except StoreError as exc:
            self.failed(exc)
        self._pass_open = False

    def raise_if_failed(self) -> None:
        """Raise `StoreError` if an entry of the pass was not written."""
        if self.error is not None:
            raise StoreError(f"the audit log could not be written during this pass: {self.error}")

    def pass_failed(self, error: BaseException) -> None:
        """A pass that did not complete: its plan and end are recorded if possible (the pass
        already fails; a lost entry here is logged, not counted as a gap)."""
        self._pass_open = False
        try:
            self.flush_plan()
            self.writer.append(
                "pass.end", commit=self.commit, error=str(error) or type(error).__name__
            )
        except StoreError as exc:
            log.error("cannot write the end of the pass to the audit log: %s", exc)

    def close(self) -> None:
        """Chain what this process queued (a worker's last batches; a pass's end already
        did)."""
        try:
            self.writer.store.seal_audit(wait=True)
        except StoreError as exc:
            log.error("cannot seal the audit entries written by this process: %s", exc)

    # --- events ---

    def __call__(self, event: Event) -> None:
        """Write `event`'s entry unless it was written with its change. Raises `StoreError`
        for a `started` whose entry cannot be written or that follows a lost entry."""
        kind, run = event.kind, event.run
        if kind is Kind.HELD:  # a wait, not an operation
            return
        if kind is Kind.UNREACHABLE:  # the alert consumer audits the machine's alert, once
            return
        if kind in PLAN_KINDS:
            self._note_plan(kind, run, event.detail)
            return
        if event.audited:  # written with the change itself (the journal)
            return
        if kind is Kind.STARTED:
            self.refuse_if_failed(f"not dispatching run {run.id}")
            records = [*self.plan_records(), *claimed(self.writer, run)]
            records += dispatched(self.writer, run)
            try:
                self.writer.write(records)
            except StoreError as exc:
                self.failed(exc)
                raise
            self._plan = None
            return
        try:
            if kind is not Kind.RECOVERED:  # recovery comes before the plan; the rest after it
                self.flush_plan()
            self.writer.write([self._run_record(event)])
        except StoreError as exc:
            self.failed(exc)

    def refuse_if_failed(self, what: str = "not dispatching") -> None:
        """Raise `StoreError` when an earlier entry of the pass was not written."""
        if self.error is not None:
            raise StoreError(
                f"{what}: the audit log could not be written earlier in this pass ({self.error})"
            )

    def failed(self, exc: StoreError) -> None:
        """An entry was not written: remember the first such error, count and log it."""
        if self.error is None:
            self.error = exc
        self.on_failure(exc)
        log.error("cannot write the audit log: %s; nothing more is dispatched in this pass", exc)

    def _run_record(self, event: Event):
        run, writer = event.run, self.writer
        if event.kind is Kind.RECOVERED:
            return writer.record("run.recovered", **run_detail(run, "status"))
        if event.kind is Kind.RETRYING:
            return retrying(writer, run)
        if event.kind in (Kind.BLOCKED, Kind.HALTED):
            return writer.record(f"run.{event.kind}", **run_detail(run), reason=event.detail)
        return writer.record(
            f"run.{event.kind}",
            **run_detail(run, "status", "attempt", "exit_code", "error", "owner"),
        )

    # --- the plan ---

    def _note_plan(self, kind: Kind, run, detail: str) -> None:
        if self._plan is None:  # a worker: no pass, no plan
            return
        if kind is Kind.ENQUEUED:
            self._plan["enqueued"] += 1
            self._plan["reasons"][detail or run.reason] += 1
        else:
            self._plan["cancelled"] += 1
            self._plan["cancelled_runs"].append(run.id)

    def plan_records(self) -> list:
        """`plan.recorded` as counted from the plan's events, while a pass is open and it
        has not been written; else none."""
        if self._plan is None or not self._pass_open:
            return []
        plan = self._plan
        return [self._plan_record(plan["reasons"], plan["cancelled_runs"])]

    def recorded_plan(self, inserted, cancelled) -> list:
        """`plan.recorded` made from the runs the plan's transaction `inserted` and
        `cancelled` (the journal's, written in that transaction), while a pass is open and
        it has not been written; else none."""
        if self._plan is None or not self._pass_open:
            return []
        reasons = Counter(run.reason for run in inserted)
        return [self._plan_record(reasons, [run.id for run in cancelled])]

    def _plan_record(self, reasons: Counter, cancelled_runs: list[int]):
        return self.writer.record(
            "plan.recorded",
            commit=self.commit,
            enqueued=sum(reasons.values()),
            cancelled=len(cancelled_runs),
            reasons=dict(sorted(reasons.items())),
            cancelled_runs=cancelled_runs,
        )

    def plan_written(self) -> None:
        self._plan = None

    def flush_plan(self) -> None:
        """Write `plan.recorded` once, before the first entry of the drain."""
        records = self.plan_records()
        if records:
            self.writer.write(records)
        self._plan = None

    # --- secrets read by runs ---

    def audit_resolver(self, resolver: Resolver) -> Resolver:
        """`resolver`, auditing each secret a run reads (team, key NAME; never the value)
        before reading it. A read that cannot be audited is refused with `VaultError` (the
        run fails; its command is not executed) and counts as a lost entry of the pass."""

        def resolve(team: str, ref: VaultRef):
            try:
                self.writer.append("vault.read", team=team, key=ref.name, purpose="run")
            except StoreError as exc:
                self.failed(exc)
                raise VaultError(
                    f"secret '{ref.name}' of team '{team}' not read: the read "
                    f"could not be audited ({exc})"
                ) from exc
            return resolver(team, ref)

        return resolve


# --- the entries of run changes (written by the consumer or, batched, by the engine) ---


def claimed(writer: AuditWriter, run) -> list:
    return [writer.record("run.claimed", **run_detail(run, "attempt", "epoch", "owner"))]


def dispatched(writer: AuditWriter, run) -> list:
    return [writer.record("run.dispatched", **run_detail(run, "attempt"))]


def retrying(writer: AuditWriter, run):
    return writer.record(
        "run.retrying", **run_detail(run, "attempt", "not_before", "exit_code", "error")
    )


def ended(writer: AuditWriter, run) -> list:
    if run.status.is_active:  # back to pending for another attempt
        return [retrying(writer, run)]
    return [
        writer.record(
            "run.finished", **run_detail(run, "status", "attempt", "exit_code", "error", "owner")
        )
    ]


class Journal:
    """The audit entries of the run changes the engine writes in batches (group commit): the
    store writes them in the change's own transaction, so a run is never claimed, dispatched
    or ended without its entry, and no entry is written for a change that did not happen.
    The entries are those the `AuditConsumer` would write for the same events, and it shares
    that consumer's plan and failure state."""

    def __init__(self, consumer: AuditConsumer):
        self.consumer = consumer

    def check(self) -> None:
        self.consumer.refuse_if_failed()

    def plan(self, inserted, cancelled) -> list:
        """The plan's entry, made from the runs its transaction inserted and cancelled: the
        store writes it in that transaction (`StateStore.record_plan`), so a pass killed
        right after its plan committed still leaves the entry of every run it queued."""
        return self.consumer.recorded_plan(inserted, cancelled)

    def planned(self) -> None:
        """The plan committed with its entry: its runs' events count nothing more."""
        self.consumer.plan_written()

    def leading(self) -> list:
        return self.consumer.plan_records()

    def flushed(self) -> None:
        self.consumer.plan_written()

    def claimed(self, run) -> list:
        return claimed(self.consumer.writer, run)

    def dispatched(self, run) -> list:
        return dispatched(self.consumer.writer, run)

    def ended(self, run) -> list:
        return ended(self.consumer.writer, run)

    def failed(self, error: StoreError) -> None:
        self.consumer.failed(error)


__all__ = ["AuditConsumer", "Journal", "Resolver"]
