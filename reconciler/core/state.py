"""Frozen values of the executed state: runs, their statuses, and a snapshot for planning.

A `Run` is one row of the state store. `ExecutedState` is the planner's read-only view of the
store: the latest run of every (task, machine, version) and every active run, indexed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class RunStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"
    KILLED = "killed"  # stopped on request (`queue kill`): final, never retried
    HALTED = "halted"  # never started: its rollout stopped past its failure budget

    @property
    def is_active(self) -> bool:
        return self in ACTIVE

    @property
    def is_final(self) -> bool:
        return self not in ACTIVE

    @property
    def is_success(self) -> bool:
        return self in SUCCESS

    @property
    def is_problem(self) -> bool:
        """Statuses that make a pass exit 1 (SPEC §4)."""
        return self in PROBLEM


MANUAL = "manual"  # the trigger of a run `reconcile run` enqueued
ACTIVE = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
SUCCESS = frozenset({RunStatus.SUCCEEDED, RunStatus.SKIPPED})
PROBLEM = frozenset(
    {RunStatus.FAILED, RunStatus.BLOCKED, RunStatus.UNKNOWN, RunStatus.KILLED, RunStatus.HALTED}
)


class Reason(str, Enum):
    """Why the planner enqueued a run (SPEC §4 `plan` JSON)."""

    NEW = "new"
    CHANGED = "changed"
    NEW_TARGET = "new-target"
    SCHEDULE = "schedule"
    DRIFT = "drift"
    RETRY = "retry"
    RESUME = "resume"  # `queue retry` of a halted run: its rollout goes on


@dataclass(frozen=True)
class Run:
    """One run of a task version on a machine.

    `slot` is the due cron slot (UTC, ISO 8601) of a scheduled task's run, `None` for once
    tasks. `dispatched` is set before the command is sent: a running run that was never
    dispatched can go back to pending safely; one that was dispatched may have executed.
    `epoch` increases on every claim; later writes compare it (a lost lease cannot write).
    """

    id: int
    task: str
    machine: str
    version: str
    priority: int
    status: RunStatus
    attempt: int = 1
    reason: str = Reason.NEW.value
    slot: str | None = None
    commit: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    not_before: datetime | None = None
    exit_code: int | None = None
    output: str = ""
    error: str | None = None
    dispatched: bool = False
    retry_requested: bool = False
    epoch: int = 0
    owner: str | None = None
    # `plan` (a pass enqueued it) or `manual` (`reconcile run`, issue 16 §3: then `reason` is
    # the person's text and `actor` who asked). A manual run is outside the planner's
    # bookkeeping: it never counts as the latest run of its version (`ExecutedState`).
    trigger: str = "plan"
    actor: str | None = None
    params: tuple[tuple[str, str], ...] = ()  # the values it was asked with, by name

    @property
    def manual(self) -> bool:
        return self.trigger == MANUAL

    @property
    def team(self) -> str:
        return self.task.split("/", 1)[0]


@dataclass(frozen=True)
class ExecutedState:
    """The planner's view of the store.

    `latest` maps (task, machine, version) to the newest run of that version there;
    `active` holds every pending or running run. Manual runs (`reconcile run`) are in
    `active` only: they never stand for what a version did, so they change nothing the
    planner decides (issue 16 §3). Runs of removed tasks stay visible so the
    planner can cancel them.
    """

    latest: Mapping[tuple[str, str, str], Run] = field(default_factory=dict)
    active: tuple[Run, ...] = ()
    # Derived indexes, built once in `of`.
    latest_on_machine: Mapping[tuple[str, str], Run] = field(default_factory=dict)
    tasks_seen: frozenset[str] = frozenset()

    @classmethod
    def of(cls, runs: Iterable[Run]) -> ExecutedState:
        """Build the view from any runs: keeps the newest per (task, machine, version)."""
        latest: dict[tuple[str, str, str], Run] = {}
        on_machine: dict[tuple[str, str], Run] = {}
        active: list[Run] = []
        for run in runs:
            if run.status.is_active:
                active.append(run)
            if run.manual:
                continue  # a run asked for by hand: in the queue, not in the bookkeeping
            key = (run.task, run.machine, run.version)
            if key not in latest or run.id > latest[key].id:
                latest[key] = run
            mkey = (run.task, run.machine)
            if mkey not in on_machine or run.id > on_machine[mkey].id:
                on_machine[mkey] = run
        active.sort(key=lambda r: r.id)
        return cls(latest, tuple(active), on_machine, frozenset(t for t, _ in on_machine))

    def latest_run(self, task: str, machine: str, version: str) -> Run | None:
        return self.latest.get((task, machine, version))

    def latest_on(self, task: str, machine: str) -> Run | None:
        """The newest run of `task` on `machine`, whatever its version."""
        return self.latest_on_machine.get((task, machine))

    def has_seen(self, task: str) -> bool:
        return task in self.tasks_seen
