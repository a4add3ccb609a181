"""The state store port: every backend (SQLite now, PostgreSQL next) implements `StateStore`.

The run protocol (DESIGN §5) lives behind these methods:
- claim is a compare-and-set from `pending` to `running` in one short transaction that is
  committed before any work, and bumps the run's `epoch`;
- `mark_dispatched` is written before the command is sent;
- every later write names the epoch it claimed with; a stale epoch raises `LeaseLost`;
- `recover` resolves runs left `running` by a pass that died: never dispatched -> `pending`,
  dispatched -> `unknown`.
Times are timezone-aware UTC datetimes. Backend errors are translated to `StoreError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Sequence

from ..errors import StoreError
from ..plan import Plan
from ..state import ExecutedState, Run, RunStatus

OUTPUT_CAP = 64 * 1024  # bytes of output kept per run: the last 64 KiB


class LeaseLost(StoreError):
    """A write named an epoch that is no longer the run's: another claim took it over."""


class StateStore(ABC):
    """Where runs are recorded and claimed."""

    url: str

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    @abstractmethod
    def pass_lock(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the one pass lock of this store; raises `LockError` after `timeout` seconds.

        The lock dies with its holder (an OS file lock for SQLite), so a killed pass never
        leaves it stuck.
        """

    @abstractmethod
    def snapshot(self) -> ExecutedState:
        """The latest run of every (task, machine, version) and every active run."""

    @abstractmethod
    def record_plan(self, plan: Plan, commit: str | None, now: datetime) -> list[Run]:
        """Apply a plan in one transaction: insert its runs as `pending` and cancel its
        cancels (only runs still pending). Idempotent: an `Enqueue` whose (task, machine,
        version, slot) already has an active run inserts nothing. Returns the inserted runs.
        """

    @abstractmethod
    def recover(self, now: datetime) -> list[Run]:
        """Resolve `running` runs left by a dead pass (call under the pass lock).

        Not dispatched: back to `pending`. Dispatched: `unknown`. Returns the changed runs.
        """

    @abstractmethod
    def pending(self) -> list[Run]:
        """All pending runs, highest priority first, then oldest first."""

    @abstractmethod
    def running(self) -> list[Run]:
        """All running runs."""

    @abstractmethod
    def claim(self, run_id: int, owner: str, now: datetime) -> Run | None:
        """`pending` -> `running` if the run is still pending; None otherwise."""

    @abstractmethod
    def mark_dispatched(self, run_id: int, epoch: int, now: datetime) -> Run:
        """Record that the command is about to be sent. Raises `LeaseLost`."""

    @abstractmethod
    def finish(self, run_id: int, epoch: int, status: RunStatus, now: datetime, *,
               exit_code: int | None = None, output: str = "", error: str | None = None) -> Run:
        """Record a final status. Output is capped to its last `OUTPUT_CAP` bytes."""

    @abstractmethod
    def requeue(self, run_id: int, epoch: int, not_before: datetime, now: datetime, *,
                exit_code: int | None = None, output: str = "", error: str | None = None) -> Run:
        """A failed attempt with retries left: back to `pending`, attempt + 1, `not_before`."""

    @abstractmethod
    def block(self, run_id: int, error: str, now: datetime) -> Run | None:
        """A pending run whose `after` dependency failed: `blocked`. None if not pending."""

    @abstractmethod
    def get_run(self, run_id: int) -> Run | None:
        """One run with its output and error, or None."""

    @abstractmethod
    def list_runs(self, status: Sequence[RunStatus] | None = None, team: str | None = None,
                  limit: int = 1000) -> list[Run]:
        """Runs newest first, optionally filtered by status and team."""

    @abstractmethod
    def cancel_run(self, run_id: int, now: datetime) -> Run:
        """`queue cancel`: a pending run becomes `cancelled`; raises `InputError` otherwise."""

    @abstractmethod
    def request_retry(self, run_id: int, now: datetime) -> Run:
        """`queue retry`: mark a failed, blocked or unknown run for a fresh run at the next
        pass; raises `InputError` for any other status."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of runs by status."""

    @abstractmethod
    def failed_since(self, since: datetime) -> int:
        """Runs that ended failed, blocked or unknown at or after `since`."""
