"""The SQLite state store: one database file, one connection, WAL.

`SqliteStore` implements the `StateStore` port (see `store.base` for the run protocol); the
calls it makes as the PostgreSQL store does are written once in `store.sql_store`. The schema
and every query live in `sql/sqlite.sql`; this module binds parameters, maps rows to
`Run` values and translates `sqlite3` errors into `StoreError` naming the database file.

Concurrency: the engine calls the store from a pool of worker threads, so the one connection
is shared (`check_same_thread=False`) behind a `threading.Lock`; SQLite serialises writers
anyway, and a lock is cheaper than a connection per thread. Other processes (other
`reconcile --once` passes, the daemon, `reconcile queue cancel`) share the file through WAL and
a busy timeout; every write is a `BEGIN IMMEDIATE` transaction, so it takes the write lock up
front instead of failing to upgrade a read lock half-way. The pass lock (`<db>.lock`) covers
recovery and planning only: the drains of several processes run side by side, and `claim`
checks `max_parallel` inside its write transaction, so the limit holds across all of them.

Leases: `claim`, `mark_dispatched` and `heartbeat` stamp `heartbeat_at` with SQLite's own
clock ('now'), which every process on the host shares. `recover` and `sweep` resolve the runs
of dead holders only. A holder of this host and pid namespace is looked at (every process of
one SQLite store usually runs on one host): gone (or its pid taken by a later process), its
runs are resolved at once; alive, it keeps them however old its lease (stopped by Ctrl-Z, it
may go on). A holder that cannot be looked at (another pid namespace) is dead when its lease
expired. Pending runs record their planner (migration 5): see `StateStore.pending_planners`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from reconciler.adapters.audit.chain import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    StoredEntry,
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
from reconciler.adapters.store.common import (  # noqa: F401  (Migration: re-exported for callers)
    QUEUE_CANCEL_ERROR,
    UNKNOWN_ERROR,
    Migration,
    SqlFile,
    audit_entry,
    cancel_error,
    cap_output,
    delivery,
    ending_without_run,
    freeze_params,
    holder_alive,
    kill_params,
    manual_fields,
    manual_run_params,
    only_comments,
    params_text,
    parse_sql_file,
    planner_alive,
    runs_page_params,
    team_bounds,
)
from reconciler.adapters.store.sql_store import COLUMNS, STATUS, SqlStore, SqlValues
from reconciler.core.errors import LockError, StoreError
from reconciler.core.frozen import build_frozen
from reconciler.core.plan import Cancel, Enqueue, Plan
from reconciler.core.state import Run

BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another process's write transaction
LOCK_POLL_SECONDS = 0.05  # pass-lock polling interval
MIN_SQLITE = (3, 38, 0)  # RETURNING (3.35), the JSON operators -> and ->> (3.38)


# --- the SQL file -----------------------------------------------------------------------------


def _sql_file() -> SqlFile:
    """`sql/sqlite.sql`: its migrations (in order) and its named queries."""
    return parse_sql_file("sqlite.sql", _statements)


def _statements(script: str) -> tuple[str, ...]:
    """Split a migration into statements: `executescript` would commit our transaction."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not only_comments(current):
        statements.append(current.strip())
    return tuple(statements)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (a no-op once it is). Retried while another process holds the
    file busy: SQLite does not call the busy handler for a journal-mode change, so processes
    opening a fresh store at the same moment would otherwise fail with "database is locked"
    (the migration that follows is a `BEGIN IMMEDIATE` write, which does wait)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_BUSY,
                sqlite3.SQLITE_LOCKED,
            )
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(LOCK_POLL_SECONDS)


PRIVATE_SUFFIXES = ("", "-wal", "-shm", ".lock")  # the database and every file beside it


def _make_private(path: str, create: bool) -> None:
    """Create the database file 0600 before SQLite does (it would honour the umask: 0644
    under the usual 022), and tighten the files an older version left readable. SQLite gives
    its `-wal` and `-shm` files the database file's mode, so they follow."""
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError:
            return  # SQLite reports why it cannot create the file, in its own words
    for suffix in PRIVATE_SUFFIXES:
        try:
            mode = os.stat(path + suffix).st_mode
            if stat.S_ISREG(mode) and mode & 0o077:  # a file of ours: never a shared folder
                os.chmod(path + suffix, 0o600)
        except OSError:
            continue  # absent, or not ours to change: SQLite decides whether it can open it


def _q(name: str) -> str:
    """The named query of the SQL file."""
    return _sql_file()[1][name]


def _one(conn: sqlite3.Connection, query: str, params: dict) -> tuple | None:
    """The first row of a named query, or None. Always steps the statement to its end: an
    unfinished `UPDATE ... RETURNING` would still be in progress when we COMMIT."""
    rows = conn.execute(_q(query), params).fetchall()
    return rows[0] if rows else None


# --- values <-> columns -----------------------------------------------------------------------


def _ts(value: datetime | None) -> str | None:
    """A datetime as sortable ISO 8601 UTC text with microseconds, e.g.
    `2024-05-01T12:00:00.000000+00:00`; a fixed width keeps text order equal to time order.
    Naive datetimes are taken as UTC (every clock of the reconciler is UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _json_safe(text: str | None) -> bool:
    """Whether SQLite's JSON functions give `text` back unchanged from `json.dumps`: what the
    audit log stores as it is (`storable`: no NUL, where they end a string, and no lone
    surrogate, which is not UTF-8)."""
    return text is None or storable(text) is text


def _run(row: tuple) -> Run:
    """A row of `runs` as a `Run`. Positional, not `sqlite3.Row`: snapshot() maps 100k+ rows
    and the name lookups doubled its cost."""
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
        created_at=_dt(created),
        started_at=_dt(started),
        finished_at=_dt(finished),
        not_before=_dt(not_before),
        exit_code=exit_code,
        output=output,
        error=error,
        dispatched=bool(dispatched),
        retry_requested=bool(retry_requested),
        epoch=epoch,
        owner=owner,
        **manual_fields(row, _MANUAL_AT),
    )


# Where migration 13's columns ("trigger", actor, params) are in a row of `runs` (after the
# columns of earlier migrations; the queries that name their columns put them there too).
_MANUAL_AT = 23


# --- the store --------------------------------------------------------------------------------


def holder_gone(owner: str | None, keep: str | None = None) -> bool:
    """Whether the holder `owner` (see `common.holder_alive`) is a process of this host and
    pid namespace that no longer runs (or a process that reused its pid): every process of
    one SQLite store usually runs on the host that holds its file, so this proves its runs
    dead without waiting for their lease. An owner that cannot be judged here is not."""
    return holder_alive(owner, keep) is False


def _holder_dead(owner: str | None, keep: str | None, expired: bool) -> bool:
    """Whether a running run's holder is dead: looked at where its process can be (a live
    one keeps its runs past the lease: stopped by Ctrl-Z, it may go on), else by its lease."""
    alive = holder_alive(owner, keep)
    return expired if alive is None else not alive


class NoSchema(StoreError):
    """A database file without the reconciler's schema, opened read-only: it holds no runs."""


@dataclass
class _HeldLock:
    """The pass lock as this process holds it, and how many of its passes are inside."""

    fd: int
    count: int = 0


# The pass lock belongs to the process, not to one pass: the daemon overlaps its passes (it
# plans a new commit while an earlier pass still drains), and a second flock of the same file
# from the same process would wait on itself. Other processes still wait for all of them.
_HELD: dict[str, _HeldLock] = {}
_HELD_GUARD = threading.Lock()


class SqliteStore(SqlStore):
    """The `StateStore` on one SQLite file. Thread-safe; see the module docstring.

    `path` is kept as given for messages (users recognise `.reconciler/state.db`); with
    `create=False` a missing file raises `StoreError` instead of being created. Opening
    applies pending migrations in one transaction. Raises `StoreError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        url: str | None = None,
        create: bool = True,
        read_only: bool = False,
    ):
        self.path = os.fspath(path)
        self.url = url or f"sqlite:///{self.path}"
        # Opened by its absolute path, so it is the same file whatever the cwd is later;
        # named in messages as the user would (`.reconciler/state.db.lock`).
        self._lock_path = Path(os.path.abspath(self.path) + ".lock")
        self._lock_name = f"{self.path}.lock"
        self._mutex = threading.Lock()
        # The connection's `synchronous` mode (NORMAL once opened): switched only when a
        # write needs the other one (see `_write`).
        self._full_sync = False
        self.read_only = read_only
        self._conn = self._connect_read_only() if read_only else self._connect(create)
        try:
            self._check_schema() if read_only else self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # --- connection, errors, transactions ---

    _sql = staticmethod(_q)

    def _reading(self):
        return self._read()

    def _writing_one(self):
        return self._write()

    def _writing(self):
        return self._write()

    def _connect(self, create: bool) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"cannot open state store {self.path}: SQLite "
                f"{sqlite3.sqlite_version} is too old (3.38 or newer is needed)"
            )
        uri = Path(os.path.abspath(self.path)).as_uri() + ("?mode=rwc" if create else "?mode=rw")
        _make_private(self.path, create)
        try:
            # isolation_level=None: no implicit transactions; we BEGIN and COMMIT ourselves.
            conn = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            # WAL: readers never block the writer; NORMAL: no fsync per commit (WAL stays
            # durable against a process crash, which is what the run protocol must survive);
            # a 16 MiB page cache keeps snapshot()'s index scan of a large history in memory.
            _enable_wal(conn)
            for pragma in (
                "synchronous = NORMAL",
                "foreign_keys = ON",
                f"busy_timeout = {BUSY_TIMEOUT_MS}",
                "cache_size = -16384",
            ):
                conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """For `plan` and `status`: SQLite's read-only mode, no pragma that writes (WAL is a
        property of the file, already set by the pass that created it), no migration."""
        uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        return conn

    def _check_schema(self) -> None:
        """A read-only store must already be at this version's schema: raise `NoSchema` for a
        file that holds none (an empty file: no runs), `StoreError` for an older one."""
        migrations, _ = _sql_file()
        with self._read() as conn:
            if (
                conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'"
                ).fetchone()
                is None
            ):
                raise NoSchema(self.path)
            applied = {row[0] for row in conn.execute(_q("applied_migrations"))}
        if {m.version for m in migrations} - applied:
            raise StoreError(
                f"state store {self.path} was written by an older reconciler; "
                "run `reconcile --once` once to upgrade it"
            )

    def _error(self, action: str, exc: Exception) -> StoreError:
        """The one translation of a sqlite3 error: what we tried, on which file, and why."""
        return StoreError(f"cannot {action} state store {self.path}: {exc}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (autocommit: each statement sees the latest commit)."""
        with self._mutex:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc

    @contextmanager
    def _write(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any error.

        `durable` commits with `synchronous=FULL` (an fsync of the WAL): for the few writes
        that must survive a power loss, not only a process crash (see `mark_dispatched`).
        """
        with self._mutex:
            try:
                self._synchronous(durable)
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error("write", exc) from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error("write", exc) from exc
            except BaseException:
                self._rollback()
                raise

    def _synchronous(self, full: bool) -> None:
        """Commit the next transaction with `synchronous=FULL` (`full`) or NORMAL. The mode
        is switched only when it changes: a drain's rounds are durable one after another,
        and each statement lets go of the GIL, which the run threads of a busy pass take
        (the engine's thread then waits for it back)."""
        if full != self._full_sync:
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
            self._full_sync = full

    def _rollback(self) -> None:
        # SQLite may have rolled back already (e.g. after SQLITE_FULL); the original error wins.
        with suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def _migrate(self) -> None:
        """Apply every migration not yet recorded in `schema_migrations`, in one transaction,
        so a store is either at the new schema or untouched."""
        migrations, _ = _sql_file()
        with self._write() as conn:
            conn.execute(_q("create_migrations"))
            applied = {row[0] for row in conn.execute(_q("applied_migrations"))}
            now = _ts(datetime.now(UTC))
            for migration in migrations:
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    _q("record_migration"),
                    {"version": migration.version, "name": migration.name, "now": now},
                )

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise `StoreError`."""
        with self._mutex:
            self._conn.close()

    # --- the pass lock ---

    @contextmanager
    def pass_lock(self, timeout: float) -> Iterator[None]:
        """Hold `flock(<db>.lock)` for the body; `LockError` after `timeout` seconds.

        flock belongs to the open file description, so it is released by the kernel when the
        holder dies, however it dies; Python opens the fd non-inheritable, so child processes
        (ssh, the command) cannot keep it alive. flock has no timeout of its own: we poll LOCK_NB.
        """
        key = os.path.realpath(self._lock_path)
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is None:
                held = _HELD[key] = _HeldLock(self._take_lock(timeout))
            held.count += 1
        try:
            yield
        finally:
            with _HELD_GUARD:
                held.count -= 1
                if held.count == 0:
                    del _HELD[key]
                    fcntl.flock(held.fd, fcntl.LOCK_UN)
                    os.close(held.fd)

    def _take_lock(self, timeout: float) -> int:
        """Open the lock file and flock it; the open descriptor holds the lock."""
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LockError(f"cannot open the pass lock {self._lock_name}: {exc.strerror}") from exc
        try:
            self._acquire(fd, timeout)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _acquire(self, fd: int, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockError(
                        f"cannot take the pass lock {self._lock_name}: {exc.strerror}"
                    ) from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockError(
                    f"another `reconcile` pass holds the lock {self._lock_name}; "
                    f"gave up after {timeout:g}s (see --lock-timeout)"
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
        """Apply `plan` in one `BEGIN IMMEDIATE` transaction with its audit entries chained
        in it; see `StateStore.record_plan`. Cancels first, so a plan that replaces a pending
        run by the same key can insert its successor."""
        with self._write() as conn:
            cancelled = [self._cancel_planned(conn, cancel, now) for cancel in plan.cancel]
            for reslot in plan.reslot:
                conn.execute(_q("reslot_pending"), {"id": reslot.run, "slot": reslot.slot})
            if plan.freezes is not None:
                conn.execute(_q("forget_freezes"))
                for scope, freeze in plan.freezes:
                    conn.execute(_q("record_freeze"), freeze_params(scope, freeze, _ts))
            inserted = self._insert_all(conn, plan.enqueue, commit, now, planner)
            self._chain(conn, audit(inserted, [run for run in cancelled if run is not None]))
        return inserted

    def enqueue_manual(
        self, runs: Sequence[ManualRun], now: datetime, audit: AuditOf = no_audit
    ) -> list[Run]:
        """See `StateStore.enqueue_manual`: one `BEGIN IMMEDIATE` transaction, the audit
        entries chained in it."""
        with self._write() as conn:
            inserted = [
                _run(_one(conn, "insert_manual_run", manual_run_params(r, now, _ts))) for r in runs
            ]
            self._chain(conn, [record for run in inserted for record in audit(run)])
        return inserted

    @staticmethod
    def _cancel_planned(conn: sqlite3.Connection, cancel: Cancel, now: datetime) -> Run | None:
        """The run as cancelled, or None: a run that started meanwhile is no longer the
        planner's to cancel (left alone)."""
        error = cancel_error(cancel.reason)
        row = _one(conn, "cancel_pending", {"id": cancel.run, "now": _ts(now), "error": error})
        return None if row is None else _run(row)

    @classmethod
    def _insert_all(
        cls,
        conn: sqlite3.Connection,
        enqueues: Sequence[Enqueue],
        commit: str | None,
        now: datetime,
        planner: str | None,
    ) -> list[Run]:
        """The runs of `enqueues` that were inserted (not those an active run of the same key
        holds back), by id. One statement for all of them: one per run let go of the GIL as
        many times, and the threads connecting ahead of the pass took it each time."""
        rows = [
            [e.task, e.machine, e.version, e.slot, e.priority, getattr(e.reason, "value", e.reason)]
            for e in enqueues
        ]
        if not all(_json_safe(text) for row in rows for text in row if isinstance(text, str)):
            tried = (cls._insert(conn, enqueue, commit, now, planner) for enqueue in enqueues)
            return [run for run in tried if run is not None]
        params = {"runs": json.dumps(rows), "commit": commit, "now": _ts(now), "planner": planner}
        inserted = conn.execute(_q("insert_runs"), params).fetchall()
        return sorted(map(_run, inserted), key=lambda run: run.id)

    @staticmethod
    def _insert(
        conn: sqlite3.Connection,
        enqueue: Enqueue,
        commit: str | None,
        now: datetime,
        planner: str | None,
    ) -> Run | None:
        row = _one(
            conn,
            "insert_run",
            {
                "task": enqueue.task,
                "machine": enqueue.machine,
                "version": enqueue.version,
                "slot": enqueue.slot,
                "commit": commit,
                "priority": enqueue.priority,
                "reason": getattr(enqueue.reason, "value", enqueue.reason),
                "now": _ts(now),
                "not_before": None,  # a deny window is judged at dispatch, never stored
                "planner": planner,
            },
        )
        return None if row is None else _run(row)  # None: an active run of this key exists

    def recover(self, now: datetime, keep_owner: str | None = None) -> list[Run]:
        """`running` runs whose holder is dead: its process is gone from this host, or its
        lease expired. Undispatched -> `pending`, dispatched -> `unknown`. Runs claimed by
        `keep_owner` (the caller's own process) and by other live processes (passes draining
        beside this one) are left alone. Returns the changed runs by id."""
        return self._release_dead(now, LEASE_SECONDS, keep_owner)

    def sweep(self, lease_seconds: float, now: datetime) -> list[Run]:
        """Runs whose lease expired by SQLite's clock, or whose holder process is gone from
        this host: undispatched -> `pending`, dispatched -> `unknown`. Returns them by id.
        See `StateStore.sweep`."""
        return self._release_dead(now, lease_seconds, None)

    def _release_dead(self, now: datetime, lease_seconds: float, keep: str | None) -> list[Run]:
        """Judge every running run's holder and resolve the dead ones' runs, in one
        `BEGIN IMMEDIATE` transaction: no claim, heartbeat or result lands in between."""
        age = f"-{max(float(lease_seconds), 0.0):.6f} seconds"

        def dead_runs(conn: sqlite3.Connection) -> list[int]:
            return [
                run_id
                for run_id, owner, expired in conn.execute(_q("running_holders"), {"age": age})
                if (keep is None or owner != keep) and _holder_dead(owner, keep, bool(expired))
            ]

        # Looked at first without the write lock: every drain sweeps every few seconds, and a
        # process stopped (Ctrl-Z) inside a write transaction would block every writer.
        with self._read() as conn:
            if not dead_runs(conn):
                return []
        with self._write() as conn:
            dead = dead_runs(conn)
            if not dead:
                return []
            ids = {"ids": json.dumps(dead)}
            back = conn.execute(_q("release_undispatched"), ids).fetchall()
            lost = conn.execute(
                _q("release_dispatched"), {**ids, "now": _ts(now), "error": UNKNOWN_ERROR}
            ).fetchall()
        return sorted((_run(row) for row in back + lost), key=lambda run: run.id)

    # --- planners ---

    # --- the queue ---

    def change_token(self) -> int:
        """SQLite's `data_version`: it changes when another connection commits to the file."""
        with self._read() as conn:
            return conn.execute("PRAGMA data_version").fetchone()[0]

    def wait_for_runs(self, timeout: float) -> bool | None:
        """None: nothing wakes a SQLite reader (its drains look at `data_version`)."""
        return None

    def wait_for_ends(self, timeout: float) -> bool | None:
        """None: nothing wakes a SQLite reader (its drains look at `data_version`)."""
        return None

    def run_changes(self, since: object | None = None) -> RunChanges:
        """Always complete: every active run, in one read (the file has one writer at a
        time, and `change_token` tells a drain whether to read at all)."""
        return RunChanges(self._select("active_runs"), True)

    def claim(
        self, run_id: int, owner: str, now: datetime, max_parallel: int | None = None
    ) -> Run | None:
        """Compare-and-set `pending` -> `running` (epoch + 1); None if it was not pending or
        its machine already runs `max_parallel` runs (checked in the same `BEGIN IMMEDIATE`
        transaction, so the count cannot change under it)."""
        with self._write() as conn:
            if max_parallel is not None:
                busy = conn.execute(_q("running_on_machine_of_run"), {"id": run_id}).fetchone()
                if busy is not None and busy[0] >= max_parallel:
                    return None
            row = _one(conn, "claim", {"id": run_id, "owner": owner, "now": _ts(now)})
        return None if row is None else _run(row)

    def mark_dispatched(self, run_id: int, epoch: int, now: datetime) -> Run:
        """Set `dispatched` before the command is sent. Raises `LeaseLost`.

        Committed durably: if this mark were lost to a power cut after the command ran,
        `recover` would put the run back to pending and execute it a second time.
        """
        return self._leased("mark_dispatched", run_id, epoch, {}, durable=True)

    def heartbeat(self, run_id: int, epoch: int) -> None:
        """Renew the run's lease with SQLite's clock. Raises `LeaseLost`."""
        with self._write() as conn:
            if _one(conn, "heartbeat", {"id": run_id, "epoch": epoch}) is None:
                raise self._lease_lost(conn, run_id, epoch)

    def _leased(
        self, query: str, run_id: int, epoch: int, params: dict, *, durable: bool = False
    ) -> Run:
        """Run a write guarded by (status running, epoch); `LeaseLost` if the guard fails."""
        with self._write(durable) as conn:
            row = _one(conn, query, {**params, "id": run_id, "epoch": epoch})
            if row is None:
                raise self._lease_lost(conn, run_id, epoch)
        return _run(row)

    # --- group commit: one transaction per batch ---

    def claim_batch(
        self,
        claims: Sequence[ClaimRequest],
        owner: str,
        now: datetime,
        audit: AuditOf = no_audit,
        leading: Sequence[AuditRecord] = (),
        want: int | None = None,
    ) -> Batch:
        """Claim the runs in request order (at most `want` of them) and chain `leading` then
        each claim's audit records, in one `BEGIN IMMEDIATE` transaction (see
        `StateStore.claim_batch`)."""
        if not claims and not leading:
            return Batch([], [])
        records = list(leading)
        with self._write() as conn:
            claimed, refused, unclaimed = self._claim_in(conn, claims, owner, now, want)
            for run in claimed:
                records.extend(audit(run))
            self._chain(conn, records)
        return Batch(claimed, refused, unclaimed)

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
        records chained in that order, in one durable (`synchronous=FULL`) `BEGIN IMMEDIATE`
        transaction (see `StateStore.round_batch`): one fsync per round."""
        check_ends(ends)
        if not ends and not claims and not leading:
            return Batch([], []), Batch([], [])
        records: list[AuditRecord] = []
        with self._write(durable=True) as conn:
            written, gone = self._end_in(conn, ends, now) if ends else ([], [])
            for run in written:
                records.extend(ended(run))
            if gone:  # decided on a result that is not recorded: claim nothing
                self._chain(conn, records)
                return Batch(written, gone), Batch([], [], [c.run_id for c in claims])
            records.extend(leading)
            # Claimed and marked dispatched by one statement: the same transaction holds
            # both, and its audit records, claims first, say so as two steps.
            marked, refused, unclaimed = self._claim_in(
                conn, claims, owner, now, want, dispatch=True
            )
            for run in marked:
                records.extend(claimed(run))
            for run in marked:
                records.extend(dispatched(run))
            self._chain(conn, records)
        return Batch(written, []), Batch(marked, refused, unclaimed)

    def _claim_in(
        self,
        conn: sqlite3.Connection,
        claims: Sequence[ClaimRequest],
        owner: str,
        now: datetime,
        want: int | None,
        dispatch: bool = False,
    ) -> tuple[list[Run], list[int], list[int]]:
        """The claims of a batch inside the caller's `BEGIN IMMEDIATE` transaction: the runs
        claimed (request order), the ids refused and those left unclaimed (`claim_outcome`).
        With `dispatch`, the runs claimed are marked dispatched by the same statement.

        The write lock is held from the start, so the running counts read once at the top
        cannot change under the batch: each claim adds to its machine's count, and a later
        request for that machine sees it, exactly as the SQL count of `claim` would."""
        stamp = _ts(now)
        # Two statements whatever the batch's size: which runs are still pending, on which
        # machine, and how many runs that machine runs; and one claim of the runs the
        # limits let through, in request order (a refused run takes no slot).
        pending: dict[int, str] = {}
        busy: dict[str, int] = {}
        for run_id, machine, running in conn.execute(
            _q("pending_of_runs"), {"ids": json.dumps([c.run_id for c in claims])}
        ).fetchall():
            pending[run_id] = machine
            busy[machine] = running
        allowed: list[int] = []
        for request in claims:
            if want is not None and len(allowed) >= want:
                break
            machine = pending.pop(request.run_id, None)  # a second ask finds it taken
            limit = request.max_parallel
            if machine is None or (limit is not None and busy[machine] >= limit):
                continue
            busy[machine] += 1
            allowed.append(request.run_id)
        taken = {
            run.id: run
            for run in map(
                _run,
                conn.execute(
                    _q("claim_dispatch_many" if dispatch else "claim_many"),
                    {"ids": json.dumps(allowed), "owner": owner, "now": stamp},
                ).fetchall(),
            )
        }
        return claim_outcome(claims, taken, want)

    def dispatch_batch(
        self, runs: Sequence[Run], now: datetime, audit: AuditOf = no_audit
    ) -> Batch:
        """Mark the runs dispatched and chain their audit records in one durable
        (`synchronous=FULL`) transaction, as `mark_dispatched` does: after it returns, every
        command of the batch may be sent. A run no longer held at its epoch is refused."""
        if not runs:
            return Batch([], [])
        marked: list[Run] = []
        refused: list[int] = []
        records: list[AuditRecord] = []
        held = {str(run.id): run.epoch for run in runs}
        with self._write(durable=True) as conn:
            rows = conn.execute(_q("mark_dispatched_many"), {"held": json.dumps(held)}).fetchall()
            done = {run.id: run for run in map(_run, rows)}
            for asked in runs:  # in request order, whatever order the rows came back in
                run = done.get(asked.id)
                if run is None:
                    refused.append(asked.id)
                    continue
                marked.append(run)
                records.extend(audit(run))
            self._chain(conn, records)
        return Batch(marked, refused)

    def end_batch(self, ends: Sequence[RunEnd], now: datetime, audit: AuditOf = no_audit) -> Batch:
        """Record each end (`finish`, or `requeue` with `retry_at`) and chain its audit
        records, in one transaction. A run no longer held at its epoch is refused."""
        check_ends(ends)
        if not ends:
            return Batch([], [])
        with self._write() as conn:
            written, refused = self._end_in(conn, ends, now)
            records = [record for run in written for record in audit(run)]
            self._chain(conn, records)
        return Batch(written, refused)

    @staticmethod
    def _end_in(
        conn: sqlite3.Connection, ends: Sequence[RunEnd], now: datetime
    ) -> tuple[list[Run], list[int]]:
        """Write `ends` inside the caller's transaction: the runs as written (request order,
        with their texts) and the ids refused (not held at their epoch any more)."""
        stamp = _ts(now)
        written: list[Run] = []
        refused: list[int] = []
        texts = {end.run_id: (cap_output(end.output), end.error) for end in ends}
        # The texts go in the JSON of the ends, save those SQLite's JSON functions would
        # change (they end a string at its first NUL byte, and a command's output may hold
        # one): those go as bound parameters, one statement each.
        bound = {run_id for run_id, pair in texts.items() if not all(map(_json_safe, pair))}
        rows_in = [
            [
                end.run_id,
                end.epoch,
                end.status.value,
                end.exit_code,
                None if end.retry_at is None else _ts(end.retry_at),
                *((0, None, None) if end.run_id in bound else (1, *texts[end.run_id])),
            ]
            for end in ends
        ]
        rows = conn.execute(_q("end_many"), {"ends": json.dumps(rows_in), "now": stamp}).fetchall()
        done = {run.id: run for run in map(_run, rows)}
        if bound & done.keys():
            conn.executemany(
                _q("set_texts"),
                [
                    {"id": run_id, "output": texts[run_id][0], "error": texts[run_id][1]}
                    for run_id in bound & done.keys()
                ],
            )
        for end in ends:  # in request order
            run = done.get(end.run_id)
            if run is None:
                refused.append(end.run_id)
                continue
            if end.run_id in bound:  # the row came back before `set_texts` wrote them
                output, error = texts[end.run_id]
                run = replace(run, output=output, error=error)
            written.append(run)
        return written, refused

    @staticmethod
    def _chain(conn: sqlite3.Connection, records: Sequence[AuditRecord]) -> list[StoredEntry]:
        """Link `records` after the head (or the anchor) and insert them, inside the caller's
        `BEGIN IMMEDIATE` transaction: SQLite's one writer at a time is the chain's lock, so
        SQLite needs no queue and no sealer (nothing is ever unsealed). Returns the rows."""
        if not records:
            return []
        head = _one(conn, "audit_head", {})
        if head is not None:
            seq, prev = head[0], head[6]
        else:
            anchor = _one(conn, "audit_anchor", {})
            seq, prev = anchor if anchor is not None else (0, GENESIS)
        rows = chain_texts(seq, prev, map(stored_fields, records))
        # One statement for the lot: executemany steps once per row, and each step lets go
        # of the GIL. Stored texts hold no NUL (`storable`), so JSON carries them as they are.
        conn.execute(_q("audit_insert_json"), (json.dumps(rows, ensure_ascii=False),))
        return rows

    @staticmethod
    def _lease_lost(conn: sqlite3.Connection, run_id: int, epoch: int) -> LeaseLost:
        row = _one(conn, "status_of", {"id": run_id})
        if row is None:
            return LeaseLost(f"run {run_id} does not exist")
        status, current = row
        return LeaseLost(
            f"run {run_id} is no longer held at epoch {epoch}: it is {status} at epoch {current}"
        )

    # --- history and commands ---

    # --- the audit log ---

    def append_audit(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Link `records` after the head and insert them, in one `BEGIN IMMEDIATE`
        transaction: the head cannot move under it, whoever else writes the file."""
        if not records:
            return []
        with self._write() as conn:
            rows = self._chain(conn, records)
        return [audit_entry(row) for row in rows]

    def prune_audit(self, through_seq: int, now: datetime) -> int:
        """Remove entries up to `through_seq`, keeping the last one as the anchor."""
        with self._write() as conn:
            row = _one(conn, "audit_entry_hash", {"seq": through_seq})
            if row is None:
                return 0
            conn.execute(
                _q("audit_set_anchor"), {"seq": through_seq, "hash": row[0], "now": _ts(now)}
            )
            return conn.execute(_q("audit_delete_through"), {"seq": through_seq}).rowcount

    # --- alerts ---

    # --- retention ---


SqliteStore.values = SqlValues(
    run=_run,
    time_in=_ts,
    time_out=_dt,
    text_in=lambda text: text,
    output_in=cap_output,
    output_out=lambda body: body,
    array_in=json.dumps,  # the queries read a list with json_each
    chunk_in=lambda body: body.encode("utf-8", "replace").decode("utf-8"),
    lease_in=lambda seconds: {"age": f"-{max(float(seconds), 0.0):.6f} seconds"},
    texts_in=lambda params: params,
    no_limit=-1,
)
