"""One pass: recover -> snapshot -> plan -> record -> drain the queue; and the worker loop.

The engine decides nothing itself: `make_plan` says what to enqueue, `dispatch.decide` what may
start, `executor.next_attempt_at` whether to retry. It does the I/O around those pure calls and
emits `Event`s; views render them. It expects an already validated `DesiredState`, so bad
input never reaches the store.

On every store the pass lock covers only recovery and planning: a new commit is planned
while earlier passes still drain (DESIGN §10 "Planning is not draining"). The drain runs beside
other passes (other `reconcile --once` processes, the daemon's earlier passes) and, on
PostgreSQL, workers on other hosts: it re-reads the queue as it goes, claims each run with
`max_parallel` checked inside the claim transaction (so the limit holds across processes),
heartbeats its runs, sweeps the runs of dead holders, and a pass waits until every run it
enqueued has ended, wherever it ran (but not for other passes' runs or retries). A pass claims
only the runs it planned and those of dead planners (adopting them); a live pass's queue is
its own. Workers claim any run.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol, TypeVar

from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.base import (
    HEARTBEAT_SECONDS,
    LEASE_SECONDS,
    OUTPUT_CAP,
    Batch,
    ClaimRequest,
    LeaseLost,
    RunEnd,
    StateStore,
)
from reconciler.adapters.store.common import pid_namespace, process_start
from reconciler.adapters.transport.base import STILL_RUNNING, Transport, run_key
from reconciler.core.dispatch import Decision, decide, fill, release, run_hold
from reconciler.core.errors import StoreError, TransportError
from reconciler.core.holds import Hold, HoldKind
from reconciler.core.model import DesiredState
from reconciler.core.output import cap
from reconciler.core.plan import Plan, make_plan
from reconciler.core.redact import Redactor
from reconciler.core.state import ExecutedState, Run, RunStatus
from reconciler.pipeline import failpoints
from reconciler.pipeline.events import Event, Kind
from reconciler.pipeline.executor import (
    Outcome,
    SecretResolver,
    execute,
    judge,
    next_attempt_at,
    no_vault,
)
from reconciler.pipeline.live import LiveRuns, Printer

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Clock = Callable[[], datetime]
POLL_SECONDS = 0.2  # how often a drain looks at runs held elsewhere
# A pass with nothing running here that waits for its runs elsewhere looks again this soon
# after a look found something changed, then half as often each time nothing did, down to
# POLL_SECONDS: the ends of its last runs, which workers record in a burst, end it at once.
EAGER_POLL_SECONDS = 0.025
# How often a drain sweeps the runs of dead holders (expired leases; on SQLite also runs whose
# holder process is gone). A sweep is one cheap statement;
# sweeping more often than leases are renewed lets a pass blocked behind a dead run go on
# within seconds of that run's lease running out.
SWEEP_SECONDS = 5.0
# Passes of one process plan one at a time. The daemon overlaps its passes (a new commit is
# planned while an earlier pass still drains): on SQLite the pass lock is the process's, so
# this keeps two of its planners from recording the same plan at once.
_PLANNING = threading.Lock()
# What this process does to each store besides one drain's own writes, by id(store): the
# number of drains running on it, and how many plans were recorded. A drain that is the
# only one of its process re-reads the queue only when these or the store's change token
# (another process wrote) say that something changed: a round of a pass alone costs no read.
_ACTIVITY_GUARD = threading.Lock()
_DRAINS: Counter[int] = Counter()
_PLANS: Counter[int] = Counter()
STORE_RETRIES = 5  # a dropped database connection is reopened by the store: try again
# An `unknown` run is asked about for as long as its target keeps run markers (a day, see
# transport.wrapper.CLEAN); once the target answered that it kept nothing, it is not asked again.
ADOPT_WINDOW = timedelta(days=1)
NOTHING_KEPT = "; the machine kept no result of it"
ADOPT_LIMIT = 200  # unknown runs looked at per pass, newest first
# A drain on a shared queue asks for this many runs more than it has room for, each claimed
# only in place of one another worker took first (see `_Drain._spares`).
SPARES = 3


def utc_now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1)
def process_owner() -> str:
    """The owner this process stamps on the runs it plans and claims:
    `host:pid:token:pidns:start`. The token tells two lives of one pid apart (a restarted
    container's daemon is pid 1 again), so a pass never mistakes a dead predecessor's runs
    for its own live ones; the pid namespace tells whether another process of the host can
    look at the pid, and the process start time whether the process it finds there is this
    one or a later one that got the same pid (see `store.common.holder_alive`)."""
    pid = os.getpid()
    return (
        f"{socket.gethostname()}:{pid}:{secrets.token_hex(3)}:{pid_namespace()}"
        f":{process_start(pid)}"
    )


class Journal(Protocol):
    """Makes the audit entries of the run changes the engine writes in batches (see
    `StateStore.claim_batch`), and learns whether they were written."""

    def check(self) -> None:
        """Raise `StoreError` when an earlier audit write of the pass failed."""

    def plan(self, inserted: Sequence[Run], cancelled: Sequence[Run]) -> Sequence[AuditRecord]:
        """The plan's entries, made from the runs its transaction inserted and cancelled:
        written in that transaction (see `StateStore.record_plan`)."""

    def planned(self) -> None:
        """The plan committed with the entries `plan` made."""

    def leading(self) -> list[AuditRecord]:
        """Entries to write before the first claim (the plan's record), once."""

    def flushed(self) -> None:
        """The leading entries were written."""

    def claimed(self, run: Run) -> Sequence[AuditRecord]: ...

    def dispatched(self, run: Run) -> Sequence[AuditRecord]: ...

    def ended(self, run: Run) -> Sequence[AuditRecord]: ...

    def failed(self, error: StoreError) -> None:
        """A batch with its entries could not be written."""


class _Unjournaled:
    """The journal of an engine given none: its batches carry no audit entries."""

    def check(self) -> None:
        pass

    def plan(self, inserted: Sequence[Run], cancelled: Sequence[Run]) -> Sequence[AuditRecord]:
        return ()

    def planned(self) -> None:
        pass

    def leading(self) -> list[AuditRecord]:
        return []

    def flushed(self) -> None:
        pass

    def claimed(self, run: Run) -> Sequence[AuditRecord]:
        return ()

    dispatched = ended = claimed

    def failed(self, error: StoreError) -> None:
        pass


@dataclass
class PassReport:
    """What one pass did: its plan and the latest record of every run it touched."""

    plan: Plan
    commit: str | None
    runs: dict[int, Run] = field(default_factory=dict)
    held: dict[int, Hold] = field(default_factory=dict)  # pending runs a window or freeze holds
    # Set when `Engine.stop` ended the pass early: the runs of the pass it left pending
    # (those a deny window holds excepted: a full pass leaves them too) and those it stopped
    # when the grace period ended (recorded `unknown`), by id.
    left_behind: list[int] | None = None
    # Runs of other passes (or of nobody yet) still pending or running when this pass ended:
    # a pass with nothing of its own to do is not "all done" while they wait.
    elsewhere: int = 0

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.status.value for r in self.runs.values()).items()))

    @property
    def exit_code(self) -> int:
        """SPEC §4: 1 when a run of this pass ended failed, blocked or unknown."""
        return 1 if any(r.status.is_problem for r in self.runs.values()) else 0


class _Tracker:
    """The executed state during a drain, updated in place as runs change.

    Rebuilding `ExecutedState` from the store after every run would make a pass quadratic:
    this drain's own writes update it in place, and `refresh` re-reads just the runs that
    changed elsewhere.
    """

    def __init__(self, executed: ExecutedState):
        self.latest = dict(executed.latest)
        self.on_machine = dict(executed.latest_on_machine)
        self.seen = set(executed.tasks_seen)
        self.known: dict[int, Run] = {r.id: r for r in executed.active}

    def update(self, run: Run) -> None:
        if not run.manual:  # a manual run is in the queue, not in the bookkeeping
            for index, key in (
                (self.latest, (run.task, run.machine, run.version)),
                (self.on_machine, (run.task, run.machine)),
            ):
                if key not in index or index[key].id <= run.id:
                    index[key] = run
            self.seen.add(run.task)
        if run.status.is_active:
            self.known[run.id] = run
        else:
            self.known.pop(run.id, None)

    def refresh(self, store: StateStore, active: list[Run], ours: set[int]) -> list[Run]:
        """Learn the active runs, and how the ones that stopped being active ended (in one
        read), which it returns. `ours` run in this drain: it learns their ends as it records
        them."""
        active_ids = {r.id for r in active}
        gone = [i for i in self.known if i not in active_ids and i not in ours]
        ended = list(store.get_runs(gone).values()) if gone else []
        for run in ended:
            self.update(run)
        for run in active:
            self.update(run)
        return ended

    def view(self, active: list[Run]) -> ExecutedState:
        return ExecutedState(self.latest, tuple(active), self.on_machine, self.seen)  # type: ignore[arg-type]


class Engine:
    """Runs passes (and worker loops) against one store with one set of transports."""

    def __init__(
        self,
        store: StateStore,
        transports: Mapping[str, Transport],
        *,
        concurrency: int = 16,
        clock: Clock = utc_now,
        on_event: Callable[[Event], None] = lambda e: None,
        resolve: SecretResolver = no_vault,
        redactor: Redactor | None = None,
        journal: Journal | None = None,
    ):
        self.store = store
        # Makes the audit entries of the run changes the engine writes, so the store writes
        # them in the change's own transaction. Without one, `on_event` audits (one entry at
        # a time, as events arrive): the events then say they were not audited.
        self.journal: Journal = journal or _Unjournaled()
        self.journaled = journal is not None
        self.transports = transports
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self.on_event = on_event
        self.resolve = resolve
        # Every output and error passes through it before it is stored or shown.
        self.redact = redactor or Redactor()
        self.owner = process_owner()
        self.stop = threading.Event()  # set: claim nothing more, let running runs finish
        # After `stop`, how long running runs may take before they are stopped and recorded
        # `unknown` (None: wait for them however long they take).
        self.grace: float | None = None
        # Whether a pass waits for the retry back-offs of its runs (`--once`: its report is
        # final). The daemon does not: a retry comes due at the next tick, and a pass that
        # waited would keep its lock and threads for the whole back-off.
        self.wait_for_retries = True
        # Until when a pass waits for the pauses of rollouts (`--once`, bounded by
        # `--max-wait`): a pause that ends later leaves its batch pending for a later pass.
        # None: a pass never waits for one (the daemon: the next tick looks again).
        self.pause_deadline: datetime | None = None
        self.planned = threading.Event()  # set once a pass has recorded its plan
        # `--stream`: shown each run's new output lines (redacted) as they come.
        self.printer: Printer | None = None

    def run_pass(
        self,
        desired: DesiredState,
        commit: str | None,
        lock_timeout: float,
        *,
        before_plan: Callable[[], None] | None = None,
    ) -> PassReport:
        """One full pass; returns when every run it enqueued (or found) has ended, retries
        included. Runs held by a deny window stay pending for a later pass.

        `before_plan` runs under the pass lock before anything is written (the commit
        lineage check): if it raises, the pass changes nothing."""
        report = PassReport(plan=Plan(), commit=commit)
        try:
            with self.store.pass_lock(lock_timeout), _PLANNING:
                adopted = self._plan(desired, commit, report, before_plan)
        finally:
            with _ACTIVITY_GUARD:
                _PLANS[id(self.store)] += 1
        self.planned.set()
        _Drain(self, desired, report, adopted=adopted).run()
        return report

    def _plan(
        self,
        desired: DesiredState,
        commit: str | None,
        report: PassReport,
        before_plan: Callable[[], None] | None,
    ) -> set[int]:
        """Under the pass lock: recover dead runs, plan, record the plan, adopt the pending
        runs of dead planners. Returns the adopted runs' ids."""
        if before_plan is not None:
            before_plan()
        # Runs this process holds are alive: another of its passes drains them (the daemon).
        # The store spares the runs of other live holders too (see `StateStore.recover`).
        recovered = self.store.recover(self.clock(), keep_owner=self.owner)
        for run in recovered:
            self._note(report, Event(Kind.RECOVERED, self._reap(desired, run)))
        self._adopt_lost(desired, report, {run.id for run in recovered})
        report.plan = make_plan(desired, self.store.snapshot(), self.clock())
        # Alive before its runs exist: no pass elsewhere may take them for a dead planner's.
        self.store.beat_drain(self.owner)
        try:
            # The plan's audit entry commits with its runs: no run is queued without the
            # entry that says which pass enqueued it, at which commit.
            inserted = self.store.record_plan(
                report.plan, commit, self.clock(), self.owner, self.journal.plan
            )
        except StoreError as exc:
            self.journal.failed(exc)
            raise
        failpoints.hit("after_plan")
        self.journal.planned()
        for run in inserted:
            self._note(report, Event(Kind.ENQUEUED, run, run.reason))
        self._note_cancels(report)
        return self._adopt_orphans()

    def _adopt_orphans(self) -> set[int]:
        """The pending runs that a dead pass planned (one that was killed, or ended leaving
        runs a deny window held): this pass takes them over, runs them and reports them as
        its own, a run waiting out a retry back-off included. `--once` then waits that
        back-off out, as it does for its own retries, so its report and exit code say how
        the run ended; nothing else would take the run before some later pass planned."""
        dead = {
            run_id: planner
            for run_id, (planner, alive) in self.store.pending_planners(self.owner).items()
            if not alive
        }
        if not dead:
            return set()
        return set(self.store.take_over(dead, self.owner))

    def work(self, desired: Callable[[], DesiredState]) -> None:
        """`reconcile worker`: execute queued runs until `stop` is set (the CLI offers it on
        a PostgreSQL queue only).

        `desired` is asked again at every round, so a worker follows the inventory it is
        given; runs of versions it does not know are left to the planner and other workers.
        """
        report = PassReport(plan=Plan(), commit=None)
        _Drain(self, desired, report, forever=True).run()

    def run_now(self, desired: DesiredState, runs: Sequence[Run]) -> PassReport:
        """`reconcile run --wait`: execute `runs` (manual runs this process just enqueued as
        their planner) as a pass drains its own, and return when every one of them has
        ended, wherever it ran (a worker may take one first), retries included. Nothing else
        in the queue is claimed. A run a deny window, a freeze or an approval holds is left
        pending (`report.held` says why), as a pass leaves it."""
        report = PassReport(plan=Plan(), commit=None)
        report.runs.update((run.id, run) for run in runs)
        self.planned.set()
        _Drain(self, desired, report, only={run.id for run in runs}).run()
        return report

    def _note_cancels(self, report: PassReport) -> None:
        for cancel in report.plan.cancel:
            cancelled = self.store.get_run(cancel.run)
            if cancelled is not None and cancelled.status is RunStatus.CANCELLED:
                self._note(report, Event(Kind.CANCELLED, cancelled, cancel.reason))

    def _adopt_lost(self, desired: DesiredState, report: PassReport, skip: set[int]) -> None:
        """Runs that ended `unknown` in earlier passes (a lost connection, a partition, a
        machine that could not be asked) whose target may still hold their result: adopt it
        now that the machine may answer again. A machine that still cannot be reached is
        asked once per pass; one that answers with nothing is not asked about that run again.
        Only adopted runs join the report (an unchanged `unknown` is not this pass's)."""
        since = self.clock() - ADOPT_WINDOW
        unreachable: set[str] = set()
        for run in self.store.list_runs([RunStatus.UNKNOWN], limit=ADOPT_LIMIT):
            if run.id in skip or run.machine in unreachable or not awaiting_result(run, since):
                continue
            spec = desired.tasks.get(run.task)
            try:
                # A command still running is left to finish (adopted at a later pass), unless
                # the plan runs the task again now: it is idempotent, or `queue retry` asked
                # for it. Then the orphan must stop first, or two copies would run at once.
                again = spec is None or spec.idempotent or run.retry_requested
                resolved = self._ask(desired, run, stop=again)
            except TransportError:
                unreachable.add(run.machine)
                continue
            if resolved.status is not RunStatus.UNKNOWN:
                self._note(report, Event(Kind.RECOVERED, resolved))

    def _ask(self, desired: DesiredState, run: Run, stop: bool = True) -> Run:
        """Ask `run`'s target for its result and adopt it; returns the run as it now stands.
        A target that answered that it kept nothing (its command stopped here, or never
        recorded) is noted on the run: no later pass asks again, nor adopts the exit the stop
        itself caused (143) as the task's result. Raises TransportError when it cannot be
        asked."""
        machine = desired.machines.get(run.machine)
        transport = self.transports.get(machine.transport) if machine is not None else None
        if transport is None:
            return run
        spec = desired.tasks.get(run.task)
        # Without the task, nothing can be adopted, but a command still running is stopped.
        kept = transport.reap(
            machine,
            run.id,
            attempt=run.attempt,
            command=spec.run if spec else None,
            stop=stop,
            key=run_key(run),  # never another store's result for the same run id
        )
        if kept is None:
            error = (run.error or "") + NOTHING_KEPT
            return self.store.adopt(run.id, RunStatus.UNKNOWN, error=error) or run
        if kept is STILL_RUNNING or spec is None:
            return run
        outcome = judge(kept, spec.timeout)
        adopted = self.store.adopt(
            run.id,
            outcome.status,
            exit_code=outcome.exit_code,
            output=self.redact(outcome.output) or "",
            error=self.redact(outcome.error),
        )
        # Only now may the target forget the output it kept (a pass killed before leaves it).
        transport.settle([run.id] if adopted else (), () if adopted else [run.id])
        return adopted or run

    def _reap(self, desired: DesiredState, run: Run) -> Run:
        """A run the dead pass had dispatched: stop its orphaned command before the plan may
        re-run it (an idempotent task's `unknown` run is re-run in this very pass), or adopt
        the result its target kept. Returns the run as it now stands."""
        if run.status is not RunStatus.UNKNOWN:
            return run
        try:
            return self._ask(desired, run)
        except TransportError as exc:
            log.warning("run %s: cannot ask %s about it: %s", run.id, run.machine, exc)
            return run

    def _note(self, report: PassReport, event: Event) -> None:
        report.runs[event.run.id] = event.run
        self.on_event(event)


class _Drain:
    """Starts runs as `dispatch.decide` allows, records their outcomes, and waits."""

    def __init__(
        self,
        engine: Engine,
        desired,
        report: PassReport,
        *,
        forever: bool = False,
        adopted: set[int] | None = None,
        only: set[int] | None = None,
    ):
        self.engine, self.store, self.report = engine, engine.store, report
        # The only runs this drain may claim (`Engine.run_now`); None: its own and orphans.
        self.only = only
        self.desired_source = desired if callable(desired) else (lambda: desired)
        self.desired: DesiredState = self.desired_source()
        self.forever = forever
        # The runs this pass reports and waits for: those it enqueued, recovered or adopted.
        self.mine = set(report.runs) | (adopted or set()) if not forever else set()
        self.running: dict[Future, Run] = {}
        self.others: list[Run] = []  # runs running elsewhere (`others_by_id`'s values)
        self.others_by_id: dict[int, Run] = {}
        # Where the store's change feed stands (`StateStore.run_changes`): None, read whole.
        self.cursor: object | None = None
        # Pending runs other passes planned, by id: (planner, alive). A pass claims only its
        # own runs and those of dead planners (adopting them first); a live pass's runs are
        # its own to claim, report, wait for and stop. A worker (`forever`) claims any run.
        self.planners: dict[int, tuple[str | None, bool]] = {}
        self.foreign: set[int] = set()  # pending runs of live planners
        self.planners_due = False  # a planner may have died since they were read
        self.heartbeats = _Heartbeats(self.store, self.running, None if forever else engine.owner)
        # The output of the runs executing here, for followers (the store) and `--stream`.
        self.live = LiveRuns(self.store, engine.redact, engine.printer)
        self.window_held: set[int] = set()  # pending runs a deny window holds this round
        self.chose_to_start = False  # whether this round's decision started anything
        self.swept_at = 0.0
        self.seen_changes: tuple | None = None  # the changes of the last re-read (`_changes`)
        self.stale = True  # something this drain saw says the queue changed elsewhere
        self.abandoned: set[int] = set()  # stopped at the end of the grace period
        self.stopping_since: float | None = None
        # The last decision, and what makes the next round decide on the whole queue again
        # rather than only fill freed capacity from it (see `_rethink`).
        self.decided: Decision | None = None
        self.changed = True
        self.awaited: set[str] = set()  # tasks that pending runs name in `after`
        # Awaited tasks whose runs succeeded since the last decision: the runs waiting for
        # them may start (`_release`), and nothing else needs deciding again for it.
        self.released: set[str] = set()
        self.decided_held_due: datetime | None = None
        self.retry_holds: list[tuple[Run, datetime]] = []
        self.pause_holds: list[tuple[Run, datetime]] = []  # runs held by a rollout's pause
        self.blocks_confirmed = False  # the blocks of this round were decided on a snapshot
        # Whether the queue was re-read since the last decision: only then may runs of its
        # order have been taken elsewhere or changed (a pass alone needs no filtering).
        self.reread = False
        self.popped = 0  # runs taken out of `pending` since it was last compacted
        self.poll = EAGER_POLL_SECONDS  # a pass's next look, with nothing running here
        # The last claim got fewer runs than capacity allowed because some were refused:
        # the next round comes at once (`_wait`). `refused_rounds`: how many in a row.
        self.reclaim = False
        self.refused_rounds = 0
        # Runs a claim passed over (`_claimed`), to be judged by the next re-read: taken
        # elsewhere, they only left the queue; still pending, they are decided on again.
        self.refused: set[int] = set()
        self.prepared = False  # the transports were told of the queue's machines
        # Ends of runs left for the next round to record with the runs it starts (`_ended`).
        self.deferred: _Ends | None = None
        self.listening = False  # the store's listener for ends is open (`_listen_for_ends`)

    def run(self) -> None:
        with _ACTIVITY_GUARD:
            _DRAINS[id(self.store)] += 1
        try:
            self._run()
        finally:
            with _ACTIVITY_GUARD:
                _DRAINS[id(self.store)] -= 1

    def _run(self) -> None:
        self.tracker = _Tracker(self.store.snapshot())
        # The queue is read by the first round's re-read (a whole one: no cursor yet), which
        # also lets the transports get ready for its machines (`_prepare_transports`).
        self.pending = {}
        with (
            ThreadPoolExecutor(
                max_workers=self.engine.concurrency, thread_name_prefix="run"
            ) as pool,
            self.heartbeats,
            self.live,
        ):
            self.pool = pool
            try:
                try:
                    while self._round():
                        pass
                except BaseException:
                    with suppress(StoreError):  # results the round had not recorded yet
                        self._flush_ends()
                    raise
            except KeyboardInterrupt as stop:  # a second signal: stop what runs now, leave
                self._abandon_running(
                    "the reconciler was stopped at once (a second signal) "
                    "while this run was executing"
                )
                # What the pass did and left undone, for the caller's summary (issue 19).
                self.report.left_behind = self._left_behind()
                stop.report = self.report
                raise
        if self.forever:
            return
        if self.engine.stop.is_set():
            self.report.left_behind = self._left_behind()
        active = self.store.run_changes(None).runs  # every active run, in one read
        self.report.elsewhere = sum(1 for run in active if run.id not in self.mine)

    def _prepare_transports(self) -> None:
        """Let each transport get ready for the machines of the queue (the SSH one opens their
        connections at once, in the background) while the first rounds claim and dispatch.
        Not for a run a freeze, a window or an approval holds: a machine frozen for
        maintenance is not logged in to at every pass (a run whose hold lifts mid-drain
        connects when it starts)."""
        by_transport: dict[str, dict[str, object]] = {}
        now = self.engine.clock()
        for run in self.pending.values():
            machine = self.desired.machines.get(run.machine)
            if machine is None or machine.transport not in self.engine.transports:
                continue
            ready = by_transport.setdefault(machine.transport, {})
            if machine.name in ready:
                continue  # a run of it already starts: the others need no look at their holds
            hold = run_hold(run, self.desired, now)
            if hold is not None and hold.kind is not HoldKind.RETRY:
                continue
            ready[machine.name] = machine
        for name, machines in by_transport.items():
            if machines:
                self.engine.transports[name].prepare(machines.values())

    def _left_behind(self) -> list[int]:
        """The runs of this pass a stop left undone: still pending (not held by a window),
        or stopped when the grace period ended."""
        return sorted(
            run.id
            for run in self.report.runs.values()
            if (run.status.is_active and run.id not in self.report.held) or run.id in self.abandoned
        )

    def _round(self) -> bool:
        """One scheduling round; False when the drain is over."""
        now = self.engine.clock()
        self._refresh()
        if not self.prepared:
            self.prepared = True
            self._prepare_transports()
        if self.refused:
            # Passed over and still pending as far as the re-read tells (its machine was
            # full elsewhere, say): only a whole decision tries it again, as the order
            # left it out. Taken or ended elsewhere, it left the queue: the order holds.
            self.changed |= any(run_id in self.pending for run_id in self.refused)
            self.refused = set()
        if self.released and not self._rethink(now):
            self._release(now)
        if self.deferred is not None and self._rethink(now):
            self._flush_ends()  # a whole decision: on the queue as it is once they are recorded
        mine = [*self.running.values()]
        elsewhere = [self.pending[i] for i in self.foreign if i in self.pending]
        if self.only is not None:  # the rest of the queue is someone else's to start
            elsewhere += [
                r for i, r in self.pending.items() if i not in self.only and i not in self.foreign
            ]
        if self._rethink(now):
            claimable = [
                r
                for r in self.pending.values()
                if r.id not in self.foreign and (self.only is None or r.id in self.only)
            ]
            decision = decide(
                claimable,
                [*mine, *self.others],
                self.desired,
                self.tracker.view([*self.pending.values(), *mine, *self.others]),
                now,
                self.engine.concurrency + len(self.others),
                elsewhere,
            )
            fresh = True
        else:  # only capacity changed: the next runs in the order decided last time
            waiting = self.decided.waiting
            if self.reread:  # others took runs, or put one back with a back-off: as read
                waiting = [
                    (self.pending[run.id], priority)
                    for run, priority in waiting
                    if run.id in self.pending
                ]
            start, waiting, window_opened = fill(
                waiting,
                [*mine, *self.others],
                self.desired,
                now,
                self.engine.concurrency + len(self.others),
            )
            if window_opened:  # a deny window opened: decide on the whole queue again
                self._flush_ends()
                self.changed = True
                return True
            decision = replace(self.decided, start=start, waiting=waiting)
            fresh = False
        self._remember(decision, fresh)
        if decision.block or decision.halt:
            if not self.blocks_confirmed:
                # Blocked and halted are final: first make sure the dependency (the runs that
                # spent the budget) really ended badly. The tracker learns how runs ended only
                # if it saw them active; one that another worker claimed and finished between
                # two re-reads would read as never run.
                self.tracker = _Tracker(self.store.snapshot())
                self.blocks_confirmed = self.stale = self.changed = True
                return True
            self._block(decision.block, now)
            self._block(decision.halt, now, RunStatus.HALTED)
            self.blocks_confirmed = False
            self.changed = True
            return True  # a blocked run may block its own dependents: decide again
        self.blocks_confirmed = False
        self.chose_to_start = bool(decision.start)
        if decision.start and not self.engine.stop.is_set():
            self._start(decision.start, self._spares(decision, mine, now))
        self._flush_ends()  # left for a round that started nothing after all
        if fresh:  # the holds change only with a whole decision
            self.window_held = {run.id for run, hold in decision.held if _lasting(hold)}
        # A pass waits for the retries of its own runs. Another pass's back-off is that
        # pass's to wait for, unless a run of this pass still waits in the queue: it may
        # wait for that very retry (an `after` dependency), so it is woken when it comes due.
        # A worker waits for every run anyway.
        waiting_mine = not self.forever and self._mine_waiting()  # a worker has no runs
        if fresh:  # runs held only by their retry back-off
            self.retry_holds = [
                (run, hold.until) for run, hold in decision.held if hold.kind is HoldKind.RETRY
            ]
        retry_waits = [
            until
            for run, until in self.retry_holds
            if self.engine.wait_for_retries
            and (self.forever or waiting_mine or run.id in self.mine)
        ]
        if fresh:  # the pauses of rollouts that end before the pass stops waiting
            self.pause_holds = [
                (run, hold.until)
                for run, hold in decision.held
                if hold.kind is HoldKind.ROLLOUT and hold.until is not None
            ]
        deadline = self.engine.pause_deadline
        retry_waits += [
            until
            for run, until in self.pause_holds
            if deadline is not None and until <= deadline and (self.forever or run.id in self.mine)
        ]
        if waiting_mine and self.engine.wait_for_retries:
            # A live pass's retry that a run of this pass may wait for: look again when due.
            retry_waits += [r.not_before for r in elsewhere if r.not_before and r.not_before > now]
        if fresh:
            self._record_held(decision.held)
        return self._wait(retry_waits, now)

    def _rethink(self, now: datetime) -> bool:
        """Whether this round must decide on the whole queue, or may take the next runs of
        the last decision's order (`dispatch.fill`): only when nothing but capacity changed
        since (the queue was not re-read, no run of this drain ended other than by succeeding
        or was one a pending run waits for, no hold ran out, no claim was refused)."""
        if self.changed or self.decided is None:
            return True
        due = self.decided_held_due
        return due is not None and now >= due

    def _release(self, now: datetime) -> None:
        """Move the runs that waited for the tasks of `released` into the last decision's
        order (`dispatch.release`), or ask for a whole decision when one of them needs it."""
        decided = self.decided
        # Runs taken or cancelled elsewhere left the queue; the rest as last read.
        awaiting = tuple(
            (self.pending[run.id], priority)
            for run, priority in decided.awaiting
            if run.id in self.pending
        )
        active = [*self.pending.values(), *self.running.values(), *self.others]
        released = release(
            replace(decided, awaiting=awaiting),
            self.released,
            active,
            self.desired,
            self.tracker.view(active),
            now,
        )
        self.released = set()
        if released is None:
            self.changed = True
        else:
            self.decided = released

    def _remember(self, decision: Decision, fresh: bool) -> None:
        """Keep `decision` for the next rounds' `fill`; after a whole decision, also the tasks
        pending runs wait for (one of them ending makes the next round decide again) and when
        its first hold runs out."""
        if fresh:
            # A run of a rollout's later batch waits for the runs of its own task too.
            self.awaited = {
                dep
                for run in self.pending.values()
                if (spec := self.desired.tasks.get(run.task)) is not None
                for dep in (*spec.after, *((spec.id,) if spec.rollout else ()))
            }
            self.decided_held_due = min(
                (hold.until for _, hold in decision.held if hold.until is not None), default=None
            )
        self.decided = decision
        self.changed = self.reread = False
        self.released = set()

    def _mine_waiting(self) -> bool:
        """Whether a run of this pass is pending and not held by a deny window."""
        return any(
            run_id in self.mine and run_id not in self.window_held for run_id in self.pending
        )

    def _wait(self, retry_waits: list[datetime], now: datetime) -> bool:
        stopping = self.engine.stop.is_set()
        if stopping and self.running and self._grace_over():
            self._abandon_running()
            return False
        elsewhere = not stopping and (self.forever or self._mine_elsewhere())
        if not self.running and (stopping or not (retry_waits or elsewhere)):
            return False
        timeout = max(0.0, (min(retry_waits) - now).total_seconds()) if retry_waits else None
        # Others change the queue meanwhile (new commits, `queue cancel`, runs ended
        # elsewhere), and a stop signal must be noticed while runs are still going.
        timeout = POLL_SECONDS if timeout is None else min(timeout, POLL_SECONDS)
        if self.reclaim and not stopping:
            self.reclaim = False
            timeout = min(timeout, _reclaim_delay(self.refused_rounds))
        if stopping and self.engine.grace is not None and self.stopping_since is not None:
            left = max(0.0, self.engine.grace - (time.monotonic() - self.stopping_since))
            timeout = left if timeout is None else min(timeout, left)
        self._listen_for_ends()
        if not self.running:
            if not self.forever:
                timeout = min(timeout, self.poll)
                self.poll = min(self.poll * 2, POLL_SECONDS)
                # Its runs held elsewhere end it: woken by their ends where the store can
                # tell (the back-off stays the bound: cancels and sweeps send nothing).
                if not stopping and timeout > 0 and self.store.wait_for_ends(timeout) is not None:
                    return True
            elif timeout <= 0:
                return True
            elif not stopping and self.store.wait_for_runs(timeout) is not None:
                return True  # an idle worker: woken at once by a plan recorded elsewhere
            self.engine.stop.wait(timeout)
            return True
        done, _ = wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
        if done:
            self._ended([(self.running.pop(future), future) for future in done])
        return True

    def _listen_for_ends(self) -> None:
        """Once nothing of this pass is left to claim, have the store listen for the ends a
        pass waits on (`StateStore.wait_for_ends`), while its runs still run: the last of
        them, ended by a worker while this drain records its own, would otherwise end before
        the listener opens at the first wait, and the pass would notice only at its next
        poll. Not sooner: the listener costs a connection, and a worker never waits so."""
        if self.listening or self.forever or self._mine_waiting():
            return
        self.listening = True
        self.store.listen_for_ends()

    def _sweep(self) -> None:
        """Resolve the runs of dead holders (a killed pass, a dead worker) once their leases
        expire (on SQLite as soon as their process is gone). Every drainer does it, not only
        workers: a dead run still `running` counts against its machine's `max_parallel`, and a pass waiting for that
        machine would otherwise wait forever. Each one is reported as `recovered` (audited,
        alerted when `unknown`), as the recovery at the start of a pass reports them."""
        if time.monotonic() - self.swept_at < SWEEP_SECONDS:
            return
        self.swept_at = time.monotonic()
        # A planner may have died since its runs were judged; no write of the store says so.
        self.stale |= bool(self.foreign)
        self.planners_due |= bool(self.foreign)
        for run in self.store.sweep(LEASE_SECONDS, self.engine.clock()):
            self.stale = True
            log.warning(
                "run %s of %s on %s: its holder stopped heartbeating; now %s",
                run.id,
                run.task,
                run.machine,
                run.status.value,
            )
            self._note(Event(Kind.RECOVERED, self.engine._reap(self.desired, run)))

    def _grace_over(self) -> bool:
        if self.engine.grace is None:
            return False
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        return time.monotonic() - self.stopping_since >= self.engine.grace

    def _abandon_running(
        self,
        why: str = "the reconciler was stopped and its grace period "
        "ended while this run was executing",
    ) -> None:
        """The grace period is over: stop what still runs and record it `unknown` (it may
        have done part of its work), so the next pass does not wait on it."""
        now = self.engine.clock()
        for future, run in list(self.running.items()):
            machine = self.desired.machines.get(run.machine)
            transport = self.engine.transports.get(machine.transport) if machine else None
            if transport is not None:
                transport.reap(machine, run.id)
            self.live.end(run.id)
            try:
                record = self.store.finish(run.id, run.epoch, RunStatus.UNKNOWN, now, error=why)
            except LeaseLost:
                continue
            self.running.pop(future)
            self.abandoned.add(run.id)
            self._note(Event(Kind.FINISHED, record, record.error or ""))

    def _mine_elsewhere(self) -> bool:
        """Whether a run of this pass runs elsewhere (another pass, a worker), or is pending
        and may still start: runs elsewhere hold the capacity or the dependency it waits for,
        or this round chose runs to start (a claim may have lost a race: decide again). A run
        a deny window holds is left for a later pass, as is every pending run without
        `wait_for_retries`; with nothing running anywhere and nothing to start, a pending run
        cannot start without a later pass either (its dependency waits for a window)."""
        if any(run.id in self.mine for run in self.others):
            return True
        if not self.engine.wait_for_retries or not (
            self.others or self.chose_to_start or self.foreign
        ):
            return False
        return self._mine_waiting()

    def _refresh(self) -> None:
        """Re-read what other passes, workers and `queue cancel` changed, if anything did:
        the runs written since the last re-read where the store can tell (a round beside
        busy workers reads what they changed, not the whole queue), else every active run
        (`StateStore.run_changes`)."""
        if self.forever:
            desired = self.desired_source()
            self.changed |= desired is not self.desired
            self.desired = desired
        self._sweep()
        changes = self._changes()
        if changes is not None and changes == self.seen_changes and not self.stale:
            return  # only this drain wrote since the last re-read: it knows what it wrote
        self.seen_changes, self.stale = changes, False
        ours = {r.id for r in self.running.values()}
        if self.deferred is not None:  # ended here, recorded by this round: still ours
            ours |= {run.id for run, _ in self.deferred.ended}
        foreign_before = self.foreign
        feed = self.store.run_changes(self.cursor)
        self.cursor = feed.cursor
        apply = self._reread if feed.complete else self._apply
        moved, ended, unsure = apply(feed.runs, ours)
        if ended or moved:
            self.poll = EAGER_POLL_SECONDS
        self.others = list(self.others_by_id.values())
        if not self.forever and (feed.complete or moved or self.planners_due):
            self.planners_due = False
            self.planners = self.store.pending_planners(self.engine.owner)
            self.foreign = {i for i, (_, alive) in self.planners.items() if alive}
        # Runs taken or cancelled elsewhere only leave the queue, and runs that succeeded
        # elsewhere only free capacity, unless a pending run waits for their task: the last
        # decision's order still holds for the rest. Anything else is decided again.
        self.changed |= (
            moved
            or self.foreign != foreign_before
            or any(not run.status.is_success for run in ended)
        )
        self.released |= {run.task for run in ended if run.task in self.awaited}
        for run in self.others:
            if run.id in self.mine:
                self.report.runs[run.id] = run
        if self.forever or not unsure:
            return
        # Runs of this pass that ended elsewhere (another pass, a worker): learn how. Their
        # entry is the writer's (with its end, or by its own audit consumer): not again here.
        for run in self.store.get_runs(unsure).values():
            if not run.status.is_active:
                event = Event(Kind.FINISHED, run, run.error or "", audited=True)
                self.engine._note(self.report, event)

    def _reread(self, active: list[Run], ours: set[int]) -> tuple[bool, list[Run], list[int]]:
        """A complete re-read (`active`: every active run): whether a pending run is new or
        was claimed again since (`moved`), the runs that stopped being active elsewhere, and
        the runs of this pass that may have ended elsewhere (to be asked how)."""
        before = self.pending
        self.pending = {r.id: r for r in active if r.status is RunStatus.PENDING}
        self.others_by_id = {
            r.id: r for r in active if r.status is RunStatus.RUNNING and r.id not in ours
        }
        self.reread = True
        ended = self.tracker.refresh(
            self.store, [*self.pending.values(), *self.others_by_id.values()], ours
        )
        moved = any(
            run_id not in before or run.epoch != before[run_id].epoch
            for run_id, run in self.pending.items()
        )
        unsure = [
            run_id
            for run_id in self.mine - set(self.pending) - set(self.others_by_id) - ours
            if (known := self.report.runs.get(run_id)) is None or known.status.is_active
        ]
        return moved, ended, unsure

    def _apply(self, written: list[Run], ours: set[int]) -> tuple[bool, list[Run], list[int]]:
        """The runs written since the last re-read, applied to what this drain knows; returns
        what `_reread` does. The cost follows what changed, not the queue."""
        moved = False
        ended: list[Run] = []
        unsure: list[int] = []
        for run in written:
            was_pending = self.pending.pop(run.id, None)
            self.popped += was_pending is not None
            self.reread |= was_pending is not None
            if run.status is RunStatus.PENDING:
                moved |= was_pending is None or was_pending.epoch != run.epoch
                self.pending[run.id] = run
                self.reread = True
                self.others_by_id.pop(run.id, None)
            elif run.status is RunStatus.RUNNING:
                if run.id in ours:
                    continue
                self.others_by_id[run.id] = run
            else:
                self.others_by_id.pop(run.id, None)
                known = self.tracker.latest.get((run.task, run.machine, run.version))
                if run.id in ours or (
                    known is not None
                    and (known.id, known.epoch, known.status) == (run.id, run.epoch, run.status)
                ):
                    continue  # running here (swept? its end will say), or ended by this drain
                ended.append(run)
                if run.id in self.mine and (
                    (mine := self.report.runs.get(run.id)) is None or mine.status.is_active
                ):
                    unsure.append(run.id)
            self.tracker.update(run)
        return moved, ended, unsure

    def _changes(self) -> tuple | None:
        """What says whether the queue may have changed other than by this drain's writes:
        the store's change token (another connection wrote), and this process's other
        drains and plans on the store. None: it cannot tell (re-read every round)."""
        token = self.store.change_token()
        if token is None:
            return None
        with _ACTIVITY_GUARD:
            if _DRAINS[id(self.store)] > 1:
                return None
            return token, _PLANS[id(self.store)]

    def _block(self, blocks, now, status: RunStatus = RunStatus.BLOCKED) -> None:
        """End `blocks` (pending runs, each with its reason) `blocked` (a dependency failed) or
        `halted` (their rollout's failure budget is spent)."""
        kind = Kind.HALTED if status is RunStatus.HALTED else Kind.BLOCKED
        for run, reason in blocks:
            self.pending.pop(run.id, None)
            blocked = self.store.block(run.id, reason, now, status)
            self.stale |= blocked is None  # no longer pending: changed elsewhere
            if blocked is not None:
                self.tracker.update(blocked)
                self._note(Event(kind, blocked, reason))

    def _spares(self, decision: Decision, mine: list[Run], now: datetime) -> list[Run]:
        """On a shared queue, the runs to claim in place of any of `decision.start` that
        another worker took since the queue was read: `SPARES` times as many more of the
        order as capacity would let start after them (`fill`), so a lost race costs no slot
        and no round. Several: idle workers woken by one plan all read the same head of the
        queue, and each claims in turn after the others took theirs."""
        if not self.store.shared_queue or not decision.start:
            return []
        running = [*mine, *self.others, *decision.start]
        spares, _, _ = fill(
            decision.waiting,
            running,
            self.desired,
            now,
            len(running) + SPARES * len(decision.start),
        )
        return [
            run
            for run in spares
            if run.id not in self.planners and (self.only is None or run.id in self.only)
        ]

    def _start(self, runs: Sequence[Run], spares: Sequence[Run] = ()) -> None:
        """Claim `runs` and mark them dispatched in one durable transaction (group commit:
        `StateStore.start_batch`), then send their commands. The transaction carries the
        audit entries of its changes (with a journal), so a run's claim and dispatch records
        are durable before its command is sent; a crash before its commit leaves the runs
        pending, one after it dispatched runs that may not have run (recovered `unknown`),
        never a dispatched run without its record (DESIGN §5).
        `spares` are asked for after them, each taken only in place of one of `runs` that
        could not be claimed (`StateStore.claim_batch`'s `want`)."""
        requests: list[ClaimRequest] = []
        for run in runs:
            self.pending.pop(run.id, None)
            orphan = self.planners.pop(run.id, None)
            if orphan is not None and not self.store.take_over(
                {run.id: orphan[0]}, self.engine.owner
            ):
                self.stale = True  # another pass adopted it first (or it is no longer pending)
                continue
            requests.append(ClaimRequest(run.id, self.desired.machines[run.machine].max_parallel))
        # A dict keeps the slots of popped keys until it grows again, and iterating it walks
        # them: once as many runs have started as are left, compact it, or every round's
        # look for a waiting run of this pass would grow with the runs already started.
        self.popped += len(runs)
        if self.popped > len(self.pending):
            self.pending, self.popped = dict(self.pending), 0
        if not requests:
            return
        journal = self.engine.journal
        journal.check()  # an earlier audit write failed: dispatch nothing more
        # Stamped with the time of the claim, not of the round: other processes' runs on the
        # same machine start and end in between.
        now = self.engine.clock()
        want = len(requests) if spares else None
        requests += [
            ClaimRequest(run.id, self.desired.machines[run.machine].max_parallel) for run in spares
        ]
        if self.engine.journaled:
            started = self._start_batch(requests, now, want, runs, spares)
        else:
            started = self._claim_then_mark(requests, now, want, runs, spares)
        for run in started:
            spec = self.desired.tasks[run.task]
            machine = self.desired.machines[run.machine]
            future = self.pool.submit(
                execute,
                run,
                spec,
                machine,
                self.engine.transports[machine.transport],
                self.engine.resolve,
                self.live.start(run),
            )
            self.running[future] = run

    def _start_batch(
        self,
        requests: list[ClaimRequest],
        now: datetime,
        want: int | None,
        runs: Sequence[Run],
        spares: Sequence[Run],
    ) -> list[Run]:
        """Group commit: the ends the last round left, the claims, their dispatch marks and
        the audit entries of all in one durable transaction (`StateStore.round_batch`).
        Returns the runs whose commands may be sent."""
        journal = self.engine.journal

        def claimed_entries(run: Run) -> Sequence[AuditRecord]:
            # Called inside the batch's transaction, after its claims, before its commit:
            # a crash here leaves every run of the batch pending (the claims die with it).
            failpoints.hit("after_claim")
            return journal.claimed(run)

        # The ends the last round left (`_ended`) are recorded first, in the same transaction.
        done, self.deferred = self.deferred, None
        if done is not None:
            failpoints.hit("before_result")
        tries = []

        def write() -> tuple[Batch, Batch]:
            tries.append(1)
            return self.store.round_batch(
                done.ends if done is not None else (),
                requests,
                self.engine.owner,
                now,
                ended=journal.ended,
                claimed=claimed_entries,
                dispatched=journal.dispatched,
                leading=journal.leading(),
                want=want,
            )

        try:
            recorded, started = self._batch(write)
        except BaseException:
            # The ends did not fail, the round did: they go back to be recorded alone (`_run`
            # flushes them on its way out), or a success would be left `running`.
            if done is not None and self.deferred is None:
                self.deferred = done
            raise
        journal.flushed()
        if done is not None:
            self._recorded(done, recorded, retried=len(tries) > 1)
        self._claimed(started, runs, spares)
        if not started.runs:
            return []
        failpoints.hit("after_dispatch")
        for run in started.runs:
            self._note(Event(Kind.STARTED, run, audited=True))
        return started.runs

    def _claim_then_mark(
        self,
        requests: list[ClaimRequest],
        now: datetime,
        want: int | None,
        runs: Sequence[Run],
        spares: Sequence[Run],
    ) -> list[Run]:
        """Without a journal (the audit consumer writes each entry as its event comes): claim
        in one transaction, let `started` be audited, then mark dispatched in a second
        (durable) one, so the entries are written before the runs are marked dispatched (a
        run whose entry could not be written is claimed, never sent: recovered pending)."""
        claimed = self._batch(
            lambda: self.store.claim_batch(requests, self.engine.owner, now, want=want)
        )
        self._claimed(claimed, runs, spares)
        if not claimed.runs:
            return []
        failpoints.hit("after_claim")
        for run in claimed.runs:
            self._note(Event(Kind.STARTED, run, audited=False))
        marked = self._batch(lambda: self.store.dispatch_batch(claimed.runs, self.engine.clock()))
        for run_id in marked.refused:
            log.warning("run %s: lease lost before its command was sent; not sending it", run_id)
        failpoints.hit("after_dispatch")
        return marked.runs

    def _claimed(self, claimed: Batch, runs: Sequence[Run], spares: Sequence[Run]) -> None:
        """Learn what a claim batch of `runs` (and `spares`) took and refused."""
        # Refused: cancelled, taken since we looked, or its machine is full. Unclaimed and
        # not a spare: an end of the same round was refused (nothing was claimed).
        spare_ids = {run.id for run in spares}
        unclaimed = [i for i in claimed.unclaimed if i not in spare_ids]
        back = [*claimed.refused, *unclaimed]
        if back:
            wanted = {run.id: run for run in [*runs, *spares]}
            for run_id in back:  # as far as we know: the next re-read tells
                self.pending[run_id] = wanted[run_id]
            self.stale = True
            # Left the order: only a whole decision retries them. A refused run is usually
            # one another worker took first (the drains of a shared queue read the same
            # head of it): the next round's re-read tells (`_round`), so a lost race costs
            # no whole decision, and the ends of the runs that freed the slots may still be
            # recorded with the next claims (`_may_defer`).
            self.refused.update(claimed.refused)
            self.changed |= bool(unclaimed)
        # Capacity a refusal left free is filled by the next round at once, not after the
        # next run ends or the next poll (an idle worker would wait a whole poll interval);
        # refused again and again (its machines full elsewhere), it looks less often.
        self.reclaim = len(claimed.runs) < len(runs) and bool(claimed.refused)
        self.refused_rounds = self.refused_rounds + 1 if self.reclaim else 0
        taken = {run.id for run in spares} & {run.id for run in claimed.runs}
        if taken:  # spares that took a refused run's place: out of the queue and the order
            for run_id in taken:
                self.pending.pop(run_id, None)
            self.popped += len(taken)
            self.decided = replace(
                self.decided,
                waiting=tuple(w for w in self.decided.waiting if w[0].id not in taken),
            )

    def _batch(self, write: Callable[[], Batch]) -> Batch:
        """A batch write, tried again as `_with_retries` does (a batch that failed changed
        nothing: a busy SQLite file, a dropped connection), so a transient error does not end
        the pass and lose the results of the runs in flight. A failure that stays is an
        audit failure too (the journal made the batch's entries and remembers it: nothing
        more is dispatched in this pass)."""
        try:
            return _with_retries(write)
        except StoreError as exc:
            self.engine.journal.failed(exc)
            raise

    def _ended(self, ended: list[tuple[Run, Future]]) -> None:
        """The runs that ended: record their outcomes in one transaction, or, when each
        succeeded and no pending run waits for its task (the next round only fills the
        capacity they freed), leave them to be recorded by that round's own transaction
        with the runs it starts (`_Ends`, `StateStore.round_batch`)."""
        now = self.engine.clock()
        outcomes = self._outcomes(ended)
        self._learn_lost([run.id for run, _ in ended if run.id not in outcomes])
        if not outcomes:  # every lease lost: nothing of theirs to record
            return
        ends = [self._end_of(run, outcome, now) for run, outcome in outcomes.values()]
        done = _Ends(ended, outcomes, ends)
        if self._may_defer(done):
            self.deferred = done
            return
        self._write_ends(done, now)

    def _may_defer(self, done: _Ends) -> bool:
        """Whether the next round may record `done` with the runs it starts: only with a
        journal (the round's transaction carries the entries), while not stopping, when
        the next round will only fill freed capacity from the order last decided (every
        end a success no pending run waits for: nothing to decide again) and that order
        still holds runs to start."""
        return (
            self.engine.journaled
            and not self.engine.stop.is_set()
            and not self.changed
            and self.decided is not None
            and bool(self.decided.waiting)
            and all(end.retry_at is None and end.status is RunStatus.SUCCEEDED for end in done.ends)
            and not any(run.task in self.awaited for run, _ in done.outcomes.values())
        )

    def _flush_ends(self) -> None:
        """Record the ends left for this round when it starts nothing after all."""
        done, self.deferred = self.deferred, None
        if done is not None:
            self._write_ends(done, self.engine.clock())

    def _write_ends(self, done: _Ends, now: datetime) -> None:
        failpoints.hit("before_result")
        tries = []

        def write() -> Batch:
            tries.append(1)
            return self.store.end_batch(done.ends, now, self.engine.journal.ended)

        self._recorded(done, self._batch(write), retried=len(tries) > 1)

    def _outcomes(self, ended: list[tuple[Run, Future]]) -> dict[int, tuple[Run, Outcome]]:
        """How each run that ended did (its output redacted), by id; a run whose lease was
        lost is left out (its result is not ours to record)."""
        outcomes: dict[int, tuple[Run, Outcome]] = {}
        for run, future in ended:
            # Its output as followers saw it (when they could), and the kill that stopped it.
            final, kill = self.live.end(run.id)
            try:
                outcome = future.result()
            except LeaseLost as exc:
                log.warning("run %s: %s; abandoning it", run.id, exc)
                continue
            except Exception as exc:  # a bug in an attempt must not kill the whole pass
                log.error("run %s: internal error: %s", run.id, exc)
                log.debug("run %s: traceback", run.id, exc_info=True)
                outcome = Outcome(RunStatus.FAILED, error=f"internal error: {exc}", retryable=False)
            if outcome.unstreamed:  # the verify's section was not streamed live
                tail = self.engine.redact(outcome.unstreamed) or ""
                if final is not None:
                    final = _joined(final, tail)
                if self.engine.printer is not None:  # `--stream` shows it after the command's
                    self.engine.printer(run, tail)
            outcome = replace(
                outcome,
                output=final if final is not None else self.engine.redact(outcome.output) or "",
                error=self.engine.redact(
                    kill.describe()
                    if kill is not None and outcome.status is RunStatus.KILLED
                    else outcome.error
                ),
            )
            if outcome.unreachable:
                self._note(Event(Kind.UNREACHABLE, run, outcome.error or ""))
            outcomes[run.id] = (run, outcome)
        return outcomes

    def _recorded(self, done: _Ends, batch: Batch, *, retried: bool) -> None:
        """Learn what the write of `done` recorded (`batch`): settle the targets, update the
        tracker and the queue, report each end."""
        ended, outcomes = done.ended, done.outcomes
        written = list(batch.runs)
        epochs = {end.run_id: end.epoch for end in done.ends}
        lost = []
        for run_id in batch.refused:
            # A write retried after a dropped connection finds what its first try committed.
            landed = self.store.get_run(run_id) if retried else None
            if (
                landed is not None
                and landed.epoch == epochs[run_id]
                and landed.status is not RunStatus.RUNNING
            ):
                written.append(landed)
                continue
            log.warning(
                "run %s: lease lost; its result was not recorded (another worker took it "
                "over after its lease expired)",
                run_id,
            )
            lost.append(run_id)
        self._learn_lost(lost)
        # Only now may a target forget what it kept of these results (the SSH wrapper's
        # output file): a pass killed before its end batch leaves them to be adopted.
        recorded = {record.id for record in written}
        unrecorded = [run.id for run, _ in ended if run.id not in recorded]
        for transport in self.engine.transports.values():
            transport.settle(recorded, unrecorded)
        audited = self.engine.journaled
        for record in written:
            _, outcome = outcomes[record.id]
            self.tracker.update(record)
            # A failure may block the runs after it, a retry queues a run: the next round
            # decides on the whole queue again. A success may start the runs after it:
            # only those are looked at again (`_release`).
            if not record.status.is_success:
                self.changed = True
            elif record.task in self.awaited:
                self.released.add(record.task)
            if record.status is RunStatus.PENDING:
                self.pending[record.id] = record
                self._note(Event(Kind.RETRYING, record, outcome.error or "", audited))
            else:
                self._note(Event(Kind.FINISHED, record, outcome.error or "", audited))

    def _learn_lost(self, run_ids: list[int]) -> None:
        """Learn what became of runs whose lease this drain lost (the process was stopped or
        cut off past its lease, and another pass or worker swept them): their writes were
        skipped while they were still running here, so without this the report kept them
        `running` and a pass exited 0 over a run that ended `unknown`. Their end is the
        sweeper's (audited and alerted there): only this pass's report learns it."""
        if not run_ids:
            return
        for run in self.store.get_runs(run_ids).values():
            self.tracker.update(run)
            self.changed = True
            if run.status is RunStatus.PENDING:
                self.pending[run.id] = run
            elif run.status is RunStatus.RUNNING:
                self.others_by_id[run.id] = run
            elif not self.forever and run.id in self.mine:
                event = Event(Kind.FINISHED, run, run.error or "", audited=True)
                self.engine._note(self.report, event)

    def _end_of(self, run: Run, outcome: Outcome, now: datetime) -> RunEnd:
        spec = self.desired.tasks.get(run.task)
        try:
            retry_at = next_attempt_at(spec.retry, run, outcome, now) if spec else None
        except (ValueError, OverflowError) as exc:  # a policy that cannot be computed
            log.error("run %s: cannot compute its next attempt: %s", run.id, exc)
            retry_at = None
        return RunEnd(
            run.id,
            run.epoch,
            outcome.status,
            exit_code=outcome.exit_code,
            output=outcome.output,
            error=outcome.error,
            retry_at=retry_at,
        )

    def _note(self, event: Event) -> None:
        """Report `event` in this pass's report if its run is the pass's own (it enqueued,
        recovered or found it: see `_run`). A run of another pass that this drain happened
        to execute, block or sweep is that pass's to report and to wait for (the event still
        reaches the audit log, alerts and progress)."""
        if self.forever or event.run.id in self.mine:
            self.engine._note(self.report, event)
        else:
            self.engine.on_event(event)

    def _record_held(self, held) -> None:
        """Note runs a deny window or a freeze holds; a retry's own wait was announced by
        `retrying`."""
        for run, hold in held:
            if hold.kind is HoldKind.RETRY:
                continue
            if self.report.held.get(run.id) != hold:
                self.report.held[run.id] = hold
                if not self.forever and run.id in self.mine:
                    self.report.runs.setdefault(run.id, run)
                self.engine.on_event(Event(Kind.HELD, run, hold.describe(), hold=hold))


@dataclass
class _Ends:
    """Runs that ended (with their futures), how each did (by id; a run whose lease was lost
    has none) and the ends to record."""

    ended: list[tuple[Run, Future]]
    outcomes: dict[int, tuple[Run, Outcome]]
    ends: list[RunEnd]


def _reclaim_delay(refused_rounds: int) -> float:
    """How soon a drain looks again after `refused_rounds` claims in a row were refused part
    of what they asked for: at once after the first (another claimer took those runs: the
    queue holds others), then from EAGER_POLL_SECONDS doubling up to POLL_SECONDS (their
    machines are full elsewhere: looking at once would only be refused again)."""
    if refused_rounds <= 1:
        return 0.0
    return min(EAGER_POLL_SECONDS * 2 ** (refused_rounds - 2), POLL_SECONDS)


def _joined(streamed: str, tail: str) -> str:
    """The streamed output of a run with what followed it unstreamed (the verify's section),
    within the stored output's cap (its head is dropped first)."""
    separator = "" if not streamed or streamed.endswith("\n") else "\n"
    return cap(f"{streamed}{separator}{tail}", OUTPUT_CAP)


def _lasting(hold: Hold) -> bool:
    """Whether a hold keeps its run pending past this pass unless it lifts: not a retry's
    back-off, nor a rollout batch waiting for the batch before it (that batch's runs, here
    or elsewhere, end within the pass)."""
    if hold.kind is HoldKind.RETRY:
        return False
    return not (hold.kind is HoldKind.ROLLOUT and hold.until is None and not hold.after)


def awaiting_result(run: Run, since: datetime) -> bool:
    """Pure: whether an `unknown` run may still be adopted from its target's markers: it
    ended after `since` and its target has not already answered that it kept nothing."""
    return (
        run.status is RunStatus.UNKNOWN
        and run.exit_code is None
        and run.finished_at is not None
        and run.finished_at >= since
        and NOTHING_KEPT not in (run.error or "")
    )


def _with_retries(write: Callable[[], _T]) -> _T:
    """Retry a store write whose connection dropped (the store reconnects on the next call);
    a lost lease is final and raised at once."""
    for attempt in range(STORE_RETRIES):
        try:
            return write()
        except LeaseLost:
            raise
        except StoreError as exc:
            if attempt == STORE_RETRIES - 1:
                raise
            log.warning("state store write failed (%s); trying again", exc)
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


class _Heartbeats:
    """Renews the lease of every run this process executes, every HEARTBEAT_SECONDS, from
    its own thread, so a long command is never mistaken for a dead worker's."""

    def __init__(self, store: StateStore, running: dict[Future, Run], owner: str | None):
        self.store, self.running, self.owner = store, running, owner
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            if self.owner is not None:  # a pass: its pending runs are a live planner's
                try:
                    self.store.beat_drain(self.owner)
                except StoreError as exc:
                    log.warning("drain heartbeat failed: %s", exc)
            for run in list(self.running.values()):
                if self.stop.is_set():
                    return
                try:
                    self.store.heartbeat(run.id, run.epoch)
                except LeaseLost:
                    if run not in self.running.values():
                        continue  # it ended meanwhile: its result is recorded
                    log.warning(
                        "run %s: lease lost to another worker; its result will not be recorded",
                        run.id,
                    )
                except StoreError as exc:
                    # Go on with the others: an error may be this run's alone. In an outage
                    # the store waits once and then fails the rest of the round at once.
                    log.warning("run %s: heartbeat failed: %s", run.id, exc)


__all__ = ["Engine", "Event", "PassReport", "LEASE_SECONDS"]
