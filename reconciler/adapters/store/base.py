"""The state store port: every backend (SQLite, PostgreSQL) implements `StateStore`.

The port is split by concern, each its own ABC that `StateStore` combines: `RunQueue` (the
queue, the run protocol and the batches of a round), `CommitLineage`, `AuditLog`,
`AlertOutbox` and `Retention`. Code that needs one concern names that port (the audit writer
an `AuditLog`, the courier an `AlertOutbox`); the contract suites in tests/contract run each
against SQLite and PostgreSQL.

The run protocol (DESIGN §5) lives behind these methods:
- claim is a compare-and-set from `pending` to `running` in one short transaction that is
  committed before any work, and bumps the run's `epoch`;
- `mark_dispatched` is written before the command is sent;
- every later write names the epoch it claimed with; a stale epoch raises `LeaseLost`;
- a running run holds a lease: `claim`, `mark_dispatched` and `heartbeat` stamp `heartbeat_at`
  with the database's clock, and `sweep` resolves the runs whose lease expired (a dead worker);
- `recover` resolves runs left `running` by a holder that died (never a live one's: passes
  drain side by side): never dispatched -> `pending`, dispatched -> `unknown`.
Every lease comparison uses the database's clock, never a worker's: workers on several hosts
with skewed clocks still agree on who is dead. The `now` arguments are the caller's clock and
only fill the run's history (`created_at`, `started_at`, `finished_at`, `not_before`).
Times are timezone-aware UTC datetimes. Backend errors are translated to `StoreError`.

Since migration 4 the store also keeps the audit log (a hash chain appended atomically: see
`append_audit`), what was alerted (the dedupe memory) and the alert outbox, and it prunes old
runs without ever forgetting the newest run of a (task, machine, version).

Group commit (issue 13): the engine writes a scheduling round as batches (`claim_batch`,
`dispatch_batch`, `end_batch`), each one transaction with the audit entries of its changes.
Where appending to the chain would serialise every worker (PostgreSQL, migration 6), a batch
queues its entries and a sealer links them into the chain later, in queue order
(`seal_audit`); `unsealed_audit` counts what waits. SQLite links them in the batch itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.adapters.audit.chain import Anchor, AuditEntry, AuditRecord
from reconciler.core.alerts import Alert, Delivery
from reconciler.core.errors import StoreError
from reconciler.core.model import Freeze
from reconciler.core.plan import Plan
from reconciler.core.state import ExecutedState, Run, RunStatus

OUTPUT_CAP = 64 * 1024  # bytes of output kept per run: the last 64 KiB
# A running run whose holder has not written for this long is presumed dead (`sweep`). Long
# enough that a busy host never loses a live run, short enough that a dead worker's run is
# picked up within a couple of minutes. Holders heartbeat every HEARTBEAT_SECONDS: four
# chances before the lease runs out.
LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = LEASE_SECONDS / 4
# An outbox delivery claimed by a process that died is claimable again after this long.
DELIVERY_LEASE_SECONDS = 120.0
AUDIT_PAGE = 1000  # audit entries read per query by `iter_audit`


class LeaseLost(StoreError):
    """A write named an epoch that is no longer the run's: another claim took it over."""


# The audit entries of one run's change, made from the run as the change left it (its new
# epoch, attempt, status): written in the same transaction as the change (group commit).
AuditOf = Callable[[Run], Sequence[AuditRecord]]


def no_audit(run: Run) -> Sequence[AuditRecord]:
    """The `AuditOf` of a batch that writes no audit entries."""
    return ()


# The audit entries of a recorded plan, made from what its transaction did: the runs it
# inserted (in plan order) and those it cancelled (in the plan's order). Written in that same
# transaction, so no run is queued without the entry that says who enqueued it.
PlanAuditOf = Callable[[Sequence[Run], Sequence[Run]], Sequence[AuditRecord]]


def no_plan_audit(inserted: Sequence[Run], cancelled: Sequence[Run]) -> Sequence[AuditRecord]:
    """The `PlanAuditOf` of a plan recorded without audit entries."""
    return ()


@dataclass(frozen=True)
class RunFilter:
    """What the web console's runs page narrows the history to; an empty field admits all.
    `commit` is a prefix of the sha (a short sha finds its runs)."""

    statuses: tuple[RunStatus, ...] = ()
    team: str | None = None
    task: str | None = None
    machine: str | None = None
    commit: str | None = None

    def admits(self, run: Run) -> bool:
        return (
            (not self.statuses or run.status in self.statuses)
            and (self.team is None or run.team == self.team)
            and (self.task is None or run.task == self.task)
            and (self.machine is None or run.machine == self.machine)
            and (self.commit is None or (run.commit or "").startswith(self.commit))
        )


@dataclass(frozen=True)
class ClaimRequest:
    """One run a round wants to start: claimed only while its machine runs fewer than
    `max_parallel` runs (None: no limit checked), counting the claims of the same batch."""

    run_id: int
    max_parallel: int | None = None


@dataclass(frozen=True)
class RunEnd:
    """How one attempt ended, for `end_batch`: a final `status`, or, with `retry_at`, back to
    `pending` for another attempt at that time (`status` is then ignored)."""

    run_id: int
    epoch: int
    status: RunStatus
    exit_code: int | None = None
    output: str = ""
    error: str | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True)
class RunChanges:
    """What `run_changes` read. `complete`: `runs` are every active run (a run known active
    and not among them is not active any more); otherwise they are the runs written since
    the cursor given, whatever their status (a run that ended among them). Runs come without
    their output. `cursor` is for the next call."""

    runs: list[Run]
    complete: bool
    cursor: object | None = None


@dataclass(frozen=True)
class Batch:
    """What a batch write did: the runs as written, in request order, and the ids it could not
    write (not pending any more or its machine full, for a claim; a lost lease otherwise).
    `unclaimed`: the requests a claim batch did not get to because it had claimed as many
    runs as it wanted (see `claim_batch`), neither claimed nor refused."""

    runs: list[Run]
    refused: list[int]
    unclaimed: list[int] = field(default_factory=list)


def claim_outcome(
    claims: Sequence[ClaimRequest], got: dict[int, Run], want: int | None
) -> tuple[list[Run], list[int], list[int]]:
    """Sort the requests of a claim batch that claimed `got` (by id): the runs claimed, in
    request order, the ids refused and those left unclaimed. With `want` claims made, the
    requests after the last one claimed were not needed: unclaimed; any other request that
    was not claimed was passed over (not pending, its machine full, or asked for twice)."""
    got = dict(got)
    claimed: list[Run] = []
    refused: list[int] = []
    unclaimed: list[int] = []
    full = want is not None and len(got) >= want
    last = max((i for i, c in enumerate(claims) if c.run_id in got), default=-1) if full else None
    for index, request in enumerate(claims):
        run = got.pop(request.run_id, None)  # popped: a repeated id is refused
        if run is not None:
            claimed.append(run)
        elif last is not None and index > last:
            unclaimed.append(request.run_id)
        else:
            refused.append(request.run_id)
    return claimed, refused, unclaimed


def check_ends(ends: Sequence[RunEnd]) -> None:
    """Raise ValueError for an end that is neither final nor a retry (a programming error)."""
    for end in ends:
        if end.retry_at is None and end.status.is_active:
            raise ValueError(f"an end needs a final status, not {end.status.value}")


@dataclass(frozen=True)
class ManualRun:
    """A run `reconcile run` asks for (issue 16 §3, migration 13): the task's current
    `version` on `machine` now, at `priority`, with `params` in its environment (by name,
    defaults filled in), recorded with trigger `manual`, who asked (`actor`) and why
    (`reason`). `planner` as in `record_plan` (None: any pass may adopt it at once)."""

    task: str
    machine: str
    version: str
    priority: int
    reason: str
    actor: str
    params: tuple[tuple[str, str], ...] = ()
    commit: str | None = None
    planner: str | None = None


class RunQueue(ABC):
    """The queue and the run protocol (DESIGN §5): planning under the pass lock, claims with
    leases and epochs, the batches of a scheduling round (group commit), and the runs' history."""

    @abstractmethod
    def pass_lock(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the one pass lock of this store; raises `LockError` after `timeout` seconds.

        The lock dies with its holder (an OS file lock for SQLite, a session-level advisory
        lock on a dedicated connection for PostgreSQL), so a killed pass never leaves it
        stuck. It serialises recovery and planning only: drains claim runs without it.
        """

    @abstractmethod
    def snapshot(self) -> ExecutedState:
        """The latest run of every (task, machine, version) and every active run."""

    @abstractmethod
    def record_plan(
        self,
        plan: Plan,
        commit: str | None,
        now: datetime,
        planner: str | None = None,
        audit: PlanAuditOf = no_plan_audit,
    ) -> list[Run]:
        """Apply a plan in one transaction: insert its runs as `pending`, cancel its
        cancels (only runs still pending) and move its reslots' runs to their new slot (only
        runs not started yet); a plan with `freezes` replaces the recorded ones (see
        `reconciled_freezes`). Idempotent: an `Enqueue` whose (task, machine,
        version, slot) already has an active run inserts nothing, also when two planners
        record the same plan at the same moment (the database's unique index decides).
        The inserted runs record `planner` (the owner string of the pass: see
        `pending_planners`). `audit(inserted, cancelled)` makes the plan's audit entries
        from the runs the transaction inserted and cancelled; they are written in the same
        transaction (queued for the sealer where batches queue theirs): a failed entry
        raises `StoreError` and nothing of the plan is recorded. Returns the inserted runs,
        in plan order.
        """

    @abstractmethod
    def enqueue_manual(
        self, runs: Sequence[ManualRun], now: datetime, audit: AuditOf = no_audit
    ) -> list[Run]:
        """Insert `runs` as `pending` with trigger `manual`, in one transaction with each
        inserted run's `audit(run)` entries (none is queued unless its entry is written).
        Unlike `record_plan` it never collides with an active run of the same (task,
        machine, version, slot): a manual run is outside that invariant and outside the
        planner's memory (`snapshot` never returns one as the latest run of its version), so
        it changes nothing a pass decides. Wakes idle workers like a recorded plan. Returns
        the runs in request order; raises `StoreError` and inserts nothing on failure."""

    # A pass claims only the runs it planned, and those of planners that are dead: a live pass
    # draining beside it keeps its queue (its runs, its report, its grace period). Workers
    # (`reconcile worker`, PostgreSQL) exist to share the queue: they claim any pending run.

    @abstractmethod
    def beat_drain(self, owner: str) -> None:
        """Record, by the database's clock, that a drain of `owner` is alive. Every pass
        beats before it records its plan and then every `HEARTBEAT_SECONDS` while it drains:
        the sign of life of its pending runs where its process cannot be looked at."""

    @abstractmethod
    def pending_planners(
        self, owner: str, lease_seconds: float = LEASE_SECONDS
    ) -> dict[int, tuple[str | None, bool]]:
        """Every pending run that `owner` did not plan, by id: its planner and whether that
        planner is alive. Alive: its process runs (judged where it can be: this host and
        pid namespace, the start time matching) or, elsewhere, its drain beat within
        `lease_seconds`. A run without a recorded planner has a dead one."""

    @abstractmethod
    def take_over(self, runs: dict[int, str | None], owner: str) -> list[int]:
        """Adopt pending runs of dead planners (`runs`: id -> that planner): `owner` becomes
        their planner, compare-and-set on the old one, so of two adopters one wins. Returns
        the ids taken, sorted."""

    @abstractmethod
    def recover(self, now: datetime, keep_owner: str | None = None) -> list[Run]:
        """Resolve `running` runs left by a dead holder (call under the pass lock). Runs
        claimed by `keep_owner` (the caller's process, whose other passes may still drain)
        are alive, and so are those of other live holders: passes drain side by side.

        Not dispatched: back to `pending`. Dispatched: `unknown` (`finished_at` = `now`).
        Returns the changed runs by id. Which holders are dead is the backend's knowledge:
        a run whose lease expired always counts (`LEASE_SECONDS`); on SQLite, whose processes
        all run on one host, so does a run whose holder process (`host:pid:token`) is gone.
        """

    @abstractmethod
    def heartbeat(self, run_id: int, epoch: int) -> None:
        """Renew the lease of a run held at `epoch` (its `heartbeat_at` := database time).

        Raises `LeaseLost` when the run is no longer running at `epoch` (swept, or taken over):
        its holder must stop and abandon the run, recording nothing.
        """

    @abstractmethod
    def sweep(self, lease_seconds: float, now: datetime) -> list[Run]:
        """Resolve the runs of dead workers; safe to call from any process at any time.

        A `running` run whose last heartbeat (or, when it has none, its claim) is older than
        `lease_seconds` by the database's clock: never dispatched -> `pending` (nothing ran);
        dispatched -> `unknown` with `finished_at` = `now` (the command may have run; the
        planner re-runs it only if the task is idempotent). The holder's later writes raise
        `LeaseLost`. Returns the changed runs by id.
        """

    def change_token(self) -> object | None:
        """A value that changes whenever another connection (another process) may have
        changed the store since it was last read here; this connection's own writes do not
        change it. None when the backend cannot tell: callers then re-read every time."""
        return None

    def wait_for_runs(self, timeout: float) -> bool | None:
        """Block up to `timeout` seconds, returning early when another connection may have
        queued runs (a plan was recorded): True when woken so, False when the time ran out.
        None at once when the backend cannot be woken (the caller waits its own way): what
        an idle worker does between two looks at the queue."""
        return None

    def wait_for_ends(self, timeout: float) -> bool | None:
        """Block up to `timeout` seconds, returning early when another connection may have
        recorded the end of runs (`end_batch`, `round_batch`) whose planners have no run
        pending left (the ends a pass waits on once its queue is taken; a backend may skip
        the others): True when woken so, False when the time ran out. None at once when the
        backend cannot be woken (the caller waits its own way): what a pass with nothing
        running here does while it waits on its runs held elsewhere (their ends end it)."""
        return None

    def listen_for_ends(self) -> None:
        """Start hearing what `wait_for_ends` is woken by now, before the first wait: an end
        recorded between this call and that wait wakes it at once. A pass calls it once its
        queue is taken, while its last runs may still end elsewhere; a backend that cannot be
        woken does nothing."""
        return None

    def run_changes(self, since: object | None = None) -> RunChanges:
        """What a drain re-reads each round: the runs written since `since` (the `cursor` of
        an earlier call, by any connection, this one's included), or every active run. With
        `since` None the read is complete; otherwise a backend that can tell answers with
        only the runs written since, and one that cannot answers complete. A run written
        after the read starts is there at the next call, never lost between two."""
        return RunChanges([*self.pending(), *self.running()], True)

    @abstractmethod
    def pending(self) -> list[Run]:
        """All pending runs, highest priority first, then oldest first."""

    @abstractmethod
    def running(self) -> list[Run]:
        """All running runs."""

    @abstractmethod
    def claim(
        self, run_id: int, owner: str, now: datetime, max_parallel: int | None = None
    ) -> Run | None:
        """`pending` -> `running` if the run is still pending and, when `max_parallel` is
        given, its machine runs fewer runs than that (enforced by the database, so across
        every worker); None otherwise.

        One short transaction committed before any work: epoch + 1 (the lease every later
        write names), `owner`, `started_at` = `now`, and a first heartbeat. Several workers
        claiming the same run at once: exactly one gets it, the others get None.
        """

    @abstractmethod
    def mark_dispatched(self, run_id: int, epoch: int, now: datetime) -> Run:
        """Record (durably) that the command is about to be sent; also renews the lease.
        Raises `LeaseLost`."""

    @abstractmethod
    def finish(
        self,
        run_id: int,
        epoch: int,
        status: RunStatus,
        now: datetime,
        *,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
    ) -> Run:
        """Record a final status. Output is capped to its last `OUTPUT_CAP` bytes."""

    @abstractmethod
    def adopt(
        self,
        run_id: int,
        status: RunStatus,
        *,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
    ) -> Run | None:
        """An `unknown` run whose command did finish (its target kept the result, e.g. the
        SSH markers) gets that final status; None if the run is not `unknown`."""

    @abstractmethod
    def requeue(
        self,
        run_id: int,
        epoch: int,
        not_before: datetime,
        now: datetime,
        *,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
    ) -> Run:
        """A failed attempt with retries left: back to `pending`, attempt + 1, `not_before`."""

    @abstractmethod
    def block(
        self, run_id: int, error: str, now: datetime, status: RunStatus = RunStatus.BLOCKED
    ) -> Run | None:
        """A pending run that ends without running: `blocked` (its `after` dependency failed)
        or `halted` (its rollout's failure budget is spent), or `killed` (`queue kill` of a run
        waiting out its retry back-off). None if not pending."""

    @abstractmethod
    def get_run(self, run_id: int) -> Run | None:
        """One run with its output and error, or None."""

    def get_runs(self, run_ids: Sequence[int]) -> dict[int, Run]:
        """The runs of `run_ids` that exist, by id, as `get_run` gives them: for a drain that
        learns how many runs ended elsewhere at once (a backend answers in one query)."""
        found = {run_id: self.get_run(run_id) for run_id in run_ids}
        return {run_id: run for run_id, run in found.items() if run is not None}

    @abstractmethod
    def list_runs(
        self, status: Sequence[RunStatus] | None = None, team: str | None = None, limit: int = 1000
    ) -> list[Run]:
        """Runs newest first, optionally filtered by status and team."""

    def runs_page(
        self, filters: RunFilter, before: int | None = None, limit: int = 50
    ) -> list[Run]:
        """Runs newest first (without `output`), those with an id below `before` (keyset
        pagination: the last id of the previous page), narrowed by `filters`; at most
        `limit`. A backend answers in one query; this default filters `list_runs`."""
        runs = self.list_runs(list(filters.statuses) or None, filters.team, 0)
        kept = [r for r in runs if (before is None or r.id < before) and filters.admits(r)]
        return kept[:limit]

    @abstractmethod
    def cancel_run(self, run_id: int, now: datetime, error: str | None = None) -> Run:
        """`queue cancel`: a pending run becomes `cancelled` (`error` says by whom, by
        default `queue cancel`); raises `InputError` otherwise."""

    @abstractmethod
    def request_retry(self, run_id: int, now: datetime) -> Run:
        """`queue retry`: mark a failed, blocked, unknown or halted run for a fresh run at the
        next pass; raises `InputError` for any other status."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of runs by status."""

    @abstractmethod
    def failed_since(self, since: datetime) -> int:
        """Runs that ended failed, blocked, unknown or halted at or after `since`."""

    @abstractmethod
    def previous_outcome(self, task: str, machine: str, before_id: int) -> RunStatus | None:
        """The status of the newest final run of `task` on `machine` (any version) with an id
        below `before_id`, cancelled runs left out; None when there is none. The input of the
        `recovered` alert."""

    #
    # A round of the engine claims several runs, dispatches them and records several ends. Each
    # of these is one transaction for the whole batch, with the audit entries of every change
    # in it: the change and its audit record are durable together, or neither is. A failed
    # batch raises `StoreError` and changes nothing. The defaults below compose the one-run
    # methods (correct, not atomic across runs); the backends override them.

    def claim_batch(
        self,
        claims: Sequence[ClaimRequest],
        owner: str,
        now: datetime,
        audit: AuditOf = no_audit,
        leading: Sequence[AuditRecord] = (),
        want: int | None = None,
    ) -> Batch:
        """`claim` each run in order, in one transaction: a run is refused when it is no longer
        pending or its machine is full (the runs this batch claimed count), and an id asked for
        twice is refused the second time. With `want`, at most that many runs are claimed: a
        refused request leaves its place to the next one, and once `want` runs are claimed the
        requests after them are `unclaimed` (a drain on a shared queue asks for more runs than
        it has room for, so a run another worker took just before is replaced in the same
        batch). `leading` entries (the plan's record) are written before those of the claims,
        then each claimed run's `audit(run)` entries in request order. Raises `StoreError` when
        anything (an audit entry included) cannot be written: then nothing is claimed."""
        if leading:
            self.append_audit(list(leading))
        got: dict[int, Run] = {}
        for request in claims:
            if want is not None and len(got) >= want:
                break
            if request.run_id in got:
                continue
            run = self.claim(request.run_id, owner, now, request.max_parallel)
            if run is not None:
                self.append_audit(list(audit(run)))
                got[run.id] = run
        return Batch(*claim_outcome(claims, got, want))

    def start_batch(
        self,
        claims: Sequence[ClaimRequest],
        owner: str,
        now: datetime,
        *,
        claimed: AuditOf = no_audit,
        dispatched: AuditOf = no_audit,
        leading: Sequence[AuditRecord] = (),
        want: int | None = None,
    ) -> Batch:
        """A round's claims and their dispatch marks in ONE durable transaction (group
        commit): each run is claimed as `claim_batch` claims it, then every claimed run is
        marked dispatched, and `leading`, each run's `claimed(run)` entries then each run's
        `dispatched(run)` entries are written with them. After it returns every command of
        the batch may be sent ("audit before dispatch": the claim and dispatch entries are
        durable first); a crash before its commit leaves every run pending, as if the round
        never claimed. `claimed` is called inside the transaction, after the claims and
        before the commit. The runs returned are marked dispatched. `round_batch` without
        ends."""
        _, started = self.round_batch(
            (),
            claims,
            owner,
            now,
            claimed=claimed,
            dispatched=dispatched,
            leading=leading,
            want=want,
        )
        return started

    def round_batch(
        self,
        ends: Sequence[RunEnd],
        claims: Sequence[ClaimRequest],
        owner: str,
        now: datetime,
        *,
        ended: AuditOf = no_audit,
        claimed: AuditOf = no_audit,
        dispatched: AuditOf = no_audit,
        leading: Sequence[AuditRecord] = (),
        want: int | None = None,
    ) -> tuple[Batch, Batch]:
        """A whole scheduling round in ONE durable transaction: the ends of the runs that
        ended (as `end_batch`, at `now`, with their `ended(run)` entries), then the claims
        and dispatch marks of `start_batch`, whose counts of `max_parallel` see those runs
        ended. Returns the ends' batch and the starts' batch. When an end is refused (its
        lease was lost), nothing is claimed (every claim is returned `unclaimed`): the round
        was decided on a result that is not recorded. The default composes `end_batch`,
        `claim_batch` and `dispatch_batch`; the backends override it."""
        done = self.end_batch(ends, now, ended) if ends else Batch([], [])
        if done.refused:
            return done, Batch([], [], [c.run_id for c in claims])
        got = self.claim_batch(claims, owner, now, claimed, leading, want)
        if not got.runs:
            return done, got
        marked = self.dispatch_batch(got.runs, now, dispatched)
        return done, Batch(marked.runs, [*got.refused, *marked.refused], got.unclaimed)

    def dispatch_batch(
        self, runs: Sequence[Run], now: datetime, audit: AuditOf = no_audit
    ) -> Batch:
        """`mark_dispatched` each run (by its id and epoch) in one durable transaction: after it
        returns, every command of the batch may be sent. A run whose lease was lost is
        refused (its command must not be sent)."""
        marked: list[Run] = []
        refused: list[int] = []
        for run in runs:
            try:
                done = self.mark_dispatched(run.id, run.epoch, now)
            except LeaseLost:
                refused.append(run.id)
                continue
            self.append_audit(list(audit(done)))
            marked.append(done)
        return Batch(marked, refused)

    def end_batch(self, ends: Sequence[RunEnd], now: datetime, audit: AuditOf = no_audit) -> Batch:
        """Record each end (`finish`, or `requeue` when `retry_at` is set) in one transaction.
        A run whose lease was lost is refused: its result is not recorded."""
        written: list[Run] = []
        refused: list[int] = []
        for end in ends:
            try:
                if end.retry_at is not None:
                    run = self.requeue(
                        end.run_id,
                        end.epoch,
                        end.retry_at,
                        now,
                        exit_code=end.exit_code,
                        output=end.output,
                        error=end.error,
                    )
                else:
                    run = self.finish(
                        end.run_id,
                        end.epoch,
                        end.status,
                        now,
                        exit_code=end.exit_code,
                        output=end.output,
                        error=end.error,
                    )
            except LeaseLost:
                refused.append(end.run_id)
                continue
            self.append_audit(list(audit(run)))
            written.append(run)
        return Batch(written, refused)


class CommitLineage(ABC):
    """The commits passes reconciled, newest last: a pass refuses one that does not descend
    from the last."""

    @abstractmethod
    def record_commit(self, commit: str, now: datetime) -> None:
        """Remember that a pass reconciled `commit` (a full sha, never `-dirty`)."""

    @abstractmethod
    def last_commit(self) -> str | None:
        """The commit the latest pass reconciled, or None before the first."""

    @abstractmethod
    def reconciled_freezes(self) -> list[tuple[str, Freeze]]:
        """The freezes in force when the latest pass planned (recorded with its plan: see
        `record_plan`), each with what it is on, by that; empty before the first pass."""

    def last_pass(self) -> tuple[str, datetime] | None:
        """The commit the latest pass reconciled and when it was recorded, or None."""
        commit = self.last_commit()
        return None if commit is None else (commit, None)  # type: ignore[return-value]


class AuditLog(ABC):
    """The hash-chained audit log (migration 4): appended atomically, sealed in order when
    batches queue their entries (PostgreSQL), read in pages, pruned behind an anchor."""

    @abstractmethod
    def append_audit(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Append `records` to the hash chain, in order, in one transaction that reads the
        head and inserts after it (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-level
        advisory lock), so concurrent writers, in any number of processes, form one linear
        chain. After a prune the chain continues from the anchor. Returns the new entries.
        Raises `StoreError` when they cannot be written: the caller must then not do what
        they record (DESIGN §5: nothing is dispatched without its audit record).
        """

    def seal_audit(self, wait: bool = False) -> int:
        """Link the audit entries written by batches but not yet chained (a backend that
        chains them in the batch's own transaction has none), in the order they were
        written, after the head. Returns how many were sealed; with `wait`, waits for a
        sealer running elsewhere instead of leaving it to it (call it at the end of a pass and
        when a worker stops: then every entry this process wrote is chained). `append_audit`
        seals first, so an entry appended directly follows every entry written before it."""
        return 0

    def unsealed_audit(self) -> int:
        """How many audit entries are written but not yet chained (see `seal_audit`)."""
        return 0

    @abstractmethod
    def audit_page(
        self, after_seq: int = 0, limit: int = AUDIT_PAGE, since: str | None = None
    ) -> list[AuditEntry]:
        """Up to `limit` entries with `seq > after_seq` in seq order; with `since` (ISO 8601
        UTC text as in `AuditRecord.at`) only those at or after it. An entry whose stored
        detail is not JSON comes back with detail `{"unreadable": <text>}` (its hash then
        fails verification: it was edited)."""

    def iter_audit(self, after_seq: int = 0, since: str | None = None) -> Iterator[AuditEntry]:
        """Every entry after `after_seq` (at or after `since`), in seq order, read in pages."""
        while True:
            page = self.audit_page(after_seq, AUDIT_PAGE, since)
            yield from page
            if len(page) < AUDIT_PAGE:
                return
            after_seq = page[-1].seq

    @abstractmethod
    def audit_head(self) -> AuditEntry | None:
        """The newest entry, or None for an empty log."""

    @abstractmethod
    def audit_anchor(self) -> Anchor | None:
        """Where the kept chain starts after a prune (the last pruned entry), or None."""

    @abstractmethod
    def prune_audit(self, through_seq: int, now: datetime) -> int:
        """Remove entries up to `through_seq` (call only after exporting them) and keep the
        last one's (seq, hash) as the anchor the rest of the chain links to, in one
        transaction under the append lock. Returns the number removed."""


class AlertOutbox(ABC):
    """What was alerted (the dedupe memory) and the deliveries still to make (the outbox)."""

    @abstractmethod
    def record_alert(
        self, alert: Alert, deliveries: Sequence[Delivery], owner: str, now: datetime
    ) -> bool:
        """Remember `alert` under its dedupe key and queue its deliveries, in one transaction;
        False (and nothing written) when the key is already remembered (a restart, another
        reconciler, the same event seen twice) or a newer run of the same (task, machine)
        already alerted (a late duplicate event). Remembering clears the memory of the
        outcomes in `alert.resets` for the same (task, machine), so the next transition alerts
        again. The deliveries are inserted claimed by `owner` (it delivers them now)."""

    @abstractmethod
    def forget_alerts(self, task: str, machine: str, outcomes: Sequence[str]) -> int:
        """Drop the memory of `outcomes` for (task, machine) (e.g. a machine reachable again).
        Returns how many keys were dropped."""

    @abstractmethod
    def unreachable_machines(self) -> set[str]:
        """Machines whose `unreachable` alert is remembered (not cleared since)."""

    @abstractmethod
    def claim_deliveries(
        self, owner: str, limit: int = 100, lease_seconds: float = DELIVERY_LEASE_SECONDS
    ) -> list[Delivery]:
        """Claim up to `limit` pending outbox rows that nobody holds (or whose holder's claim
        is older than `lease_seconds` by the database's clock), oldest first."""

    @abstractmethod
    def delivery_done(self, delivery_id: str, now: datetime) -> None:
        """A delivery succeeded: it leaves the outbox (kept as `delivered` until pruned)."""

    @abstractmethod
    def delivery_failed(
        self, delivery_id: str, error: str, now: datetime, give_up: bool = False
    ) -> None:
        """A delivery attempt failed: attempts + 1, the error kept, the claim released (the
        next pass tries again); with `give_up` it is `abandoned` instead."""

    @abstractmethod
    def release_deliveries(self, owner: str) -> int:
        """Release `owner`'s claims on undelivered rows (it is exiting without them)."""

    @abstractmethod
    def outbox_pending(self) -> int:
        """Deliveries still waiting in the outbox."""


class Retention(ABC):
    """Pruning old runs and delivered outbox rows, never the newest run of a (task, machine,
    version)."""

    @abstractmethod
    def prunable_runs(self, before: datetime, after_id: int = 0, limit: int = 1000) -> list[Run]:
        """Up to `limit` runs with an id above `after_id`, in id order, with their output,
        that `delete_runs` may remove: final, finished before `before`, and not the newest
        run of their (task, machine, version) (the planner's memory of what ran is kept)."""

    @abstractmethod
    def delete_runs(self, run_ids: Sequence[int], before: datetime) -> int:
        """Delete those of `run_ids` that are still prunable as of `before` (re-checked in the
        same statement). Returns the number deleted."""

    @abstractmethod
    def prune_outbox(self, before: datetime) -> int:
        """Delete delivered and abandoned outbox rows created before `before`."""


@dataclass(frozen=True)
class ApprovalRecord:
    """One member's signed approval of a task's version on a machine (migration 8)."""

    task: str
    machine: str
    version: str
    fingerprint: str  # SHA256:... of the approving member's ssh key
    role: str  # the member's role in the task's team when it approved
    commit: str  # the last reconciled commit whose member keys verified it
    signature: str  # `ssh-keygen -Y sign` armour over the approval's text
    approved_at: datetime | None = None

    def params(self, now: object) -> dict:
        """The query parameters of `approval_insert`, approved at `now` (as the store keeps
        time)."""
        fields = ("task", "machine", "version", "fingerprint", "role", "commit", "signature")
        return {name: getattr(self, name) for name in fields} | {"now": now}


class ApprovalBook(ABC):
    """The approvals of the two-person rule (issue 15 §3): given by people with `reconcile
    approve`, read by passes and `status` to lift the holds of the versions they approve."""

    @abstractmethod
    def add_approvals(self, approvals: Sequence[ApprovalRecord], now: datetime) -> int:
        """Record `approvals` in one transaction; one the same key already gave for the same
        task, machine and version is replaced (the caller writes only what no approval that
        verifies covers). Returns how many rows were written."""

    @abstractmethod
    def approvals_of(self, task: str) -> list[ApprovalRecord]:
        """Every approval given for `task`, any version, oldest first."""

    @abstractmethod
    def reconciled_before(self, commit: str) -> str | None:
        """The commit passes reconciled last before they first reconciled `commit` (the
        trusted inventory `commit` was judged by), None when there was none."""


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a running run's output (migration 9), already redacted: the `seq`th of the
    run's `attempt`, starting `start` UTF-8 bytes into the attempt's output."""

    run_id: int
    attempt: int
    seq: int
    start: int
    body: str

    @property
    def end(self) -> int:
        """Where the next chunk starts."""
        return self.start + len(self.body.encode("utf-8", "replace"))


@dataclass(frozen=True)
class OutputTrim:
    """Drop the chunks of a run's `attempt` up to `seq` (beyond the last 64 KiB)."""

    run_id: int
    attempt: int
    seq: int


class LiveOutput(ABC):
    """The output of running runs as it comes (issue 16 §1), for `queue show --follow` on
    any host. One writer per run (the process holding it); any number of readers."""

    @abstractmethod
    def append_output(
        self, chunks: Sequence[OutputChunk], trims: Sequence[OutputTrim] = ()
    ) -> None:
        """Add `chunks` and apply `trims`, in one transaction (a chunk already there is kept
        as it is: a write tried again after a dropped connection adds nothing twice)."""

    @abstractmethod
    def output_since(self, run_id: int, attempt: int, after_seq: int = 0) -> list[OutputChunk]:
        """The chunks of run `run_id`'s `attempt` after `after_seq`, in order."""

    @abstractmethod
    def drop_output(self, run_ids: Sequence[int]) -> None:
        """Forget every chunk of `run_ids` (their ends are recorded, with the same text)."""


@dataclass(frozen=True)
class KillRequest:
    """`queue kill` of a running run (migration 11): for its claim at `epoch`; TERM to its
    process group, KILL after `grace` seconds; who asked and why."""

    run_id: int
    epoch: int
    grace: float
    actor: str
    reason: str | None = None

    def describe(self) -> str:
        """The run's error once it ended killed."""
        why = f": {self.reason}" if self.reason else ""
        return f"killed by {self.actor}{why}"


class KillRequests(ABC):
    """Kill requests (issue 16 §2): written by `queue kill` on any host, read by the process
    that holds the run (it looks every second), wherever it runs."""

    @abstractmethod
    def request_kill(self, request: KillRequest, now: datetime) -> None:
        """Ask the holder of run `request.run_id` to stop it (replacing an earlier request)."""

    @abstractmethod
    def kill_requests(self, run_ids: Sequence[int]) -> dict[int, KillRequest]:
        """The kill requests of `run_ids` (any epoch: the holder compares), by run id."""


class StateStore(
    RunQueue,
    CommitLineage,
    AuditLog,
    AlertOutbox,
    Retention,
    ApprovalBook,
    LiveOutput,
    KillRequests,
):
    """Where runs are recorded and claimed: every concern's port, as one store. Code that
    needs one concern only may name that port (the courier an `AlertOutbox`, say)."""

    url: str  # as given, with any password replaced by `***`: safe to print
    # True when reconcilers and workers on several hosts share this queue (PostgreSQL):
    # `reconcile worker` needs it. On every store a pass holds the pass lock only while it
    # recovers and plans, and drains beside other passes of any process.
    shared_queue: bool = False

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
