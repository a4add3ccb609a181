"""One pass: recover -> snapshot -> plan -> record -> drain the queue.

The engine decides nothing itself: `make_plan` says what to enqueue, `dispatch.decide` what may
start, `executor.next_attempt_at` whether to retry. It does the I/O around those pure calls and
emits `Event`s; views render them. It expects an already validated `DesiredState`, so bad
input never reaches the store.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Mapping

from .dispatch import decide
from .executor import Outcome, SecretResolver, execute, next_attempt_at, no_vault
from .model import DesiredState
from .plan import Plan, make_plan
from .redact import Redactor
from .state import ExecutedState, Run, RunStatus
from .store.base import LeaseLost, StateStore
from .transport.base import Transport

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Event:
    """Something a pass did, for progress views and logs.

    kind: recovered | enqueued | cancelled | started | retrying | finished | blocked | held
    """

    kind: str
    run: Run
    detail: str = ""


@dataclass
class PassReport:
    """What one pass did: its plan and the latest record of every run it touched."""

    plan: Plan
    commit: str | None
    runs: dict[int, Run] = field(default_factory=dict)
    held: dict[int, datetime] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.status.value for r in self.runs.values()).items()))

    @property
    def exit_code(self) -> int:
        """SPEC §4: 1 when a run of this pass ended failed, blocked or unknown."""
        return 1 if any(r.status.is_problem for r in self.runs.values()) else 0


class _Tracker:
    """The executed state during a drain, updated in place as runs change.

    Rebuilding `ExecutedState` from the store after every run would make a pass quadratic;
    this pass holds the lock, so only its own writes change what it needs to know.
    """

    def __init__(self, executed: ExecutedState):
        self.latest = dict(executed.latest)
        self.on_machine = dict(executed.latest_on_machine)
        self.seen = set(executed.tasks_seen)

    def update(self, run: Run) -> None:
        for index, key in ((self.latest, (run.task, run.machine, run.version)),
                           (self.on_machine, (run.task, run.machine))):
            if key not in index or index[key].id <= run.id:
                index[key] = run
        self.seen.add(run.task)

    def view(self, active: list[Run]) -> ExecutedState:
        return ExecutedState(self.latest, tuple(active), self.on_machine, self.seen)  # type: ignore[arg-type]


class Engine:
    """Runs passes against one store with one set of transports."""

    def __init__(self, store: StateStore, transports: Mapping[str, Transport], *,
                 concurrency: int = 16, clock: Clock = utc_now,
                 on_event: Callable[[Event], None] = lambda e: None,
                 resolve: SecretResolver = no_vault, redactor: Redactor | None = None):
        self.store = store
        self.transports = transports
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self.on_event = on_event
        self.resolve = resolve
        # Every output and error passes through it before it is stored or shown.
        self.redact = redactor or Redactor()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()  # set: claim nothing more, let running runs finish

    def plan(self, desired: DesiredState) -> Plan:
        """What a pass would do now; reads the store, changes nothing."""
        return make_plan(desired, self.store.snapshot(), self.clock())

    def run_pass(self, desired: DesiredState, commit: str | None, lock_timeout: float) -> PassReport:
        """One full pass under the store's pass lock; returns when every run it can finish has
        ended (retries included). Runs held by a deny window stay pending for a later pass."""
        with self.store.pass_lock(lock_timeout):
            report = PassReport(plan=Plan(), commit=commit)
            for run in self.store.recover(self.clock()):
                self._reap(desired, run)
                self._note(report, Event("recovered", run))
            report.plan = make_plan(desired, self.store.snapshot(), self.clock())
            for run in self.store.record_plan(report.plan, commit, self.clock()):
                self._note(report, Event("enqueued", run, run.reason))
            for cancel in report.plan.cancel:
                cancelled = self.store.get_run(cancel.run)
                if cancelled is not None and cancelled.status is RunStatus.CANCELLED:
                    self._note(report, Event("cancelled", cancelled, cancel.reason))
            self._drain(desired, report)
            return report

    def _reap(self, desired: DesiredState, run: Run) -> None:
        """Stop the orphaned command of a run the dead pass had dispatched, before the plan
        may re-run it (an idempotent task's `unknown` run is re-run in this very pass)."""
        machine = desired.machines.get(run.machine)
        if run.status is RunStatus.UNKNOWN and machine is not None:
            transport = self.transports.get(machine.transport)
            if transport is not None:
                transport.reap(machine, run.id)

    def _note(self, report: PassReport, event: Event) -> None:
        report.runs[event.run.id] = event.run
        self.on_event(event)

    def _drain(self, desired: DesiredState, report: PassReport) -> None:
        tracker = _Tracker(self.store.snapshot())
        pending = {r.id: r for r in self.store.pending()}
        running: dict[Future, Run] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="run") as pool:
            while True:
                now = self.clock()
                decision = decide(list(pending.values()), list(running.values()), desired,
                                  tracker.view([*pending.values(), *running.values()]),
                                  now, self.concurrency)
                if decision.block:
                    self._block(decision.block, pending, tracker, report, now)
                    continue  # a blocked run may block its own dependents: decide again
                if not self.stop.is_set():
                    for run in decision.start:
                        self._start(run, desired, pending, running, pool, report, now)
                retry_waits = [until for run, until in decision.held
                               if run.not_before is not None and until <= run.not_before]
                self._record_held(decision.held, report)
                if not running and (not retry_waits or self.stop.is_set()):
                    return
                timeout = max(0.0, (min(retry_waits) - now).total_seconds()) if retry_waits else None
                if not running:
                    self.stop.wait(timeout)
                    continue
                done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    self._record(running.pop(future), future, desired, pending, tracker, report)

    def _block(self, blocks, pending, tracker, report, now) -> None:
        for run, reason in blocks:
            pending.pop(run.id, None)
            blocked = self.store.block(run.id, reason, now)
            if blocked is not None:
                tracker.update(blocked)
                self._note(report, Event("blocked", blocked, reason))

    def _start(self, run, desired, pending, running, pool, report, now) -> None:
        pending.pop(run.id, None)
        claimed = self.store.claim(run.id, self.owner, now)
        if claimed is None:  # cancelled or taken since we looked
            return
        spec = desired.tasks[claimed.task]
        machine = desired.machines[claimed.machine]
        self._note(report, Event("started", claimed))
        future = pool.submit(self._attempt, claimed, spec, machine)
        running[future] = claimed

    def _attempt(self, run: Run, spec, machine) -> Outcome:
        """Worker thread: record the dispatch, then execute. The dispatch marker is written
        before the command is sent, so a crash after it reads as `unknown`, never as "did
        not run" (DESIGN §5)."""
        self.store.mark_dispatched(run.id, run.epoch, self.clock())
        return execute(run, spec, machine, self.transports[machine.transport], self.resolve)

    def _record(self, run: Run, future: Future, desired, pending, tracker, report) -> None:
        now = self.clock()
        try:
            outcome = future.result()
        except LeaseLost as exc:
            log.warning("run %s: %s; abandoning it", run.id, exc)
            return
        except Exception as exc:  # a bug in an attempt must not kill the whole pass
            log.error("run %s: internal error: %s", run.id, exc)
            log.debug("run %s: traceback", run.id, exc_info=True)
            outcome = Outcome(RunStatus.FAILED, error=f"internal error: {exc}", retryable=False)
        outcome = replace(outcome, output=self.redact(outcome.output) or "",
                          error=self.redact(outcome.error))
        spec = desired.tasks[run.task]
        try:
            retry_at = next_attempt_at(spec.retry, run, outcome, now)
        except (ValueError, OverflowError) as exc:  # a policy that cannot be computed
            log.error("run %s: cannot compute its next attempt: %s", run.id, exc)
            retry_at = None
        try:
            if retry_at is not None:
                record = self.store.requeue(run.id, run.epoch, retry_at, now,
                                            exit_code=outcome.exit_code, output=outcome.output,
                                            error=outcome.error)
                pending[record.id] = record
                self._note(report, Event("retrying", record, outcome.error or ""))
            else:
                record = self.store.finish(run.id, run.epoch, outcome.status, now,
                                           exit_code=outcome.exit_code, output=outcome.output,
                                           error=outcome.error)
                self._note(report, Event("finished", record, outcome.error or ""))
        except LeaseLost as exc:
            log.warning("run %s: %s; its result was not recorded", run.id, exc)
            return
        tracker.update(record)

    def _record_held(self, held, report: PassReport) -> None:
        """Note runs a deny window holds; a retry's own wait was announced by `retrying`."""
        for run, until in held:
            if run.not_before is not None and until <= run.not_before:
                continue
            if report.held.get(run.id) != until:
                report.held[run.id] = until
                report.runs.setdefault(run.id, run)
                self.on_event(Event("held", run, until.isoformat()))
