"""The PostgreSQL state store: one queue shared by several reconcilers and workers (psycopg 3).

`PostgresStore` implements the `StateStore` port (see `store.base` for the run protocol); the
calls it makes as the SQLite store does are written once in `store.sql_store`. The schema and
every query live in `sql/postgres.sql`; this module binds parameters, maps rows to `Run`
values, and is the one place that translates psycopg errors into `StoreError`, naming
the store by its URL with any password replaced by `***`.

Connections: one for queries, shared by the engine's threads behind a `threading.Lock` (each
store call is one statement or one short transaction, so a pool would buy nothing but more
sessions), plus one dedicated connection per `pass_lock`, opened for the lock and closed when
it is released: a session-level advisory lock must not share a session that might be reset or
recycled, and it then dies exactly with its holder. The query connection runs in autocommit:
most writes are a single statement (one round trip, its own transaction); the rest use an
explicit transaction. A connection that broke (server restart, `pg_terminate_backend`) fails
the call in progress with `StoreError` and is replaced on the next call; a server still
restarting (refusing connections, in crash recovery) is waited for, up to `RECONNECT_SECONDS`.
Calls that a second try cannot apply twice (reads, and compare-and-set writes: a dispatch
mark, a heartbeat, a sweep) are tried once more on the new connection, and a claim finds out
whether it committed, so a worker rides out a database restart (`@once_more`, `claim`). So do
the batches of a scheduling round (`claim_batch`, `dispatch_batch`, `end_batch`): their runs
are looked at to tell whether the batch committed, and it is tried once more only when it did
not (`_batch`). Other writes are left to the caller's retry.

Audit entries (migration 6): a batch queues its entries in `audit_queue` in its own
transaction, without the audit lock, so workers never wait on each other to append; a sealer
(`seal_audit`) links queued entries into the hash chain in queue order under the lock. Every
store seals after its batches when it is due (try-lock: never waits), the engine at the end of
a pass and when a worker stops, and `append_audit` before it appends.

Times: `timestamptz` columns, read back as aware UTC datetimes (the session time zone is UTC).
Lease comparisons use the server's `now()`; the `now` arguments fill the run's history.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict

from reconciler.adapters.audit.chain import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    StoredEntry,
    canonical_text,
    chain_texts,
    storable,
    stored_fields,
)
from reconciler.adapters.store.base import (
    LEASE_SECONDS,
    AuditOf,
    Batch,
    ClaimRequest,
    LeaseLost,
    ManualRun,
    PlanAuditOf,
    RunChanges,
    RunEnd,
    check_ends,
    claim_outcome,
    no_audit,
    no_plan_audit,
)
from reconciler.adapters.store.common import (
    UNKNOWN_ERROR,
    SqlFile,
    audit_entry,
    cancel_error,
    cap_output,
    freeze_params,
    manual_fields,
    manual_run_params,
    only_comments,
    parse_sql_file,
    redact_url,
    scrub,
    url_passwords,
)
from reconciler.adapters.store.sql_store import COLUMNS, STATUS, SqlStore, SqlValues, once_more
from reconciler.core.errors import LockError, StoreError
from reconciler.core.frozen import build_frozen
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Run, RunStatus

# Advisory lock keys: constants, so every process agrees; advisory locks are scoped to one
# database, so two stores on one server never contend. Each is 8 ASCII bytes read as a bigint.
PASS_LOCK_KEY = int.from_bytes(b"rcnlpass", "big")  # the pass lock (session level)
MIGRATE_LOCK_KEY = int.from_bytes(b"rcnlmigr", "big")  # migrating (transaction level)
RECORD_LOCK_KEY = int.from_bytes(b"rcnlplan", "big")  # record_plan (transaction level)
AUDIT_LOCK_KEY = int.from_bytes(b"rcnlaudt", "big")  # audit appends (transaction level)
LOCK_POLL_SECONDS = 0.05  # pass-lock polling interval
CONNECT_TIMEOUT_SECONDS = 10  # unless the URL says otherwise: an unreachable server fails fast
RECONNECT_SECONDS = 20.0  # how long a broken connection waits for a restarting server
# Once an outage has lasted RECONNECT_SECONDS, a call fails at once for this long after a
# failed connection attempt: a server that does not answer costs `connect_timeout` per
# attempt, and the engine's retries of an end write would each pay it.
RETRY_GAP_SECONDS = 5.0
# The audit sealer (migration 6): entries linked per sealing transaction, at most. A store that
# queued entries seals after a batch when it last tried SEAL_EVERY_SECONDS ago or has queued
# SEAL_QUEUED entries since: one short locked transaction per many runs, an unsealed window
# of about half a second for `audit verify` to report, and never a wait (a try-lock: when
# another process is sealing, its sealer or a later one links these entries).
SEAL_BATCH = 1000
SEAL_EVERY_SECONDS = 0.5
SEAL_QUEUED = 256

log = logging.getLogger(__name__)


class MissingStore(StoreError):
    """`create=False` and the database holds no reconciler schema yet (nothing was recorded)."""


# --- the SQL file -----------------------------------------------------------------------------


def _sql_file() -> SqlFile:
    """`sql/postgres.sql`: its migrations (in order) and its named queries."""
    return parse_sql_file("postgres.sql", _whole_script)


def _whole_script(script: str) -> tuple[str, ...]:
    """A migration is sent as one script: psycopg runs several statements in one call when no
    parameter is bound, and the enclosing transaction keeps them all-or-nothing."""
    return () if only_comments(script) else (script,)


def _q(name: str) -> str:
    """The named query of the SQL file."""
    return _sql_file()[1][name]


# --- values <-> columns -----------------------------------------------------------------------


def _aware(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC (every clock of the reconciler is UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _text(value: str | None) -> str | None:
    """Text PostgreSQL accepts: NUL becomes U+FFFD (a `text` value cannot hold NUL) and lone
    surrogates are replaced (the column is UTF-8). Used for `error`; output is bytea."""
    if value is None:
        return None
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _ints(values: Iterable[int | None]) -> str:
    """An integer array parameter (the query casts it: `::bigint[]`, `::integer[]`) as its
    text literal, None as NULL: psycopg adapts a list element by element in Python, which
    cost a batch more client CPU than any of its statements' own work; one join is ~10x
    cheaper. Integers only (a bool or any other value is refused by the server, not cast)."""
    return "{" + ",".join(["NULL" if value is None else str(value) for value in values]) + "}"


def _text_values(params: dict) -> dict:
    """Every text parameter as PostgreSQL accepts it (no NUL, valid UTF-8)."""
    return {key: _text(value) if isinstance(value, str) else value for key, value in params.items()}


def _dispatched(run: Run, dispatched: bool = True) -> Run:
    """`run` as its dispatch mark leaves it (with False: as a claim alone left it): its
    fields with `dispatched` set, put in at once (`build_frozen`); `dataclasses.replace`
    runs the frozen `__init__` over every field (~9 us, as much as the rest of the run's
    dispatch bookkeeping)."""
    return build_frozen(Run, **{**run.__dict__, "dispatched": dispatched})


def _output(output: str) -> bytes:
    """Output capped (see `cap_output`) and encoded for the bytea column."""
    return cap_output(output).encode("utf-8")


def _run(row: tuple) -> Run:
    """A row of `runs` (its first `len(COLUMNS)` columns) as a `Run`."""
    (
        id_,
        task,
        machine,
        version,
        slot,
        commit,
        priority,
        status,
        attempt,
        reason,
        created,
        started,
        finished,
        not_before,
        exit_code,
        output,
        error,
        dispatched,
        retry_requested,
        epoch,
        owner,
    ) = row[: len(COLUMNS)]
    return build_frozen(
        Run,
        id=id_,
        task=task,
        machine=machine,
        version=version,
        priority=priority,
        status=STATUS[status],
        attempt=attempt,
        reason=reason,
        slot=slot,
        commit=commit,
        created_at=created,
        started_at=started,
        finished_at=finished,
        not_before=not_before,
        exit_code=exit_code,
        output=bytes(output).decode("utf-8", "replace"),
        error=error,
        dispatched=dispatched,
        retry_requested=retry_requested,
        epoch=epoch,
        owner=owner,
        **manual_fields(row, _MANUAL_AT),
    )


# Where migration 13's columns ("trigger", actor, params) are in a row of `runs` (after the
# columns of earlier migrations; the queries that name their columns put them there too).
_MANUAL_AT = 24


def _runs_by_id(rows: list[tuple]) -> list[Run]:
    return sorted((_run(row) for row in rows), key=lambda run: run.id)


class _EndRefused(Exception):
    """A round's end was refused (its lease was lost): its transaction is rolled back."""


# --- the store --------------------------------------------------------------------------------


class PostgresStore(SqlStore):
    """The `StateStore` on one PostgreSQL database. Thread-safe; see the module docstring.

    `url` is a libpq URL (`postgresql://` or `postgres://`). Opening connects and applies
    pending migrations; with `create=False` a database without the schema raises
    `MissingStore` instead (commands such as `plan` must not create a store). Raises
    `StoreError`, never with the URL's password in its message.
    """

    shared_queue = True

    def __init__(self, url: str, *, create: bool = True):
        self.url = redact_url(url)
        self._conninfo = url
        self._secrets = url_passwords(url)
        self._mutex = threading.Lock()
        self._closed = False
        # When the query connection last broke and could not be opened again since (the
        # monotonic clock), or None: the outage `_reconnect` waits out once.
        self._unreachable_since: float | None = None
        self._failed_at = 0.0  # when the last connection attempt failed (monotonic)
        # Audit entries this handle queued since its sealer last ran, and when it last tried.
        self._queued = 0
        self._sealed_at = time.monotonic()
        # Details this handle queued: `stored_fields` made them, so they are canonical JSON
        # of storable values by construction, and a seal need not parse them again to know
        # it (`_sealable`). A text's own property, whoever queued it; bounded, and a detail
        # not found here is merely checked.
        self._canonical: set[str] = set()
        # The connections `wait_for_runs` and `wait_for_ends` listen on, each opened by its
        # first call (by channel query: a worker waits for plans, a pass for ends).
        self._listeners: dict[str, psycopg.Connection] = {}
        self._conn = self._connect("open")
        try:
            self._open_schema(create)
        except BaseException:
            self._conn.close()
            raise

    # --- connections, errors, transactions ---

    _sql = staticmethod(_q)

    def _reading(self):
        return self._session("read")

    def _writing_one(self):
        """The session in autocommit: a single statement is its own transaction."""
        return self._session("write")

    def _writing(self):
        return self._transaction()

    def _retrying(self, method, *args, **kwargs):
        """Try a call that cannot apply twice once more when the connection broke under it (a
        server restart)."""
        try:
            return method(*args, **kwargs)
        except LeaseLost:
            raise
        except StoreError:
            if self._closed or not (self._conn.broken or self._conn.closed):
                raise  # the statement failed, not the connection: a second try fails alike
            return method(*args, **kwargs)

    def _connect(self, action: str) -> psycopg.Connection:
        """A new autocommit session in UTC; raises `StoreError`."""
        try:
            given = conninfo_to_dict(self._conninfo)
            defaults = {
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": "reconciler",
            }
            extra = {key: value for key, value in defaults.items() if key not in given}
            conn = psycopg.connect(self._conninfo, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise self._error(action, exc) from self._cause(exc)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            conn.close()
            raise self._error(action, exc) from self._cause(exc)
        return conn

    def _error(self, action: str, exc: Exception) -> StoreError:
        """The one translation of a psycopg error: what we tried, on which store, and why,
        on one line, with the URL's password scrubbed even where the driver echoed it."""
        return StoreError(
            f"cannot {action} state store {self.url}: "
            f"{scrub(str(exc), self._secrets) or type(exc).__name__}"
        )

    def _cause(self, exc: Exception) -> Exception | None:
        """`exc` to chain as the cause, or None when its own text holds a password: a
        traceback (`-v`) prints the cause, and no password may reach a log."""
        text = str(exc)
        return None if any(secret in text for secret in self._secrets) else exc

    @contextmanager
    def _session(self, action: str) -> Iterator[psycopg.Connection]:
        """The query connection, to this thread alone, for one call; errors translated."""
        with self._mutex:
            if self._closed:
                raise StoreError(f"cannot {action} state store {self.url}: the store is closed")
            if self._conn.broken or self._conn.closed:
                self._conn = self._reconnect(action)  # the last call failed with it: afresh
            try:
                yield self._conn
            except psycopg.Error as exc:
                raise self._error(action, exc) from self._cause(exc)

    def _reconnect(self, action: str) -> psycopg.Connection:
        """A new session for one that broke, waiting while the server refuses connections:
        it may be restarting, and nothing was sent yet. One wait of `RECONNECT_SECONDS` per
        outage, shared by every call: once the server has been unreachable that long, a call
        tries once and fails. Each call waiting a window of its own made a pass whose
        server went away for good take minutes to end (a heartbeat per run in flight, each
        end written again by the engine, each tried twice)."""
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        deadline, delay = self._unreachable_since + RECONNECT_SECONDS, 0.05
        if now > deadline and now - self._failed_at < RETRY_GAP_SECONDS:
            raise StoreError(
                f"cannot {action} state store {self.url}: unreachable for "
                f"{now - self._unreachable_since:.0f} s"
            )
        while True:
            try:
                conn = self._connect(action)
            except StoreError:
                self._failed_at = time.monotonic()
                if self._failed_at + delay > deadline:
                    raise
                time.sleep(delay)  # back off between connection attempts
                delay = min(delay * 2, 1.0)
            else:
                self._unreachable_since = None
                return conn

    @contextmanager
    def _transaction(self, action: str = "write") -> Iterator[psycopg.Connection]:
        """One transaction: committed on success, rolled back on any error."""
        with self._session(action) as conn, conn.transaction():
            yield conn

    @contextmanager
    def _pipelined(self, action: str) -> Iterator[psycopg.Connection]:
        """One transaction in pipeline mode, for the batches of a round: statements whose
        rows are not read yet travel together (BEGIN with the first one, the audit entries
        with COMMIT), so a batch costs a round trip per statement it reads, not per
        statement. Committed on success, rolled back on any error (an error of a statement
        sent ahead surfaces at the next read or at COMMIT). BEGIN and COMMIT are statements
        of the pipeline: psycopg's own transaction block waits for each of them."""
        with self._session(action) as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    yield conn
                    conn.execute("COMMIT")
            except BaseException:
                if not (conn.broken or conn.closed):
                    with suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                raise

    def _open_schema(self, create: bool) -> None:
        """Check for the schema (`create=False`) and apply pending migrations."""
        with self._session("open") as conn:
            has_runs, has_migrations = conn.execute(_q("schema_exists")).fetchone()
            applied = (
                {row[0] for row in conn.execute(_q("applied_migrations"))}
                if has_migrations
                else set()
            )
        if not create and not has_runs:
            raise MissingStore(f"state store {self.url} holds no runs yet")
        if applied >= {migration.version for migration in _sql_file()[0]}:
            return  # up to date: opening writes nothing (a read-only role can open it)
        self._migrate()

    def _migrate(self) -> None:
        """Apply every migration not yet recorded, in one transaction under an advisory lock,
        so a store is either at the new schema or untouched, and two processes opening a fresh
        database at once migrate it once (the second waits, then finds them recorded)."""
        with self._transaction("migrate") as conn:
            conn.execute(_q("lock_migrations"), {"key": MIGRATE_LOCK_KEY})
            conn.execute(_q("create_migrations"))
            applied = {row[0] for row in conn.execute(_q("applied_migrations"))}
            for migration in _sql_file()[0]:
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    _q("record_migration"), {"version": migration.version, "name": migration.name}
                )

    def close(self) -> None:
        """Seal what this handle queued (best effort: a later sealer links it otherwise), then
        close the query connection; idempotent. Later calls raise `StoreError`."""
        if self._queued and not self._closed:
            try:
                self.seal_audit(wait=True)
            except StoreError as exc:
                log.warning("audit entries left unsealed at close: %s", exc)
        with self._mutex:
            self._closed = True
            self._conn.close()
            for listener in self._listeners.values():
                listener.close()

    # --- the pass lock ---

    @contextmanager
    def pass_lock(self, timeout: float) -> Iterator[None]:
        """Hold the advisory lock `PASS_LOCK_KEY` for the body; `LockError` after `timeout`.

        On a dedicated connection opened here and closed on exit: the lock belongs to that
        session, so it is released when the body ends, and by the server when the holder's
        process dies however it dies (its socket closes, its session ends).
        """
        conn = self._connect("lock")
        try:
            self._acquire(conn, timeout)
            try:
                yield
            finally:
                # Unlocked explicitly: the server ends a closed session asynchronously, and a
                # pass started right after this one must find the lock free.
                with suppress(psycopg.Error):
                    conn.execute(_q("pass_unlock"), {"key": PASS_LOCK_KEY})
        finally:
            conn.close()

    def _acquire(self, conn: psycopg.Connection, timeout: float) -> None:
        """Poll `pg_try_advisory_lock` until it succeeds or `timeout` seconds have passed."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                [locked] = conn.execute(_q("try_pass_lock"), {"key": PASS_LOCK_KEY}).fetchone()
            except psycopg.Error as exc:
                raise self._error("lock", exc) from self._cause(exc)
            if locked:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockError(
                    f"another `reconcile` pass holds the lock of state store "
                    f"{self.url}; gave up after {timeout:g}s (see --lock-timeout)"
                )
            time.sleep(min(LOCK_POLL_SECONDS, remaining))

    # --- planning ---

    def record_plan(
        self,
        plan: Plan,
        commit: str | None,
        now: datetime,
        planner: str | None = None,
        audit: PlanAuditOf = no_plan_audit,
    ) -> list[Run]:
        """Apply `plan` in one transaction that also queues its audit entries (sealed into
        the chain later, as a batch's are); see `StateStore.record_plan`. Cancels first, so
        a plan that replaces a pending run by the same key can insert its successor."""
        with self._transaction() as conn:
            conn.execute(_q("lock_record"), {"key": RECORD_LOCK_KEY})
            cancelled = []
            for cancel in plan.cancel:
                # A run that started meanwhile is no longer the planner's to cancel: left alone.
                row = conn.execute(
                    _q("cancel_pending"),
                    {"id": cancel.run, "now": _aware(now), "error": cancel_error(cancel.reason)},
                ).fetchone()
                if row is not None:
                    cancelled.append(_run(row))
            for reslot in plan.reslot:
                conn.execute(_q("reslot_pending"), {"id": reslot.run, "slot": reslot.slot})
            if plan.freezes is not None:
                conn.execute(_q("forget_freezes"))
                for scope, freeze in plan.freezes:
                    params = freeze_params(scope, freeze, _aware)
                    conn.execute(_q("record_freeze"), params | {"reason": _text(freeze.reason)})
            inserted = self._insert(conn, plan.enqueue, commit, now, planner)
            records = list(audit(inserted, cancelled))
            self._enqueue(conn, records)
            if inserted:  # delivered at COMMIT: idle workers look at once (wait_for_runs)
                conn.execute(_q("notify_runs"))
        self._seal_if_due(len(records))
        return inserted

    def enqueue_manual(
        self, runs: Sequence[ManualRun], now: datetime, audit: AuditOf = no_audit
    ) -> list[Run]:
        """See `StateStore.enqueue_manual`: one transaction that queues the audit entries
        beside the runs (sealed into the chain later, as a batch's are) and wakes idle
        workers when it commits."""
        with self._transaction() as conn:
            inserted = [
                _run(
                    conn.execute(
                        _q("insert_manual_run"), manual_run_params(r, now, _aware)
                    ).fetchone()
                )
                for r in runs
            ]
            self._enqueue(conn, [record for run in inserted for record in audit(run)])
            if inserted:
                conn.execute(_q("notify_runs"))
        return inserted

    @staticmethod
    def _insert(
        conn: psycopg.Connection,
        enqueues: Sequence[Enqueue],
        commit: str | None,
        now: datetime,
        planner: str | None,
    ) -> list[Run]:
        """Insert the enqueues in one statement; returns the runs actually inserted (a key
        with an active run returns no row), in plan order. One statement, not one per run:
        a plan's runs cost one round trip and one result to read, not hundreds."""
        if not enqueues:
            return []
        params = {
            "tasks": [e.task for e in enqueues],
            "machines": [e.machine for e in enqueues],
            "versions": [e.version for e in enqueues],
            "slots": [e.slot for e in enqueues],
            "priorities": [e.priority for e in enqueues],
            "reasons": [getattr(e.reason, "value", e.reason) for e in enqueues],
            "commit": commit,
            "now": _aware(now),
            "planner": planner,
        }  # windows are judged at dispatch (not_before NULL)
        rows = conn.execute(_q("insert_runs"), params).fetchall()
        # RETURNING follows no order: each run by its key, in the order of the plan.
        by_key = {(run.task, run.machine, run.version, run.slot): run for run in map(_run, rows)}
        keys = ((e.task, e.machine, e.version, e.slot) for e in enqueues)
        return [run for key in keys if (run := by_key.pop(key, None)) is not None]

    def recover(self, now: datetime, keep_owner: str | None = None) -> list[Run]:
        """Runs of dead workers: on a shared queue only an expired lease proves a holder
        dead, so this is `sweep(LEASE_SECONDS, now)`; runs of live workers (`keep_owner`'s
        included) are left alone."""
        return self._sweep(LEASE_SECONDS, now, keep_owner)

    @once_more
    def sweep(self, lease_seconds: float, now: datetime) -> list[Run]:
        """Runs whose lease expired by the server's clock: undispatched -> `pending`,
        dispatched -> `unknown`. Returns them by id. See `StateStore.sweep`."""
        return self._sweep(lease_seconds, now, None)

    def _sweep(self, lease_seconds: float, now: datetime, keep_owner: str | None) -> list[Run]:
        lease = {"lease": max(float(lease_seconds), 0.0), "keep": keep_owner}
        with self._transaction() as conn:
            back = conn.execute(_q("sweep_undispatched"), lease).fetchall()
            lost = conn.execute(
                _q("sweep_dispatched"), {**lease, "now": _aware(now), "error": UNKNOWN_ERROR}
            ).fetchall()
        return _runs_by_id(back + lost)

    # --- planners ---

    # --- the queue ---

    def wait_for_runs(self, timeout: float) -> bool | None:
        """Wait up to `timeout` seconds for `record_plan`'s notification (sent at its COMMIT
        when it queued runs); see `_wait_on`."""
        return self._wait_on("listen_runs", timeout)

    def wait_for_ends(self, timeout: float) -> bool | None:
        """Wait up to `timeout` seconds for the notification of `end_batch` or `round_batch`
        (sent at their COMMIT when they record ends of runs whose planners have none
        pending: finish_batch_told); see `_wait_on`."""
        return self._wait_on("listen_ends", timeout)

    def _wait_on(self, listen: str, timeout: float) -> bool | None:
        """Wait on a connection of its own running the query `listen`, up to `timeout`
        seconds. Woken, it takes the notifications that came meanwhile too: the caller
        re-reads next, which covers them, and each would otherwise wake it once more. A
        listener that cannot be opened or broke is dropped (reopened by the next call) and
        the wait answers None: the caller then waits its own way, nothing is lost but the
        early wake-up."""
        try:
            listener = self._listening(listen)
            woken = False
            for _ in listener.notifies(timeout=max(timeout, 0.0), stop_after=1):
                woken = True
            if woken:
                for _ in listener.notifies(timeout=0):
                    pass
            return woken
        except (StoreError, psycopg.Error) as exc:
            self._drop_listener(listen, exc)
            return None

    def listen_for_ends(self) -> None:
        """Open `wait_for_ends`' listener now, if it is not open yet: the ends recorded from
        here on wake the next wait at once, even those recorded before it begins. A listener
        that cannot be opened is dropped (the next wait tries again)."""
        try:
            self._listening("listen_ends")
        except (StoreError, psycopg.Error) as exc:
            self._drop_listener("listen_ends", exc)

    def _listening(self, listen: str) -> psycopg.Connection:
        """The connection running the query `listen`, opened by the first call."""
        listener = self._listeners.get(listen)
        if listener is None or listener.closed or listener.broken:
            listener = self._listeners[listen] = self._connect("listen")
            listener.execute(_q(listen))
        return listener

    def _drop_listener(self, listen: str, exc: Exception) -> None:
        log.debug("cannot listen (%s) on state store %s: %s", listen, self.url, exc)
        dropped = self._listeners.pop(listen, None)
        if dropped is not None:
            with suppress(psycopg.Error):
                dropped.close()

    @once_more
    def run_changes(self, since: object | None = None) -> RunChanges:
        """The runs written since the snapshot `since` (migration 7: each write stamps its
        transaction), or every active run when `since` is None; the cursor is the snapshot
        of this read. One statement (one snapshot), without `output`: a round of a drain
        beside busy workers reads what they changed, not the whole queue."""
        if since is None:
            query, params = "active_runs", {}
        else:
            xmin = str(since).split(":", 1)[0]
            query, params = "run_changes", {"since": since, "xmin": xmin}
        with self._session("read") as conn:
            rows = conn.execute(_q(query), params).fetchall()
        runs = [_run(row) for row in rows if row[0] is not None]
        return RunChanges(runs, since is None, rows[0][-1])

    def claim(
        self, run_id: int, owner: str, now: datetime, max_parallel: int | None = None
    ) -> Run | None:
        """Compare-and-set `pending` -> `running` (epoch + 1) with `FOR UPDATE SKIP LOCKED`,
        committed before returning; None if it was not pending, another claim holds it, or
        its machine already runs `max_parallel` runs.

        The capacity check holds a transaction-level advisory lock on the machine's name, so
        workers claiming for one machine at once are serialised and `max_parallel` holds
        across every worker, not just within one.

        When the connection breaks under a claim (a server restart) the claim may or may not
        have committed. Once the server answers again the run is looked at: running under
        `owner` since exactly `now` (the claim's own stamp) means it did, and the run is
        ours; otherwise the claim is tried again. A claim is never lost to a stranded lease,
        and never taken twice."""
        try:
            return self._claim(run_id, owner, now, max_parallel)
        except StoreError:
            if self._closed or not (self._conn.broken or self._conn.closed):
                raise
        run = self.get_run(run_id)  # reconnects, waiting for the server
        if (
            run is not None
            and run.status is RunStatus.RUNNING
            and run.owner == owner
            and run.started_at == _aware(now)
        ):
            return run
        return self._claim(run_id, owner, now, max_parallel)

    def _claim(
        self, run_id: int, owner: str, now: datetime, max_parallel: int | None
    ) -> Run | None:
        params = {"id": run_id, "owner": owner, "now": _aware(now)}
        if max_parallel is None:
            row = self._write_row("claim", params)
            return None if row is None else _run(row)
        with self._transaction("claim") as conn:
            found = conn.execute(_q("lock_machine_of_run"), params).fetchone()
            if found is None:
                return None
            if (
                conn.execute(_q("running_on_machine"), {"machine": found[0]}).fetchone()[0]
                >= max_parallel
            ):
                return None
            row = conn.execute(_q("claim"), params).fetchone()
        return None if row is None else _run(row)

    # --- group commit: one transaction per batch ---------------------------------------------
    #
    # Each batch is one transaction holding its state changes and its audit entries, queued in
    # `audit_queue` (no audit lock: workers never wait on each other to append). A connection
    # that breaks under a batch leaves its outcome unknown: the runs are looked at once the
    # server answers again. A batch that is seen to have committed returns what it wrote; one
    # that did not is tried once more. It is never applied twice: a claim, a dispatch mark
    # and an end are compare-and-sets on the epoch, and their audit entries commit with them.

    def claim_batch(
        self,
        claims: Sequence[ClaimRequest],
        owner: str,
        now: datetime,
        audit: AuditOf = no_audit,
        leading: Sequence[AuditRecord] = (),
        want: int | None = None,
    ) -> Batch:
        """Claim the runs in request order (at most `want` of them) and queue `leading` then
        each claim's audit records, in one transaction (see `StateStore.claim_batch`); the
        claims themselves are one statement (see `_claim_rounds`).

        The machines of limited requests are locked first (the transaction-level advisory
        lock of `claim`, taken in key order so that two batches cannot deadlock), then their
        running runs are counted once; each claim of the batch adds to its machine's count.
        After a broken connection the claim is ours when its run is running under `owner`
        since exactly `now` (as in `claim`); when none is (and the leading entries are not
        found either) nothing committed and the batch is tried again."""
        if not claims and not leading:
            return Batch([], [])

        def landed() -> Batch | None:
            ours = self._claimed_by(claims, owner, _aware(now))
            if ours or (leading and self._has_entry(leading[0])):
                return Batch(*claim_outcome(claims, ours, want))
            return None

        return self._batch(
            lambda: self._claim_batch(claims, owner, now, audit, leading, want), landed
        )

    def _claim_batch(
        self,
        claims: Sequence[ClaimRequest],
        owner: str,
        now: datetime,
        audit: AuditOf,
        leading: Sequence[AuditRecord],
        want: int | None,
    ) -> tuple[Batch, int]:
        records = list(leading)
        stamp = _aware(now)
        with self._pipelined("claim") as conn:
            conn.execute(_q("claim_commit_unflushed"))
            limited = [c.run_id for c in claims if c.max_parallel is not None]
            if limited:  # held from here to COMMIT: claims for one machine take turns
                conn.execute(_q("lock_machines_of_runs"), {"ids": _ints(limited)})
            got = self._claim_rounds(conn, claims, owner, stamp, want)
            claimed, refused, unclaimed = claim_outcome(claims, got, want)
            for run in claimed:
                records.extend(audit(run))
            self._enqueue(conn, records)
        return Batch(claimed, refused, unclaimed), len(records)

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
        """The round's ends, then its claims and their dispatch marks, with their audit
        records queued in that order, in one transaction committed with the server's durable
        commit (see `StateStore.round_batch`): two round trips, one for the ends (with the
        notification of ends and the machines' locks in their statement) and the claims
        (which mark their runs dispatched too), one for the audit entries and COMMIT.

        After a broken connection the round committed when one of its claims is running
        under `owner` since exactly `now` and dispatched, or one of its ends shows (as in
        `end_batch`), or its leading entry is found; otherwise nothing committed and it is
        tried again."""
        check_ends(ends)
        if not ends and not claims and not leading:
            return Batch([], []), Batch([], [])
        stamp = _aware(now)

        def landed() -> tuple[Batch, Batch] | None:
            ours = self._claimed_by(claims, owner, stamp, dispatched=True)
            shown = self._ends_landed(ends, stamp) if ends else None
            if not (ours or shown or (leading and self._has_entry(leading[0]))):
                return None
            return shown or Batch([], []), Batch(*claim_outcome(claims, ours, want))

        def write() -> tuple[tuple[Batch, Batch], int]:
            try:
                return self._round_trips(
                    ends, claims, owner, stamp, ended, claimed, dispatched, leading, want
                )
            except _EndRefused:
                return self._ends_alone(ends, claims, stamp, ended)

        return self._batch(write, landed)

    def _claimed_by(
        self, claims: Sequence[ClaimRequest], owner: str, stamp: datetime, dispatched=False
    ) -> dict[int, Run]:
        """The runs of `claims` a batch stamped `stamp` under `owner` claimed (and, with
        `dispatched`, marked dispatched): how a batch whose connection broke tells whether
        it committed."""
        return {
            run.id: run
            for run in self._runs_by_ids([request.run_id for request in claims])
            if run.status is RunStatus.RUNNING
            and run.owner == owner
            and run.started_at == stamp
            and (run.dispatched or not dispatched)
        }

    def _ends_alone(
        self,
        ends: Sequence[RunEnd],
        claims: Sequence[ClaimRequest],
        stamp: datetime,
        ended_audit: AuditOf,
    ) -> tuple[tuple[Batch, Batch], int]:
        """A round whose ends were not all recorded: those ends alone, in a transaction of
        their own; none of its claims is made (all `unclaimed`)."""
        with self._pipelined("record the end of runs in") as conn:
            done = self._read_ends(conn, self._send_ends(conn, ends, stamp))
            written = [done[end.run_id] for end in ends if end.run_id in done]
            gone = [end.run_id for end in ends if end.run_id not in done]
            records = [record for run in written for record in ended_audit(run)]
            self._enqueue(conn, records)
        return (Batch(written, gone), Batch([], [], [c.run_id for c in claims])), len(records)

    def _round_trips(
        self,
        ends: Sequence[RunEnd],
        claims: Sequence[ClaimRequest],
        owner: str,
        stamp: datetime,
        ended_audit: AuditOf,
        claimed_audit: AuditOf,
        dispatched_audit: AuditOf,
        leading: Sequence[AuditRecord],
        want: int | None,
    ) -> tuple[tuple[Batch, Batch], int]:
        """The ends with the machines' locks (the ends' last statement takes them: see
        `_send_ends`; a statement of their own in a round without ends) and the claims (one
        round trip: read together; the claims mark their runs dispatched too: see
        `claim_within_limits`), then the entries (the ends', the leading ones, then each
        claim's and each dispatch's, as a dispatch batch would queue them) and COMMIT. The
        commit is durable while the machines' locks are held: a claim that a crashed server
        forgot would otherwise be dispatched (see `claim_commit_unflushed` for the claim
        batch alone). An end that was refused rolls the round back, claims included, and
        the ends alone are recorded again (`_ends_alone`): a round decided on a result that
        is not recorded claims nothing. That is rare (a lost lease); the usual round saves the round trip that
        reading the ends before sending the claims would cost. Raises `_EndRefused` (its
        transaction rolled back) when an end is refused."""
        records: list[AuditRecord] = []
        written: list[Run] = []
        with self._pipelined("run a round in") as conn:
            # The machine locks are held from here to COMMIT: claims for one machine take
            # turns. Taken by the ends' last statement when there are ends (one statement
            # fewer), before the claims' statement either way.
            limited = [c.run_id for c in claims if c.max_parallel is not None]
            sent = self._send_ends(conn, ends, stamp, limited) if ends else []
            if limited and not ends:
                conn.execute(_q("lock_machines_of_runs"), {"ids": _ints(limited)})
            first = (
                self._send_claims(conn, claims, owner, stamp, want, dispatch=True)
                if claims and want != 0
                else None
            )
            if ends:
                done = self._read_ends(conn, sent)
                if len(done) < len(ends):  # decided on a result that is not recorded
                    raise _EndRefused()
                written = [done[end.run_id] for end in ends]
                records = [record for run in written for record in ended_audit(run)]
            records += leading
            got = (
                self._claim_rounds(conn, claims, owner, stamp, want, first, dispatch=True)
                if claims
                else {}
            )
            taken, refused, unclaimed = claim_outcome(claims, got, want)
            # The claims marked their runs dispatched (in this transaction, with their
            # entries: a dispatch mark of its own would rewrite each run's row once more).
            # The claim's entry is made from the run as a claim alone leaves it.
            for run in taken:
                records.extend(claimed_audit(_dispatched(run, False)))
            for run in taken:
                records.extend(dispatched_audit(run))
            self._enqueue(conn, records)
        return (Batch(written, []), Batch(taken, refused, unclaimed)), len(records)

    @staticmethod
    def _send_claims(
        conn: psycopg.Connection,
        claims: Sequence[ClaimRequest],
        owner: str,
        stamp: datetime,
        want: int | None,
        dispatch: bool = False,
    ) -> psycopg.Cursor:
        """Send one `claim_within_limits` of `claims` (at most `want`; with `dispatch`,
        marking them dispatched too); read by the caller."""
        return conn.execute(
            _q("claim_within_limits"),
            {
                "ids": _ints(c.run_id for c in claims),
                "limits": _ints(c.max_parallel for c in claims),
                "want": want,
                "owner": owner,
                "now": stamp,
                "dispatch": dispatch,
            },
        )

    @staticmethod
    def _claim_rounds(
        conn: psycopg.Connection,
        claims: Sequence[ClaimRequest],
        owner: str,
        stamp: datetime,
        want: int | None,
        first: psycopg.Cursor | None = None,
        dispatch: bool = False,
    ) -> dict[int, Run]:
        """The runs claimed, by id, up to `want` of them, in request order, each within its
        machine's `max_parallel` counting the runs running there and the requests before it
        (`claim_within_limits`, one statement after the machine locks: sent with them, one
        round trip). A run chosen but not claimed (another worker holds it: SKIP LOCKED, or
        took it) frees its place for another round; usually there is none. `first`: the
        first round's statement, already sent with what came before it (not read yet).
        `dispatch`: the claims mark their runs dispatched too (`round_batch`)."""
        got: dict[int, Run] = {}
        failed: set[int] = set()
        while True:
            if first is None:
                todo = [c for c in claims if c.run_id not in got and c.run_id not in failed]
                left = None if want is None else want - len(got)
                if not todo or left == 0:
                    return got
                first = PostgresStore._send_claims(conn, todo, owner, stamp, left, dispatch)
            rows, first = first.fetchall(), None
            chosen = rows[0][-1] or []
            got.update((row[0], _run(row)) for row in rows if row[0] is not None)
            lost = [run_id for run_id in chosen if run_id not in got]
            if not lost:
                return got
            failed.update(lost)

    def dispatch_batch(
        self, runs: Sequence[Run], now: datetime, audit: AuditOf = no_audit
    ) -> Batch:
        """Mark the runs dispatched (one statement) and queue their audit records, in one
        transaction committed with the server's durable commit: after it returns, every
        command of the batch may be sent. A run no longer held at its epoch is refused.
        After a broken connection the batch committed when one of its runs is dispatched at
        its epoch (all-or-nothing: then all that were not refused are). A run is marked only
        while its owner is still the claim's: a claim is committed unflushed
        (`claim_commit_unflushed`), so a server that crashed may have forgotten it, and another
        worker's claim of the run since holds the same epoch."""
        if not runs:
            return Batch([], [])
        held = {run.id: (run.epoch, run.owner) for run in runs}

        def landed() -> Batch | None:
            found = {
                run.id: run
                for run in self._runs_by_ids(list(held))
                if run.status is RunStatus.RUNNING
                and run.dispatched
                and (run.epoch, run.owner) == held[run.id]
            }
            if not found:
                return None
            order = [run.id for run in runs]
            return Batch(
                [found[i] for i in order if i in found], [i for i in order if i not in found]
            )

        return self._batch(lambda: self._dispatch_batch(runs, audit), landed)

    def _dispatch_batch(self, runs: Sequence[Run], audit: AuditOf) -> tuple[Batch, int]:
        """One statement marks the runs and queues the entries of those it marked: one round
        trip. A statement alone is a transaction of its own (the session is in autocommit),
        committed durably as any; BEGIN and COMMIT around it would add two statements and a
        pipeline's work, a tenth of the batch's client CPU. The entries are made before, from
        each run as the mark leaves it (`dispatched`: the mark changes nothing else a `Run`
        holds)."""
        with self._session("dispatch") as conn:
            sent, entries = self._send_dispatch(conn, runs, audit)
            rows = sent.fetchall()
        done = {row[0]: _run(row) for row in rows}
        marked = [done[run.id] for run in runs if run.id in done]
        queued = sum(1 for run_id in entries if run_id in done)
        return Batch(marked, [run.id for run in runs if run.id not in done]), queued

    def _send_dispatch(
        self,
        conn: psycopg.Connection,
        runs: Sequence[Run],
        audit: AuditOf,
    ) -> tuple[psycopg.Cursor | None, list[int]]:
        """Send the statement marking `runs` dispatched and queueing their entries (made from
        each run as the mark leaves it: `dispatched` is all it changes) in the caller's
        transaction; its rows are read after COMMIT. Returns the cursor (None without runs)
        and the run of each entry, in order."""
        if not runs:
            return None, []
        entries = [
            (run.id, stored_fields(record)) for run in runs for record in audit(_dispatched(run))
        ]
        columns = [list(column) for column in zip(*(fields for _, fields in entries))] or [[]] * 4
        self._made_canonical(columns[3])
        params = {
            "ids": _ints(run.id for run in runs),
            "epochs": _ints(run.epoch for run in runs),
            "owners": [run.owner for run in runs],
            "runs": _ints(run_id for run_id, _ in entries),
            **dict(zip(("at", "actor", "action", "detail"), columns)),
        }
        return conn.execute(_q("dispatch_batch_queued"), params), [r for r, _ in entries]

    def end_batch(self, ends: Sequence[RunEnd], now: datetime, audit: AuditOf = no_audit) -> Batch:
        """Record each end (`finish`, or `requeue` with `retry_at`) and queue its audit
        records, in one transaction (two statements: the finishes and the requeues). A run
        no longer held at its epoch is refused. After a broken connection the batch
        committed when one of its ends shows (`_ends_landed`)."""
        check_ends(ends)
        if not ends:
            return Batch([], [])
        stamp = _aware(now)
        return self._batch(
            lambda: self._end_batch(ends, stamp, audit), lambda: self._ends_landed(ends, stamp)
        )

    def _ends_landed(self, ends: Sequence[RunEnd], stamp: datetime) -> Batch | None:
        """After a broken connection: the ends that show (a finish: that status at `stamp`;
        a requeue: no longer running at its epoch, waiting for `retry_at`), None if none
        does (the batch did not commit)."""

        def shows(end: RunEnd, run: Run) -> bool:
            if run.status is RunStatus.RUNNING and run.epoch == end.epoch:
                return False
            if end.retry_at is not None:
                return run.epoch >= end.epoch and run.not_before == _aware(end.retry_at)
            return run.status is end.status and run.finished_at == stamp

        found = {run.id: run for run in self._runs_by_ids([end.run_id for end in ends])}
        shown = {
            e.run_id: found[e.run_id]
            for e in ends
            if e.run_id in found and shows(e, found[e.run_id])
        }
        if not shown:
            return None
        order = [end.run_id for end in ends]
        return Batch([shown[i] for i in order if i in shown], [i for i in order if i not in shown])

    def _end_batch(
        self, ends: Sequence[RunEnd], now: datetime, audit: AuditOf
    ) -> tuple[Batch, int]:
        with self._pipelined("record the end of runs in") as conn:
            done = self._read_ends(conn, self._send_ends(conn, ends, now))
            written = [done[end.run_id] for end in ends if end.run_id in done]
            records = [record for run in written for record in audit(run)]
            self._enqueue(conn, records)
        return Batch(written, [end.run_id for end in ends if end.run_id not in done]), len(records)

    @staticmethod
    def _send_ends(
        conn: psycopg.Connection, ends: Sequence[RunEnd], now: datetime, lock: Sequence[int] = ()
    ) -> list:
        """Send the statements of `ends` (the finishes and the requeues travel together),
        with the notification of ends (delivered at COMMIT: a pass waiting on
        runs held here looks at once) and the machine locks of the runs `lock` (the claims
        sent after them, `lock_machines_of_runs`) in the last of them: the requeues first,
        then the finishes (`finish_batch_told`). Requeues alone notify no one (the runs they
        requeue are pending again: their planners have a run pending, which the notification
        waits for), so after them the locks go alone. Returns the cursors of the ends, whose
        rows are read after (`_read_ends`)."""
        finishes = [end for end in ends if end.retry_at is None]
        retries = [end for end in ends if end.retry_at is not None]
        sent = []
        if retries:
            columns = {**_end_columns(retries)}
            columns["not_befores"] = [_aware(e.retry_at) for e in retries]
            sent.append(conn.execute(_q("requeue_batch"), columns))
        if finishes:
            columns = {**_end_columns(finishes), "now": now}
            columns["statuses"] = [e.status.value for e in finishes]
            columns["ended"] = _ints(end.run_id for end in ends)
            columns["lock"] = _ints(lock)
            sent.append(conn.execute(_q("finish_batch_told"), columns))
        elif lock:
            conn.execute(_q("lock_machines_of_runs"), {"ids": _ints(lock)})
        return sent

    @staticmethod
    def _read_ends(conn: psycopg.Connection, sent: list) -> dict[int, Run]:
        done: dict[int, Run] = {}
        for cursor in sent:
            done.update((row[0], _run(row)) for row in cursor.fetchall())
        return done

    def _batch(self, write, landed) -> Batch:
        """Run a batch `write` (returns the batch and how many entries it queued); when the
        connection broke under it, ask `landed` (the runs looked at, reconnecting) whether it
        committed, and try once more if not. Then seal, if it is time (`_seal_if_due`)."""
        try:
            batch, queued = write()
        except StoreError:
            if self._closed or not (self._conn.broken or self._conn.closed):
                raise
            found = landed()
            if found is not None:
                return found  # its entries are queued: a later seal links them
            batch, queued = write()
        self._seal_if_due(queued)
        return batch

    @once_more
    def _runs_by_ids(self, ids: list[int]) -> list[Run]:
        return self._select("runs_by_ids", {"ids": ids})

    @once_more
    def _has_entry(self, record: AuditRecord) -> bool:
        at, actor, action, detail = stored_fields(record)
        params = {"at": at, "actor": actor, "action": action, "detail": detail}
        with self._session("read") as conn:
            return bool(conn.execute(_q("audit_has_entry"), params).fetchone()[0])

    def _enqueue(self, conn: psycopg.Connection, records: Sequence[AuditRecord]) -> None:
        """Queue `records`, in order, in the caller's transaction (one statement)."""
        if not records:
            return
        columns = [list(column) for column in zip(*map(stored_fields, records))]
        self._made_canonical(columns[3])
        conn.execute(
            _q("audit_enqueue"),
            {"at": columns[0], "actor": columns[1], "action": columns[2], "detail": columns[3]},
        )

    def _made_canonical(self, details: list[str]) -> None:
        """Remember `details`, made by `stored_fields` (the caller holds the session)."""
        if len(self._canonical) > 4 * SEAL_BATCH:  # seals that keep failing: start afresh
            self._canonical.clear()
        self._canonical.update(details)

    # --- the sealer ---

    def _seal_if_due(self, queued: int) -> None:
        """After a batch: seal without waiting when this handle queued `SEAL_QUEUED` entries
        or last tried `SEAL_EVERY_SECONDS` ago. Never raises: the batch committed, and an
        entry left queued is sealed by the next sealer (of any process)."""
        self._queued += queued
        if not self._queued:
            return
        clock = time.monotonic()
        if self._queued < SEAL_QUEUED and clock - self._sealed_at < SEAL_EVERY_SECONDS:
            return
        self._sealed_at = clock
        try:
            sealed = self._seal_once(wait=False)
        except StoreError as exc:
            log.warning("cannot seal audit entries now (a later seal will): %s", exc)
            return
        if sealed is not None and sealed < SEAL_BATCH:
            self._queued = 0  # the queue was emptied: ours included

    def seal_audit(self, wait: bool = False) -> int:
        """Link queued audit entries into the chain, in id order, in bounded transactions
        (`SEAL_BATCH` entries each) under the audit lock, until the queue is empty. Without
        `wait` it gives up at once when another sealer holds the lock (that sealer links what
        was committed before it looked); with `wait` it waits its turn. Returns how many
        entries this call sealed."""
        total = 0
        while True:
            sealed = self._seal_once(wait)
            if sealed is None:
                return total
            total += sealed
            if sealed < SEAL_BATCH:
                self._queued = 0
                return total

    def _seal_once(self, wait: bool) -> int | None:
        """One sealing transaction: how many it sealed, or None when the lock was busy."""
        with self._transaction("seal the audit log of") as conn:
            if wait:
                conn.execute(_q("lock_audit"), {"key": AUDIT_LOCK_KEY})
            elif not conn.execute(_q("try_lock_audit"), {"key": AUDIT_LOCK_KEY}).fetchone()[0]:
                return None
            return self._seal_locked(conn)

    def _seal_locked(self, conn: psycopg.Connection) -> int:
        """Move up to `SEAL_BATCH` queued entries into the chain (the audit lock is held)."""
        rows = conn.execute(_q("audit_queued"), {"limit": SEAL_BATCH}).fetchall()
        if not rows:
            return 0
        known, self._canonical = self._canonical, set()
        texts = [
            (at, actor, action, detail if detail in known else _sealable(detail))
            for _, at, actor, action, detail in rows
        ]
        self._insert_rows(conn, chain_texts(*self._head(conn), texts))
        removed = conn.execute(_q("audit_dequeue"), {"ids": _ints(row[0] for row in rows)}).rowcount
        if removed != len(rows):
            # Left queued, they would be sealed again: refuse to chain anything twice.
            raise psycopg.DataError(
                f"sealed {len(rows)} queued audit entries but could remove {removed} from "
                "the queue (see migration 6's policy)"
            )
        return len(rows)

    @staticmethod
    def _head(conn: psycopg.Connection) -> tuple[int, str]:
        """(seq, hash) the next entry links to: the head, else the anchor, else genesis."""
        head = conn.execute(_q("audit_head")).fetchone()
        if head is not None:
            return head[0], head[6]
        anchor = conn.execute(_q("audit_anchor")).fetchone()
        return (anchor[0], anchor[1]) if anchor is not None else (0, GENESIS)

    @staticmethod
    def _insert_rows(conn: psycopg.Connection, rows: Sequence[StoredEntry]) -> None:
        """Insert linked entries as rows (seq, at, actor, action, detail, prev, hash), in one
        statement; their texts are storable already: stored text is hashed text."""
        seqs, *texts = (list(column) for column in zip(*rows)) if rows else ([],) * 7
        names = ("at", "actor", "action", "detail", "prev", "hash")
        conn.execute(_q("audit_insert_many"), {"seq": _ints(seqs), **dict(zip(names, texts))})

    @once_more
    def unsealed_audit(self) -> int:
        """Audit entries queued by batches and not yet sealed into the chain."""
        with self._session("read") as conn:
            return conn.execute(_q("audit_unsealed")).fetchone()[0]

    @once_more
    def mark_dispatched(self, run_id: int, epoch: int, now: datetime) -> Run:
        """Set `dispatched` (and renew the lease) before the command is sent; committed with
        the server's durable commit. Raises `LeaseLost`."""
        return self._leased("mark_dispatched", run_id, epoch, {})

    @once_more
    def heartbeat(self, run_id: int, epoch: int) -> None:
        """Renew the run's lease with the server's clock. Raises `LeaseLost`."""
        if self._write_row("heartbeat", {"id": run_id, "epoch": epoch}) is None:
            raise self._lease_lost(run_id, epoch)

    def _leased(self, query: str, run_id: int, epoch: int, params: dict) -> Run:
        """A write guarded by (status running, epoch); `LeaseLost` if the guard fails."""
        row = self._write_row(query, {**params, "id": run_id, "epoch": epoch})
        if row is None:
            raise self._lease_lost(run_id, epoch)
        return _run(row)

    def _lease_lost(self, run_id: int, epoch: int) -> LeaseLost:
        """Why a leased write matched nothing (read after the fact: only for the message)."""
        row = self._row("status_of", {"id": run_id})
        if row is None:
            return LeaseLost(f"run {run_id} does not exist")
        status, current = row
        return LeaseLost(
            f"run {run_id} is no longer held at epoch {epoch}: it is {status} at epoch {current}"
        )

    # --- history and commands ---

    # --- the audit log ---

    def append_audit(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Link `records` after the head and insert them, in one transaction holding the
        audit advisory lock: every writer of the database appends after the latest head."""
        if not records:
            return []
        with self._transaction("write audit entries to") as conn:
            conn.execute(_q("lock_audit"), {"key": AUDIT_LOCK_KEY})
            # Queued entries committed before this one was asked for come first: the chain
            # keeps the order in which things happened.
            while self._seal_locked(conn) == SEAL_BATCH:
                pass
            rows = chain_texts(*self._head(conn), map(stored_fields, records))
            self._insert_rows(conn, rows)
        return [audit_entry(row) for row in rows]

    def prune_audit(self, through_seq: int, now: datetime) -> int:
        """Remove entries up to `through_seq`, keeping the last one as the anchor."""
        with self._transaction() as conn:
            conn.execute(_q("lock_audit"), {"key": AUDIT_LOCK_KEY})
            row = conn.execute(_q("audit_entry_hash"), {"seq": through_seq}).fetchone()
            if row is None:
                return 0
            conn.execute(
                _q("audit_set_anchor"), {"seq": through_seq, "hash": row[0], "now": _aware(now)}
            )
            return conn.execute(_q("audit_delete_through"), {"seq": through_seq}).rowcount

    # --- alerts ---

    # --- retention ---


def _sealable(detail: str) -> str:
    """A queued detail as the chain can hold it verifiably: as it is when it is what
    `stored_fields` makes (canonical JSON of an object), which every batch queues; anything
    else (a row written into the queue by hand) as {"unreadable": <text>}, so the chain still
    verifies and shows the row for what it is (see the queue's policy in migration 6)."""
    try:
        parsed = _STRICT_JSON(detail)
        again = canonical_text(parsed) if type(parsed) is dict else None
    except ValueError:  # not JSON, or a number out of range (inf: no JSON value)
        again = None
    # What a batch queued reads back as it was: canonical JSON of values `storable` keeps as
    # they are (text from the server holds no lone surrogate; NUL only as an escape, which
    # only the full check below tells from an escaped backslash). So the usual detail costs
    # a parse and a dump, not a walk of `storable` over every value.
    if again == detail and ("\\u0000" not in detail or canonical_text(storable(parsed)) == detail):
        return detail
    return canonical_text({"unreadable": detail})


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Built once: `json.loads` with an option builds a decoder per call, which cost more than the
# parse of a queued detail.
_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant).decode


def _end_columns(ends: Sequence[RunEnd]) -> dict:
    """The columns every end of a batch sets, as arrays in the order of `ends`."""
    return {
        "ids": _ints(end.run_id for end in ends),
        "epochs": _ints(end.epoch for end in ends),
        "exit_codes": _ints(end.exit_code for end in ends),
        "outputs": [_output(end.output) for end in ends],
        "errors": [_text(end.error) for end in ends],
    }


PostgresStore.values = SqlValues(
    run=_run,
    time_in=_aware,
    time_out=_aware,
    text_in=_text,
    output_in=_output,
    output_out=lambda body: bytes(body).decode("utf-8", "replace"),
    array_in=list,
    chunk_in=lambda body: body.encode("utf-8", "replace"),
    lease_in=lambda seconds: {"lease": max(float(seconds), 0.0)},
    texts_in=_text_values,
    no_limit=None,
)
