"""What the SQLite and PostgreSQL stores do alike, written once: every store call that differs
between the two only in how a value is bound or read back, and in how a connection is held.

A backend subclasses `SqlStore` and gives it three things:

- `values`: its `SqlValues`, the one place where a parameter becomes a column value of its
  dialect (a time as text or as `timestamptz`, an id list as a JSON text or an array, output
  as text or `bytea`) and a column value becomes a Python value again;
- `_sql(name)`: the named query of its SQL file (`sql/<backend>.sql`), where the dialects
  really differ;
- three ways to hold its connection: `_reading()` for reads, `_writing_one()` for a write of
  one statement (its own transaction: autocommit on PostgreSQL, one round trip) and
  `_writing()` for a transaction of several statements. Each yields a DB-API connection
  (`execute(query, params)` returning a cursor) and translates driver errors to `StoreError`.

Calls that a second try cannot apply twice are marked `@once_more`: reads, and writes whose
second try changes nothing more (a heartbeat, an insert that keeps a row already there). A
backend whose connection can break under a call (a PostgreSQL server restart) tries them once
more on a new connection (`_retrying`); SQLite's connection does not break: one call.

What stays in each backend is what really differs: connections, locks, migrations, leases,
the batches of a scheduling round and the audit sealer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from datetime import datetime
from typing import Any, NamedTuple

from reconciler.adapters.audit.chain import Anchor, AuditEntry
from reconciler.adapters.store.base import (
    DELIVERY_LEASE_SECONDS,
    LEASE_SECONDS,
    ApprovalRecord,
    KillRequest,
    OutputChunk,
    OutputTrim,
    RunFilter,
    StateStore,
)
from reconciler.adapters.store.common import (
    QUEUE_CANCEL_ERROR,
    audit_entry,
    delivery,
    ending_without_run,
    kill_params,
    planner_alive,
    runs_page_params,
    team_bounds,
)
from reconciler.core.alerts import Alert, Delivery
from reconciler.core.errors import InputError, UsageError
from reconciler.core.model import Freeze
from reconciler.core.state import ExecutedState, Run, RunStatus

# The columns of `runs` in table order, in both dialects: every query that returns runs
# selects them in this order (`SELECT *`, `RETURNING *` or an explicit list). A later
# migration only appends columns, so a backend's row decoder reads this prefix of any row.
COLUMNS = (
    "id",
    "task",
    "machine",
    "version",
    "slot",
    "commit",
    "priority",
    "status",
    "attempt",
    "reason",
    "created_at",
    "started_at",
    "finished_at",
    "not_before",
    "exit_code",
    "output",
    "error",
    "dispatched",
    "retry_requested",
    "epoch",
    "owner",
)
STATUS = {status.value: status for status in RunStatus}


class SqlValues(NamedTuple):
    """How one dialect binds parameters and reads columns back (see the module docstring)."""

    run: Callable[[tuple], Run]  # a row of `runs` (COLUMNS first) as a Run
    time_in: Callable[[datetime | None], Any]  # a datetime parameter
    time_out: Callable[[Any], datetime | None]  # a time column
    text_in: Callable[[str | None], Any]  # an `error`-like text parameter
    output_in: Callable[[str], Any]  # a run's output, capped
    output_out: Callable[[Any], str]  # an output chunk's body column
    array_in: Callable[[Sequence], Any]  # a list parameter (ids, statuses, outcomes)
    chunk_in: Callable[[str], Any]  # a live output chunk's body
    lease_in: Callable[[float], dict]  # a lease in seconds, as the queries compare with it
    texts_in: Callable[[dict], dict]  # every text parameter of a query, as the column takes it
    no_limit: int | None  # the LIMIT parameter that means "all rows"


def once_more(method):
    """Mark a call that a second try cannot apply twice: see `SqlStore._retrying`."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._retrying(method, self, *args, **kwargs)

    return call


class SqlStore(StateStore):
    """The store calls both SQL backends share; see the module docstring."""

    values: SqlValues

    # --- what a backend gives ---

    @staticmethod
    def _sql(name: str) -> str:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _writing_one(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _writing(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _retrying(self, method, *args, **kwargs):
        """Call a `@once_more` method: once, unless the backend knows better."""
        return method(*args, **kwargs)

    # --- helpers ---

    def _rows(self, query: str, params: dict | None = None) -> list[tuple]:
        with self._reading() as conn:
            return conn.execute(self._sql(query), params or {}).fetchall()

    def _row(self, query: str, params: dict | None = None) -> tuple | None:
        """The first row of a read, or None."""
        rows = self._rows(query, params)
        return rows[0] if rows else None

    def _select(self, query: str, params: dict | None = None) -> list[Run]:
        run = self.values.run
        return [run(row) for row in self._rows(query, params)]

    def _write_row(self, query: str, params: dict) -> tuple | None:
        """One single-statement write, its own transaction; its first row or None. Every row
        is fetched: SQLite would still be running an `UPDATE ... RETURNING` at COMMIT."""
        with self._writing_one() as conn:
            rows = conn.execute(self._sql(query), params).fetchall()
        return rows[0] if rows else None

    def _write_count(self, query: str, params: dict) -> int:
        """One single-statement write, its own transaction; the rows it changed."""
        with self._writing_one() as conn:
            return conn.execute(self._sql(query), params).rowcount

    # --- runs ---

    @once_more
    def snapshot(self) -> ExecutedState:
        """The latest run of each (task, machine, version) plus the active runs, in one query
        (runs without `output`)."""
        return ExecutedState.of(self._select("snapshot"))

    @once_more
    def pending(self) -> list[Run]:
        """Pending runs by (priority, created_at, id), without `output`."""
        return self._select("pending")

    @once_more
    def running(self) -> list[Run]:
        """Running runs by id, without `output`."""
        return self._select("running")

    @once_more
    def get_run(self, run_id: int) -> Run | None:
        """One run with its output and error, or None."""
        runs = self._select("get_run", {"id": run_id})
        return runs[0] if runs else None

    @once_more
    def get_runs(self, run_ids: Sequence[int]) -> dict[int, Run]:
        """The runs of `run_ids` that exist, by id, in one read."""
        if not run_ids:
            return {}
        found = self._select("get_runs", {"ids": self.values.array_in(list(run_ids))})
        return {run.id: run for run in found}

    @once_more
    def list_runs(
        self, status: Sequence[RunStatus] | None = None, team: str | None = None, limit: int = 1000
    ) -> list[Run]:
        """Runs newest first (by id), without `output`; `status` and `team` filter, a `limit`
        of None or below 1 means no limit."""
        values = self.values
        statuses = None if status is None else [RunStatus(s).value for s in status]
        return self._select(
            "list_runs",
            {
                "statuses": None if statuses is None else values.array_in(statuses),
                **team_bounds(team),
                "limit": limit if limit and limit > 0 else values.no_limit,
            },
        )

    @once_more
    def runs_page(
        self, filters: RunFilter, before: int | None = None, limit: int = 50
    ) -> list[Run]:
        """Runs newest first without `output`, below the keyset `before`, narrowed by
        `filters` (see `StateStore.runs_page`), in one query."""
        values = self.values
        statuses = [RunStatus(s).value for s in filters.statuses]
        statuses_in = values.array_in(statuses) if statuses else None
        return self._select(
            "runs_page", values.texts_in(runs_page_params(filters, before, limit, statuses_in))
        )

    # --- planners and drains ---

    @once_more
    def beat_drain(self, owner: str) -> None:
        """Stamp `owner`'s drain alive with the database's clock (see `StateStore.beat_drain`)."""
        with self._writing() as conn:
            conn.execute(self._sql("beat_drain"), {"owner": owner})
            conn.execute(self._sql("forget_drains"))

    @once_more
    def pending_planners(
        self, owner: str, lease_seconds: float = LEASE_SECONDS
    ) -> dict[int, tuple[str | None, bool]]:
        """Every pending run `owner` did not plan: its planner and whether that planner is
        alive (see `StateStore.pending_planners`)."""
        rows = self._rows(
            "pending_planners", {"owner": owner, **self.values.lease_in(lease_seconds)}
        )
        # Judged once per planner: a pass may have queued thousands of runs.
        alive = {planner: planner_alive(planner, bool(fresh), owner) for _, planner, fresh in rows}
        return {run_id: (planner, alive[planner]) for run_id, planner, _ in rows}

    def take_over(self, runs: dict[int, str | None], owner: str) -> list[int]:
        """Make `owner` the planner of those `runs` (id -> the dead planner) still pending
        under that planner, in one transaction. Returns the ids taken."""
        if not runs:
            return []
        query = self._sql("take_over")
        with self._writing() as conn:
            taken = [
                conn.execute(query, {"id": run_id, "old": old, "owner": owner}).fetchall()
                for run_id, old in runs.items()
            ]
        return sorted(rows[0][0] for rows in taken if rows)

    # --- a run's results ---

    def _leased(self, query: str, run_id: int, epoch: int, params: dict) -> Run:
        """A write guarded by (status running, epoch); raises `LeaseLost` if the guard fails."""
        raise NotImplementedError

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
        """Record a final status with its result, output capped. Raises `LeaseLost`."""
        if status.is_active:
            raise ValueError(f"finish needs a final status, not {status.value}")
        values = self.values
        return self._leased(
            "finish",
            run_id,
            epoch,
            {
                "status": status.value,
                "now": values.time_in(now),
                "exit_code": exit_code,
                "output": values.output_in(output),
                "error": values.text_in(error),
            },
        )

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
        """Back to `pending` for attempt + 1 after `not_before`. Raises `LeaseLost`."""
        values = self.values
        return self._leased(
            "requeue",
            run_id,
            epoch,
            {
                "not_before": values.time_in(not_before),
                "exit_code": exit_code,
                "output": values.output_in(output),
                "error": values.text_in(error),
            },
        )

    def block(
        self, run_id: int, error: str, now: datetime, status: RunStatus = RunStatus.BLOCKED
    ) -> Run | None:
        """A pending run whose dependency failed becomes `blocked`, one whose rollout halted
        `halted` (final: `finished_at` is set, so `failed_since` counts it). None if it was
        not pending."""
        values = self.values
        row = self._write_row(
            "block",
            {
                "id": run_id,
                "error": values.text_in(error),
                "now": values.time_in(now),
                "status": ending_without_run(status),
            },
        )
        return None if row is None else values.run(row)

    def adopt(
        self,
        run_id: int,
        status: RunStatus,
        *,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
    ) -> Run | None:
        """An `unknown` run gets the result its target kept; None if it is not unknown."""
        values = self.values
        row = self._write_row(
            "adopt",
            {
                "id": run_id,
                "status": status.value,
                "exit_code": exit_code,
                "output": values.output_in(output),
                "error": values.text_in(error),
            },
        )
        return None if row is None else values.run(row)

    def cancel_run(self, run_id: int, now: datetime, error: str | None = None) -> Run:
        """`queue cancel`: pending -> `cancelled`. Raises `InputError` (a `UsageError`: the
        run id is the command's argument) for an unknown or non-pending run."""
        values = self.values
        row = self._write_row(
            "cancel_pending",
            {
                "id": run_id,
                "now": values.time_in(now),
                "error": values.text_in(error) or QUEUE_CANCEL_ERROR,
            },
        )
        if row is None:
            raise self._not_allowed(run_id, "only pending runs can be cancelled")
        return values.run(row)

    def request_retry(self, run_id: int, now: datetime) -> Run:
        """`queue retry`: flag a failed, blocked, unknown or halted run for the next pass; raises
        `InputError` otherwise. Flagging twice is harmless."""
        row = self._write_row("request_retry", {"id": run_id})
        if row is None:
            raise self._not_allowed(
                run_id, "only failed, blocked, unknown or halted runs can be retried"
            )
        return self.values.run(row)

    def _not_allowed(self, run_id: int, rule: str) -> InputError:
        row = self._row("status_of", {"id": run_id})
        if row is None:
            return UsageError(f"run {run_id} does not exist (see `reconcile queue list`)")
        return UsageError(f"run {run_id} is {row[0]}; {rule}")

    @once_more
    def counts(self) -> dict[str, int]:
        """Runs by status; every status is present (0 when none)."""
        found = dict(self._rows("counts"))
        return {s.value: found.get(s.value, 0) for s in RunStatus}

    @once_more
    def previous_outcome(self, task: str, machine: str, before_id: int) -> RunStatus | None:
        """The newest final, non-cancelled run's status before `before_id`, or None."""
        row = self._row(
            "previous_outcome", {"task": task, "machine": machine, "before_id": before_id}
        )
        return None if row is None else STATUS[row[0]]

    @once_more
    def failed_since(self, since: datetime) -> int:
        """Runs that ended failed, blocked, unknown or halted at or after `since`."""
        return self._rows("failed_since", {"since": self.values.time_in(since)})[0][0]

    # --- commits, freezes and approvals ---

    def record_commit(self, commit: str, now: datetime) -> None:
        """Remember that a pass reconciled `commit` (a full sha)."""
        self._write_count("record_commit", {"commit": commit, "now": self.values.time_in(now)})

    @once_more
    def last_commit(self) -> str | None:
        """The commit the latest pass reconciled, or None."""
        row = self._row("last_commit")
        return row[0] if row else None

    @once_more
    def last_pass(self) -> tuple[str, datetime] | None:
        """The commit the latest pass reconciled and when, or None."""
        row = self._row("last_pass")
        return None if row is None else (row[0], self.values.time_out(row[1]))

    @once_more
    def reconciled_before(self, commit: str) -> str | None:
        """The commit reconciled last before `commit` first was, or None."""
        row = self._row("reconciled_before", {"commit": commit})
        return row[0] if row else None

    @once_more
    def reconciled_freezes(self) -> list[tuple[str, Freeze]]:
        """The freezes the latest pass recorded with its plan."""
        time_out = self.values.time_out
        return [
            (scope, Freeze(reason, time_out(until), bool(p1)))
            for scope, reason, until, p1 in self._rows("reconciled_freezes")
        ]

    def add_approvals(self, approvals: Sequence[ApprovalRecord], now: datetime) -> int:
        """Record `approvals` in one transaction; a repeated one replaces the old row."""
        stamp = self.values.time_in(now)
        with self._writing() as conn:
            query = self._sql("approval_insert")
            return sum(conn.execute(query, a.params(stamp)).rowcount for a in approvals)

    @once_more
    def approvals_of(self, task: str) -> list[ApprovalRecord]:
        """Every approval given for `task`, oldest first."""
        time_out = self.values.time_out
        return [
            ApprovalRecord(*row[:7], approved_at=time_out(row[7]))
            for row in self._rows("approvals_of_task", {"task": task})
        ]

    # --- live output and kills ---

    @once_more
    def append_output(
        self, chunks: Sequence[OutputChunk], trims: Sequence[OutputTrim] = ()
    ) -> None:
        """Add the chunks and drop the trimmed ones, in one transaction (a second try after a
        dropped connection adds nothing twice: a chunk already there is kept)."""
        if not chunks and not trims:
            return
        chunk_in = self.values.chunk_in
        with self._writing() as conn, closing(conn.cursor()) as cursor:
            if chunks:
                cursor.executemany(
                    self._sql("output_insert"),
                    [
                        {
                            "run_id": c.run_id,
                            "attempt": c.attempt,
                            "seq": c.seq,
                            "start": c.start,
                            "body": chunk_in(c.body),
                        }
                        for c in chunks
                    ],
                )
            if trims:
                cursor.executemany(
                    self._sql("output_trim"),
                    [{"run_id": t.run_id, "attempt": t.attempt, "seq": t.seq} for t in trims],
                )

    @once_more
    def output_since(self, run_id: int, attempt: int, after_seq: int = 0) -> list[OutputChunk]:
        """The chunks of a run's attempt after `after_seq`, in order."""
        output_out = self.values.output_out
        rows = self._rows(
            "output_since", {"run_id": run_id, "attempt": attempt, "after": after_seq}
        )
        return [
            OutputChunk(run_id, attempt, seq, start, output_out(body)) for seq, start, body in rows
        ]

    @once_more
    def drop_output(self, run_ids: Sequence[int]) -> None:
        """Forget every chunk of `run_ids` (twice is the same as once)."""
        if run_ids:
            self._write_count("output_drop", {"ids": self.values.array_in(list(run_ids))})

    def request_kill(self, request: KillRequest, now: datetime) -> None:
        """Ask the holder of the run to stop it."""
        self._write_count("kill_request", kill_params(request) | {"now": self.values.time_in(now)})

    @once_more
    def kill_requests(self, run_ids: Sequence[int]) -> dict[int, KillRequest]:
        """The kill requests of `run_ids`, by run id."""
        if not run_ids:
            return {}
        rows = self._rows("kill_requests_of", {"ids": self.values.array_in(list(run_ids))})
        return {row[0]: KillRequest(*row) for row in rows}

    # --- the audit log ---

    @once_more
    def audit_page(
        self, after_seq: int = 0, limit: int = 1000, since: str | None = None
    ) -> list[AuditEntry]:
        """Entries after `after_seq` in seq order (see `StateStore.audit_page`)."""
        rows = self._rows("audit_page", {"after": after_seq, "limit": limit, "since": since})
        return [audit_entry(row) for row in rows]

    @once_more
    def audit_head(self) -> AuditEntry | None:
        """The newest entry, or None."""
        row = self._row("audit_head")
        return None if row is None else audit_entry(row)

    @once_more
    def audit_anchor(self) -> Anchor | None:
        """The last pruned entry's (seq, hash), or None."""
        row = self._row("audit_anchor")
        return None if row is None else Anchor(row[0], row[1])

    # --- alerts and their outbox ---

    def record_alert(
        self, alert: Alert, deliveries: Sequence[Delivery], owner: str, now: datetime
    ) -> bool:
        """Remember the alert's key and queue its deliveries, or do nothing (see the port).
        The alert memory's primary key decides between concurrent reconcilers: the second
        insert waits for the first transaction, then does nothing."""
        values = self.values
        key = alert.key
        line = {"task": key.task, "machine": key.machine}
        stamp = values.time_in(now)
        with self._writing() as conn:
            if (
                alert.run_id is not None
                and conn.execute(
                    self._sql("alert_newer"), {**line, "run_id": alert.run_id}
                ).fetchall()
            ):
                return False
            remembered = conn.execute(
                self._sql("alert_remember"),
                {
                    **line,
                    "version": key.version,
                    "outcome": key.outcome,
                    "run_id": alert.run_id,
                    "alert_id": alert.id,
                    "now": stamp,
                },
            ).fetchall()
            if not remembered:
                return False
            if alert.resets:
                conn.execute(
                    self._sql("alert_forget"), {**line, "outcomes": values.array_in(alert.resets)}
                )
            with closing(conn.cursor()) as cursor:
                cursor.executemany(
                    self._sql("outbox_insert"),
                    [
                        values.texts_in(
                            {
                                "id": d.id,
                                "alert_id": d.alert_id,
                                "team": d.team,
                                "target": d.target,
                                "event": d.event,
                                "title": d.title,
                                "body": d.body,
                                "now": stamp,
                                "owner": owner,
                            }
                        )
                        for d in deliveries
                    ],
                )
        return True

    def forget_alerts(self, task: str, machine: str, outcomes: Sequence[str]) -> int:
        """Drop the memory of `outcomes` for (task, machine)."""
        return self._write_count(
            "alert_forget",
            {"task": task, "machine": machine, "outcomes": self.values.array_in(list(outcomes))},
        )

    @once_more
    def unreachable_machines(self) -> set[str]:
        """Machines with a remembered `unreachable` alert."""
        return {row[0] for row in self._rows("unreachable_machines")}

    def claim_deliveries(
        self, owner: str, limit: int = 100, lease_seconds: float = DELIVERY_LEASE_SECONDS
    ) -> list[Delivery]:
        """Claim pending outbox rows nobody holds (by the database's clock), oldest first."""
        params = {"owner": owner, "limit": limit, **self.values.lease_in(lease_seconds)}
        with self._writing_one() as conn:
            rows = conn.execute(self._sql("outbox_claim"), params).fetchall()
        return [delivery(row) for row in sorted(rows, key=lambda row: (row[9], row[0]))]

    def delivery_done(self, delivery_id: str, now: datetime) -> None:
        """Mark a delivery delivered."""
        self._write_count("outbox_done", {"id": delivery_id, "now": self.values.time_in(now)})

    def delivery_failed(
        self, delivery_id: str, error: str, now: datetime, give_up: bool = False
    ) -> None:
        """Count a failed attempt; release the claim (or abandon the row)."""
        values = self.values
        self._write_count(
            "outbox_failed",
            {
                "id": delivery_id,
                "error": values.text_in(error),
                "now": values.time_in(now),
                "give_up": give_up,
            },
        )

    def release_deliveries(self, owner: str) -> int:
        """Release `owner`'s claims on undelivered rows."""
        return self._write_count("outbox_release", {"owner": owner})

    @once_more
    def outbox_pending(self) -> int:
        """Deliveries still waiting."""
        return self._rows("outbox_pending")[0][0]

    # --- retention ---

    @once_more
    def prunable_runs(self, before: datetime, after_id: int = 0, limit: int = 1000) -> list[Run]:
        """Runs `delete_runs` may remove, with their output, in id order."""
        return self._select(
            "prunable_runs",
            {"before": self.values.time_in(before), "after": after_id, "limit": limit},
        )

    def delete_runs(self, run_ids: Sequence[int], before: datetime) -> int:
        """Delete those of `run_ids` still prunable; the conditions are checked again. What a
        dead holder left of them (output chunks, kill requests) goes with them."""
        ids = self.values.array_in(list(run_ids))
        with self._writing() as conn:
            deleted = conn.execute(
                self._sql("delete_runs"), {"ids": ids, "before": self.values.time_in(before)}
            ).rowcount
            conn.execute(self._sql("output_of_deleted"), {"ids": ids})
            conn.execute(self._sql("kills_of_deleted"), {"ids": ids})
            return deleted

    def prune_outbox(self, before: datetime) -> int:
        """Delete delivered and abandoned outbox rows created before `before`."""
        return self._write_count("outbox_prune", {"before": self.values.time_in(before)})
