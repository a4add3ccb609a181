-- The SQLite state store schema, as numbered migrations.
--
-- Each migration starts with a line `-- migration N: name` and runs, with its record in
-- `schema_migrations`, in one transaction when a store is opened. Never edit a migration
-- that has shipped: append a new one (an added column goes last: rows are read by position).
-- Queries follow the migrations, each under `-- query: name`.

-- migration 1: runs
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids are cited in audit/alerts
    task            TEXT    NOT NULL,                   -- <team>/<name>
    machine         TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    slot            TEXT,                               -- due cron slot (ISO 8601 UTC); NULL for once tasks
    "commit"        TEXT,
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed',
                                                      'skipped', 'cancelled', 'blocked', 'unknown')),
    attempt         INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    reason          TEXT    NOT NULL,
    -- Timestamps: ISO 8601 UTC text with microseconds and a fixed offset, so text order is time order.
    created_at      TEXT    NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    not_before      TEXT,
    exit_code       INTEGER,
    output          TEXT    NOT NULL DEFAULT '',
    error           TEXT,
    dispatched      INTEGER NOT NULL DEFAULT 0 CHECK (dispatched IN (0, 1)),
    retry_requested INTEGER NOT NULL DEFAULT 0 CHECK (retry_requested IN (0, 1)),
    epoch           INTEGER NOT NULL DEFAULT 0,          -- bumped by every claim: the lease
    owner           TEXT
);

-- The invariant of DESIGN §5: at most one active run per (task, machine, version, slot).
-- COALESCE because NULLs are distinct in a UNIQUE index: two once-task runs would not collide.
CREATE UNIQUE INDEX runs_one_active
    ON runs (task, machine, version, COALESCE(slot, ''))
    WHERE status IN ('pending', 'running');

-- The queue: pending() in dispatch order, running(), counts() by status, snapshot's active runs.
CREATE INDEX runs_by_status ON runs (status, priority, created_at, id);

-- snapshot(): MAX(id) GROUP BY (task, machine, version) is answered from this index alone;
-- it also serves list_runs' team filter (a range on task).
CREATE INDEX runs_latest ON runs (task, machine, version, id);

-- failed_since(): the problem runs by end time (partial: only they are ever counted so).
CREATE INDEX runs_problems_by_finished ON runs (finished_at)
    WHERE status IN ('failed', 'blocked', 'unknown');

-- migration 2: leases
-- The lease of a running run (DESIGN §5): stamped by claim, heartbeat and mark_dispatched with
-- the database's clock (SQLite's 'now', as the same sortable UTC text as every timestamp), so
-- `sweep` compares a clock that every process on the host shares. NULL for a run claimed
-- before this migration: its lease counts from its claim (`started_at`).
ALTER TABLE runs ADD COLUMN heartbeat_at TEXT;

-- migration 3: passes
-- The commits passes reconciled, newest last: a pass refuses a commit that does not descend
-- from the last one (history rewritten, or a late CI run for an older commit).
CREATE TABLE passes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_sha  TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);

-- migration 4: audit and alerts
-- The audit log (SPEC §4): a hash chain, one row per entry, appended only by append_audit,
-- which reads the head and inserts after it in one BEGIN IMMEDIATE transaction, so concurrent
-- writers form one linear chain. seq is the chain position (head + 1, never chosen by the
-- database); `at` and `detail` keep the exact text that was hashed (detail: canonical JSON).
CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL,
    prev    TEXT NOT NULL,
    hash    TEXT NOT NULL
);

-- audit export --since: entries by time.
CREATE INDEX audit_log_by_time ON audit_log (at);

-- After `queue prune --archive`: the last archived entry, which the first kept entry links to.
CREATE TABLE audit_anchor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL,
    pruned_at TEXT    NOT NULL
);

-- What was alerted: one row per dedupe key (task, version, machine, outcome); the primary key
-- makes a second reconciler's (or a restarted one's) insert of the same key a no-op. A machine
-- alert has '' for task and version.
CREATE TABLE alert_memory (
    task       TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    machine    TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    run_id     INTEGER,
    alert_id   TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (task, version, machine, outcome)
);
CREATE INDEX alert_memory_by_line ON alert_memory (task, machine, run_id);

-- Deliveries of alerts, one per (alert, target), until delivered: the outbox a failed delivery
-- waits in for the next pass. `target` is `url:<url>` or `vault:<NAME>`: never a resolved
-- secret. A claim (claimed_at by SQLite's clock) keeps two processes from sending one row.
CREATE TABLE alert_outbox (
    id              TEXT    PRIMARY KEY,
    alert_id        TEXT    NOT NULL,
    team            TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'delivered', 'abandoned')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    last_attempt_at TEXT,
    delivered_at    TEXT,
    claimed_by      TEXT,
    claimed_at      TEXT
);
CREATE INDEX alert_outbox_by_status ON alert_outbox (status, created_at, id);

-- previous_outcome(): the newest runs of a task on a machine, whatever their version.
CREATE INDEX runs_by_task_machine ON runs (task, machine, id);

-- migration 5: planners
-- Which pass enqueued each run (`planner`: that pass's owner string, kept by a retry; taken by
-- the pass that adopts the run of a dead planner), so a pass claims only its own runs and
-- those of planners that are gone, never the queue of a live pass draining beside it. NULL for
-- a run enqueued before this migration: its planner is unknown, so any pass may adopt it.
-- `drains`: each live drain stamps its owner with SQLite's clock every heartbeat, the sign of
-- life of a planner whose process cannot be looked at from here (another pid namespace).
ALTER TABLE runs ADD COLUMN planner TEXT;
CREATE TABLE drains (
    owner   TEXT PRIMARY KEY,
    beat_at TEXT NOT NULL
);

-- migration 6: audit queue
-- Nothing to change here: PostgreSQL's migration 6 adds the queue its batches write audit
-- entries to, to be sealed into the chain later (no global lock on its hot path). SQLite has
-- one writer at a time, so a batch links its entries into the chain in its own transaction.
-- The number is kept so both backends stay at "the same" schema.

-- migration 7: run changes
-- Nothing to change here: PostgreSQL's migration 7 stamps each write of a run with its
-- transaction, the change feed its drains re-read instead of the whole queue. A SQLite store
-- has one host and one writer at a time: `data_version` says whether anything changed, and a
-- drain then reads the active runs whole (`run_changes` is always complete here).

-- migration 8: approvals
-- The two-person rule (issue 15 §3): one row per member's signed approval of a task's version
-- on a machine (`reconcile approve`). `signature` is the `ssh-keygen -Y sign` armour over the
-- approval's text (task, versions, machines), kept so it can be checked again; `commit` is the
-- last reconciled commit whose member keys it was verified against. A new version has no rows.
CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task        TEXT NOT NULL,
    machine     TEXT NOT NULL,
    version     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,                       -- SHA256:... of the approving member's key
    role        TEXT NOT NULL,
    "commit"    TEXT NOT NULL,
    signature   TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    UNIQUE (task, machine, version, fingerprint)
);

-- migration 9: run output
-- The output of running runs as it comes (issue 16 §1): the engine appends each run's new
-- lines, redacted, once a second (never for a run that ended within its first second: its
-- final output is all there is to see). `start` is where the chunk begins in the run's
-- redacted output (UTF-8 bytes), so a reader that starts late knows how much it missed. The
-- writer drops a run's oldest chunks beyond the last 64 KiB, and all of them once the run's
-- end is recorded (its `output` column then holds the same text).
CREATE TABLE run_output (
    run_id  INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    start   INTEGER NOT NULL,
    body    TEXT    NOT NULL,
    PRIMARY KEY (run_id, attempt, seq)
);

-- migration 10: reconciled freezes
-- The freezes (`suspend:`) in force in the inventory the latest pass planned with, replaced by
-- each pass in the transaction that records its plan. Workers hold what they cover besides
-- what their own checkout freezes: a checkout that lags the passes cannot run work that a
-- reconciled freeze holds, and a freeze lifts for workers once a pass reconciles its lifting.
CREATE TABLE reconciled_freezes (
    scope            TEXT PRIMARY KEY,                -- `team ops`, `machine db1`, `task ops/a`
    reason           TEXT NOT NULL,
    until            TEXT,                            -- NULL: until a commit lifts it
    allow_priority_1 INTEGER NOT NULL
);

-- migration 11: killed
-- `queue kill` (issue 16 §2): a run stopped on request ends `killed`, a final problem status.
-- SQLite cannot change a CHECK constraint in place, so `runs` is rebuilt with the same columns
-- in the same order (rows are read by position) and its indexes made again; the AUTOINCREMENT
-- counter is carried over, so a run id is never reused. This copies every run once.
-- `kill_requests`: what `queue kill` asks of the process that holds a running run (found
-- through the store, wherever it runs): the holder looks for requests on its runs every
-- second and stops the run's process group (TERM, then KILL after `grace` seconds). `epoch`
-- names the claim the request is for: a later attempt is not killed by it.
CREATE TABLE runs_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task            TEXT    NOT NULL,
    machine         TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    slot            TEXT,
    "commit"        TEXT,
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed',
                                                      'skipped', 'cancelled', 'blocked', 'unknown',
                                                      'killed')),
    attempt         INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    reason          TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    not_before      TEXT,
    exit_code       INTEGER,
    output          TEXT    NOT NULL DEFAULT '',
    error           TEXT,
    dispatched      INTEGER NOT NULL DEFAULT 0 CHECK (dispatched IN (0, 1)),
    retry_requested INTEGER NOT NULL DEFAULT 0 CHECK (retry_requested IN (0, 1)),
    epoch           INTEGER NOT NULL DEFAULT 0,
    owner           TEXT,
    heartbeat_at    TEXT,
    planner         TEXT
);
INSERT INTO runs_new SELECT * FROM runs;
DELETE FROM sqlite_sequence WHERE name = 'runs_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'runs_new', seq FROM sqlite_sequence WHERE name = 'runs';
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE UNIQUE INDEX runs_one_active
    ON runs (task, machine, version, COALESCE(slot, ''))
    WHERE status IN ('pending', 'running');
CREATE INDEX runs_by_status ON runs (status, priority, created_at, id);
CREATE INDEX runs_latest ON runs (task, machine, version, id);
CREATE INDEX runs_problems_by_finished ON runs (finished_at)
    WHERE status IN ('failed', 'blocked', 'unknown', 'killed');
CREATE INDEX runs_by_task_machine ON runs (task, machine, id);
CREATE TABLE kill_requests (
    run_id       INTEGER PRIMARY KEY,
    epoch        INTEGER NOT NULL,
    grace        REAL    NOT NULL,
    actor        TEXT    NOT NULL,
    reason       TEXT,
    requested_at TEXT    NOT NULL
);

-- migration 12: halted
-- A final status of issue 15 §1: a run whose rollout stopped past its failure budget before it
-- started ends `halted` (a problem). As for `killed` (migration 11), `runs` is rebuilt with the
-- same columns in the same order, its rows copied with their ids, its indexes made again (the
-- problem runs' index counts `halted` too) and the AUTOINCREMENT counter carried over.
CREATE TABLE runs_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task            TEXT    NOT NULL,
    machine         TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    slot            TEXT,
    "commit"        TEXT,
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed',
                                                      'skipped', 'cancelled', 'blocked', 'unknown',
                                                      'killed', 'halted')),
    attempt         INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    reason          TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    not_before      TEXT,
    exit_code       INTEGER,
    output          TEXT    NOT NULL DEFAULT '',
    error           TEXT,
    dispatched      INTEGER NOT NULL DEFAULT 0 CHECK (dispatched IN (0, 1)),
    retry_requested INTEGER NOT NULL DEFAULT 0 CHECK (retry_requested IN (0, 1)),
    epoch           INTEGER NOT NULL DEFAULT 0,
    owner           TEXT,
    heartbeat_at    TEXT,
    planner         TEXT
);
INSERT INTO runs_new (id, task, machine, version, slot, "commit", priority, status, attempt,
                      reason, created_at, started_at, finished_at, not_before, exit_code, output,
                      error, dispatched, retry_requested, epoch, owner, heartbeat_at, planner)
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason, created_at,
       started_at, finished_at, not_before, exit_code, output, error, dispatched,
       retry_requested, epoch, owner, heartbeat_at, planner
FROM runs;
DELETE FROM sqlite_sequence WHERE name = 'runs_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'runs_new', seq FROM sqlite_sequence WHERE name = 'runs';
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE UNIQUE INDEX runs_one_active
    ON runs (task, machine, version, COALESCE(slot, ''))
    WHERE status IN ('pending', 'running');
CREATE INDEX runs_by_status ON runs (status, priority, created_at, id);
CREATE INDEX runs_latest ON runs (task, machine, version, id);
CREATE INDEX runs_problems_by_finished ON runs (finished_at)
    WHERE status IN ('failed', 'blocked', 'unknown', 'killed', 'halted');
CREATE INDEX runs_by_task_machine ON runs (task, machine, id);

-- migration 13: manual runs
-- `reconcile run` (issue 16 §3): a run a person asked for now, with the parameters it was
-- given. `trigger` is 'plan' for what a pass enqueued, 'manual' for these; `reason` then holds
-- the person's text and `actor` who asked; `params` is a JSON object of the parameters
-- given (defaults filled in), read by whichever process runs it. A manual run is outside
-- the planner's bookkeeping: the one-active-run invariant and the "latest run of a version"
-- (runs_latest, which now carries the trigger) are about planned runs only, so a pass may
-- enqueue the same version beside a manual run, and a manual run never stands for the
-- version's outcome.
ALTER TABLE runs ADD COLUMN "trigger" TEXT NOT NULL DEFAULT 'plan'
    CHECK ("trigger" IN ('plan', 'manual'));
ALTER TABLE runs ADD COLUMN actor TEXT;
ALTER TABLE runs ADD COLUMN params TEXT;
DROP INDEX runs_one_active;
CREATE UNIQUE INDEX runs_one_active
    ON runs (task, machine, version, COALESCE(slot, ''))
    WHERE status IN ('pending', 'running') AND "trigger" = 'plan';
DROP INDEX runs_latest;
CREATE INDEX runs_latest ON runs (task, machine, version, "trigger", id);

-- ---------------------------------------------------------------------------------------------
-- Queries. Each starts with a line `-- query: name`; parameters are always bound (`:name`).
-- Reads that feed the planner and the queue name their columns and leave `output` out ('' in
-- its place): it is up to 64 KiB per run and only `get_run` needs it.

-- query: create_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)

-- query: applied_migrations
SELECT version FROM schema_migrations ORDER BY version

-- query: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :now)

-- query: insert_run
-- Idempotent enqueue: the partial unique index turns a second active run into a no-op.
INSERT INTO runs (task, machine, version, slot, "commit", priority, status, attempt, reason,
                  created_at, not_before, planner)
VALUES (:task, :machine, :version, :slot, :commit, :priority, 'pending', 1, :reason,
        :now, :not_before, :planner)
ON CONFLICT (task, machine, version, COALESCE(slot, ''))
    WHERE status IN ('pending', 'running') AND "trigger" = 'plan' DO NOTHING
RETURNING *

-- query: insert_runs
-- `insert_run` for a plan's enqueues at once: a JSON array of [task, machine, version, slot,
-- priority, reason], inserted in its order (ids follow it). `WHERE true` tells the parser
-- that ON CONFLICT is the upsert clause, not a join's.
INSERT INTO runs (task, machine, version, slot, "commit", priority, status, attempt, reason,
                  created_at, not_before, planner)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, :commit, value ->> 4, 'pending', 1,
       value ->> 5, :now, NULL, :planner
FROM json_each(:runs) WHERE true ORDER BY key
ON CONFLICT (task, machine, version, COALESCE(slot, ''))
    WHERE status IN ('pending', 'running') AND "trigger" = 'plan' DO NOTHING
RETURNING *

-- query: insert_manual_run
-- `reconcile run`: outside the one-active-run index (migration 13), so it never collides.
INSERT INTO runs (task, machine, version, slot, "commit", priority, status, attempt, reason,
                  created_at, not_before, planner, "trigger", actor, params)
VALUES (:task, :machine, :version, NULL, :commit, :priority, 'pending', 1, :reason,
        :now, NULL, :planner, 'manual', :actor, :params)
RETURNING *

-- query: cancel_pending
UPDATE runs SET status = 'cancelled', finished_at = :now, error = :error
WHERE id = :id AND status = 'pending'
RETURNING *

-- query: reslot_pending
-- A scheduled run that has not started takes its task's latest due slot (`Plan.reslot`).
UPDATE runs SET slot = :slot
WHERE id = :id AND status = 'pending' AND started_at IS NULL

-- query: snapshot
-- The newest planned run of every (task, machine, version) — MAX(id) per group, read from
-- the runs_latest index alone — plus every active run (runs_by_status), manual ones too.
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, '' AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       "trigger", actor, params
FROM runs
WHERE id IN (SELECT MAX(id) FROM runs WHERE "trigger" = 'plan' GROUP BY task, machine, version)
   OR id IN (SELECT id FROM runs WHERE status IN ('pending', 'running'))

-- query: pending
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, '' AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       "trigger", actor, params
FROM runs WHERE status = 'pending'
ORDER BY priority, created_at, id

-- query: running
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, '' AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       "trigger", actor, params
FROM runs WHERE status = 'running'
ORDER BY id

-- query: active_runs
-- run_changes: every active run, in one read (one snapshot of the file).
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, '' AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       "trigger", actor, params
FROM runs WHERE status IN ('pending', 'running')

-- query: list_runs
-- :statuses is a JSON array or NULL; the team filter is a range on task ([team/, team0):
-- '0' follows '/'), which unlike LIKE needs no escaping of '_' and '%' in team names.
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, '' AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       "trigger", actor, params
FROM runs
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:team_lo IS NULL OR (task >= :team_lo AND task < :team_hi))
ORDER BY id DESC
LIMIT :limit

-- query: get_run
SELECT * FROM runs WHERE id = :id

-- query: get_runs
-- get_runs: several runs by id, with their output, in one read.
SELECT * FROM runs WHERE id IN (SELECT value FROM json_each(:ids))

-- query: status_of
SELECT status, epoch FROM runs WHERE id = :id

-- query: running_on_machine_of_run
SELECT count(*) FROM runs
WHERE status = 'running' AND machine = (SELECT machine FROM runs WHERE id = :id)

-- query: pending_of_runs
-- claim_batch: which of the runs asked for (:ids a JSON array) are pending, their machine,
-- and how many runs that machine runs.
SELECT r.id, r.machine,
       (SELECT count(*) FROM runs x WHERE x.status = 'running' AND x.machine = r.machine)
FROM runs r
WHERE r.id IN (SELECT value FROM json_each(:ids)) AND +r.status = 'pending'

-- query: claim_many
-- claim_batch: `claim` for every run of :ids (a JSON array) at once. `+status`: look the runs
-- up by id; by the status index the planner would walk every pending run, each round.
UPDATE runs SET status = 'running', started_at = :now, owner = :owner, epoch = epoch + 1,
                heartbeat_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'pending'
RETURNING *

-- query: claim_dispatch_many
-- round_batch: `claim_many` and `mark_dispatched_many` of the same runs in one statement.
UPDATE runs SET status = 'running', started_at = :now, owner = :owner, epoch = epoch + 1,
                dispatched = 1, heartbeat_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'pending'
RETURNING *

-- query: mark_dispatched_many
-- dispatch_batch: `mark_dispatched` for every run of :held (a JSON object: id -> epoch).
-- `+runs.status`, here and in end_many: each run is looked up by id from the JSON; by the
-- status index the planner walks every running run and scans the JSON again for each, a
-- cost that grows with the runs in flight times the batch.
UPDATE runs SET dispatched = 1, heartbeat_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
FROM (SELECT CAST(key AS INTEGER) AS id, value AS epoch FROM json_each(:held)) AS held
WHERE runs.id = held.id AND +runs.status = 'running' AND runs.epoch = held.epoch
RETURNING *

-- query: end_many
-- end_batch: `finish` or, with a retry time, `requeue`, for every end of :ends (a JSON array
-- of [id, epoch, status, exit_code, retry_at, inline, output, error]) at once, with its
-- output and error when `inline` is 1; `set_texts` then writes the others' (bound, not JSON:
-- a JSON string ends at a NUL byte).
UPDATE runs SET
  status = CASE WHEN e.retry_at IS NULL THEN e.status ELSE 'pending' END,
  finished_at = CASE WHEN e.retry_at IS NULL THEN :now ELSE runs.finished_at END,
  attempt = CASE WHEN e.retry_at IS NULL THEN runs.attempt ELSE runs.attempt + 1 END,
  not_before = CASE WHEN e.retry_at IS NULL THEN runs.not_before ELSE e.retry_at END,
  dispatched = CASE WHEN e.retry_at IS NULL THEN runs.dispatched ELSE 0 END,
  owner = CASE WHEN e.retry_at IS NULL THEN runs.owner ELSE NULL END,
  exit_code = e.exit_code,
  output = CASE WHEN e.inline THEN e.output ELSE runs.output END,
  error = CASE WHEN e.inline THEN e.error ELSE runs.error END
FROM (SELECT value ->> 0 AS id, value ->> 1 AS epoch, value ->> 2 AS status,
             value ->> 3 AS exit_code, value ->> 4 AS retry_at, value ->> 5 AS inline,
             value ->> 6 AS output, value ->> 7 AS error
      FROM json_each(:ends)) AS e
WHERE runs.id = e.id AND +runs.status = 'running' AND runs.epoch = e.epoch
RETURNING *

-- query: set_texts
UPDATE runs SET output = :output, error = :error WHERE id = :id

-- query: claim
-- The compare-and-set of the run protocol: only a pending run is taken, and the new epoch
-- is the lease every later write of this claim must name.
UPDATE runs SET status = 'running', started_at = :now, owner = :owner, epoch = epoch + 1,
                heartbeat_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
WHERE id = :id AND status = 'pending'
RETURNING *

-- query: mark_dispatched
-- Dispatching is a sign of life too: the lease is renewed with it.
UPDATE runs SET dispatched = 1, heartbeat_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
WHERE id = :id AND status = 'running' AND epoch = :epoch
RETURNING *

-- query: heartbeat
UPDATE runs SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
WHERE id = :id AND status = 'running' AND epoch = :epoch
RETURNING id

-- query: finish
UPDATE runs SET status = :status, finished_at = :now, exit_code = :exit_code,
                output = :output, error = :error
WHERE id = :id AND status = 'running' AND epoch = :epoch
RETURNING *

-- query: adopt
-- An `unknown` run whose command did finish, as the target's markers tell: its real result.
UPDATE runs SET status = :status, exit_code = :exit_code, output = :output,
                error = :error
WHERE id = :id AND status = 'unknown'
RETURNING *

-- query: requeue
-- Back to the queue for the next attempt; the last attempt's result stays visible meanwhile.
UPDATE runs SET status = 'pending', attempt = attempt + 1, not_before = :not_before,
                dispatched = 0, owner = NULL, exit_code = :exit_code, output = :output,
                error = :error
WHERE id = :id AND status = 'running' AND epoch = :epoch
RETURNING *

-- query: block
-- A pending run that ends without running: `blocked` (a dependency failed) or `halted`.
UPDATE runs SET status = :status, finished_at = :now, error = :error
WHERE id = :id AND status = 'pending'
RETURNING *

-- query: request_retry
UPDATE runs SET retry_requested = 1
WHERE id = :id AND status IN ('failed', 'blocked', 'unknown', 'halted')
RETURNING *

-- query: running_holders
-- Every running run with its holder and whether its lease expired (:age as in sweep): the
-- store decides in Python which holders are dead (a process gone from this host).
SELECT id, owner,
       COALESCE(heartbeat_at, started_at) < strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', :age)
FROM runs
WHERE status = 'running'

-- query: release_undispatched
-- A dead holder's claim that never sent its command: nothing ran, so the run waits again.
-- The epoch stays, so the dead holder's late writes (if it was not dead after all) are refused.
UPDATE runs SET status = 'pending', owner = NULL, dispatched = 0, heartbeat_at = NULL
WHERE status = 'running' AND dispatched = 0 AND id IN (SELECT value FROM json_each(:ids))
RETURNING *

-- query: release_dispatched
-- The command may have run: only an idempotent task may be re-run, which is not ours to decide.
UPDATE runs SET status = 'unknown', finished_at = :now, error = :error
WHERE status = 'running' AND dispatched = 1 AND id IN (SELECT value FROM json_each(:ids))
RETURNING *

-- query: counts
SELECT status, COUNT(*) FROM runs GROUP BY status

-- query: record_commit
INSERT INTO passes (commit_sha, recorded_at) VALUES (:commit, :now)

-- query: last_commit
SELECT commit_sha FROM passes ORDER BY id DESC LIMIT 1

-- query: forget_freezes
DELETE FROM reconciled_freezes

-- query: record_freeze
INSERT INTO reconciled_freezes (scope, reason, until, allow_priority_1)
VALUES (:scope, :reason, :until, :allow_priority_1)

-- query: reconciled_freezes
SELECT scope, reason, until, allow_priority_1 FROM reconciled_freezes ORDER BY scope

-- query: failed_since
SELECT COUNT(*) FROM runs
WHERE finished_at >= :since AND status IN ('failed', 'blocked', 'unknown', 'killed', 'halted')

-- query: audit_head
-- The audit log, alerts and retention (migration 4) follow.
SELECT seq, at, actor, action, detail, prev, hash FROM audit_log ORDER BY seq DESC LIMIT 1

-- query: audit_insert_json
-- The same rows as one JSON array (of arrays, by position), in one statement.
INSERT INTO audit_log (seq, at, actor, action, detail, prev, hash)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6
FROM json_each(?)

-- query: audit_page
SELECT seq, at, actor, action, detail, prev, hash FROM audit_log
WHERE seq > :after AND (:since IS NULL OR at >= :since)
ORDER BY seq
LIMIT :limit

-- query: audit_anchor
SELECT seq, hash FROM audit_anchor WHERE id = 1

-- query: audit_entry_hash
SELECT hash FROM audit_log WHERE seq = :seq

-- query: audit_set_anchor
INSERT INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, :seq, :hash, :now)
ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                               pruned_at = excluded.pruned_at

-- query: audit_delete_through
DELETE FROM audit_log WHERE seq <= :seq

-- query: alert_newer
-- A newer run of the same (task, machine) alerted already: this event is a late duplicate.
SELECT 1 FROM alert_memory
WHERE task = :task AND machine = :machine AND run_id > :run_id
LIMIT 1

-- query: alert_remember
INSERT INTO alert_memory (task, version, machine, outcome, run_id, alert_id, created_at)
VALUES (:task, :version, :machine, :outcome, :run_id, :alert_id, :now)
ON CONFLICT (task, version, machine, outcome) DO NOTHING
RETURNING alert_id

-- query: alert_forget
DELETE FROM alert_memory
WHERE task = :task AND machine = :machine
  AND outcome IN (SELECT value FROM json_each(:outcomes))

-- query: unreachable_machines
SELECT DISTINCT machine FROM alert_memory WHERE outcome = 'unreachable'

-- query: outbox_insert
INSERT INTO alert_outbox (id, alert_id, team, target, event, title, body, created_at,
                          claimed_by, claimed_at)
VALUES (:id, :alert_id, :team, :target, :event, :title, :body, :now, :owner,
        strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
ON CONFLICT (id) DO NOTHING

-- query: outbox_claim
-- :age is an SQLite modifier such as '-120.000000 seconds'.
UPDATE alert_outbox
SET claimed_by = :owner, claimed_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
WHERE id IN (
    SELECT id FROM alert_outbox
    WHERE status = 'pending'
      AND (claimed_at IS NULL
           OR claimed_at < strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', :age))
    ORDER BY created_at, id
    LIMIT :limit)
RETURNING id, alert_id, team, target, event, title, body, attempts, last_error, created_at

-- query: outbox_done
UPDATE alert_outbox
SET status = 'delivered', attempts = attempts + 1, last_attempt_at = :now, delivered_at = :now,
    last_error = NULL, claimed_by = NULL, claimed_at = NULL
WHERE id = :id AND status = 'pending'

-- query: outbox_failed
UPDATE alert_outbox
SET attempts = attempts + 1, last_error = :error, last_attempt_at = :now,
    status = CASE WHEN :give_up THEN 'abandoned' ELSE status END,
    claimed_by = NULL, claimed_at = NULL
WHERE id = :id AND status = 'pending'

-- query: outbox_release
UPDATE alert_outbox SET claimed_by = NULL, claimed_at = NULL
WHERE claimed_by = :owner AND status = 'pending'

-- query: outbox_pending
SELECT COUNT(*) FROM alert_outbox WHERE status = 'pending'

-- query: outbox_prune
DELETE FROM alert_outbox WHERE status IN ('delivered', 'abandoned') AND created_at < :before

-- query: previous_outcome
SELECT status FROM runs
WHERE task = :task AND machine = :machine AND id < :before_id
  AND status NOT IN ('pending', 'running', 'cancelled')
ORDER BY id DESC
LIMIT 1

-- query: prunable_runs
-- Final runs that ended before :before and are not the newest planned run of their (task,
-- machine, version): that one is what the planner remembers as "ran", and is never pruned.
-- A manual run (migration 13) is nobody's memory: it goes when it is old enough.
SELECT * FROM runs AS r
WHERE r.id > :after AND r.status NOT IN ('pending', 'running') AND r.finished_at < :before
  AND (r."trigger" <> 'plan'
       OR r.id < (SELECT MAX(l.id) FROM runs AS l
                  WHERE l.task = r.task AND l.machine = r.machine AND l.version = r.version
                    AND l."trigger" = 'plan'))
ORDER BY r.id
LIMIT :limit

-- query: delete_runs
DELETE FROM runs
WHERE id IN (SELECT value FROM json_each(:ids))
  AND status NOT IN ('pending', 'running') AND finished_at < :before
  AND ("trigger" <> 'plan'
       OR id < (SELECT MAX(l.id) FROM runs AS l
                WHERE l.task = runs.task AND l.machine = runs.machine
                  AND l.version = runs.version AND l."trigger" = 'plan'))

-- query: beat_drain
-- A drain's sign of life (see migration 5); owners silent for a day are forgotten meanwhile.
INSERT INTO drains (owner, beat_at) VALUES (:owner, strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at

-- query: forget_drains
DELETE FROM drains WHERE beat_at < strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '-1 day')

-- query: pending_planners
-- Every pending run that :owner did not plan, with its planner and whether that planner's
-- drain beat within the lease (:age as in sweep).
SELECT r.id, r.planner,
       COALESCE(d.beat_at >= strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', :age), 0)
FROM runs r LEFT JOIN drains d ON d.owner = r.planner
WHERE r.status = 'pending' AND (r.planner IS NULL OR r.planner <> :owner)

-- query: take_over
-- Adopt a pending run of a dead planner: compare-and-set on the planner judged dead, so of
-- two passes adopting it at once one wins.
UPDATE runs SET planner = :owner
WHERE id = :id AND status = 'pending' AND planner IS :old
RETURNING id

-- query: approval_insert
-- `approve` writes only what no verified approval of the same key covers: a row already
-- there does not verify (written by hand, altered), and the new signature replaces it.
INSERT INTO approvals (task, machine, version, fingerprint, role, "commit", signature, approved_at)
VALUES (:task, :machine, :version, :fingerprint, :role, :commit, :signature, :now)
ON CONFLICT (task, machine, version, fingerprint) DO UPDATE
SET role = excluded.role, "commit" = excluded."commit", signature = excluded.signature,
    approved_at = excluded.approved_at

-- query: approvals_of_task
SELECT task, machine, version, fingerprint, role, "commit", signature, approved_at
FROM approvals WHERE task = :task ORDER BY id

-- query: reconciled_before
-- The trusted inventory a commit was judged by: the commit passes reconciled last before the
-- first pass over it (approvals: a key added by the change itself may not approve it).
SELECT commit_sha FROM passes
WHERE id < (SELECT MIN(id) FROM passes WHERE commit_sha = :commit) AND commit_sha <> :commit
ORDER BY id DESC LIMIT 1

-- query: output_insert
INSERT INTO run_output (run_id, attempt, seq, start, body)
VALUES (:run_id, :attempt, :seq, :start, :body)
ON CONFLICT (run_id, attempt, seq) DO NOTHING

-- query: output_trim
DELETE FROM run_output WHERE run_id = :run_id AND attempt = :attempt AND seq <= :seq

-- query: output_since
SELECT seq, start, body FROM run_output
WHERE run_id = :run_id AND attempt = :attempt AND seq > :after
ORDER BY seq

-- query: output_drop
DELETE FROM run_output WHERE run_id IN (SELECT value FROM json_each(:ids))

-- query: runs_page
-- The web console's runs, newest first, one page after the keyset :before (an id; NULL: the
-- newest). Each filter is NULL or narrows: statuses (a JSON array), team (a range on task, as
-- list_runs), task and machine (equal), commit (a prefix of the sha).
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, '' AS output, error,
       dispatched, retry_requested, epoch, owner
FROM runs
WHERE (:before IS NULL OR id < :before)
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:team_lo IS NULL OR (task >= :team_lo AND task < :team_hi))
  AND (:task IS NULL OR task = :task)
  AND (:machine IS NULL OR machine = :machine)
  AND (:commit IS NULL OR substr("commit", 1, length(:commit)) = :commit)
ORDER BY id DESC
LIMIT :limit

-- query: last_pass
SELECT commit_sha, recorded_at FROM passes ORDER BY id DESC LIMIT 1

-- query: kill_request
-- One request per run: a second `queue kill` of the same claim replaces the first (its grace
-- and reason); the holder acts on the first one it saw.
INSERT INTO kill_requests (run_id, epoch, grace, actor, reason, requested_at)
VALUES (:run_id, :epoch, :grace, :actor, :reason, :now)
ON CONFLICT (run_id) DO UPDATE SET epoch = excluded.epoch, grace = excluded.grace,
    actor = excluded.actor, reason = excluded.reason, requested_at = excluded.requested_at

-- query: kill_requests_of
SELECT run_id, epoch, grace, actor, reason FROM kill_requests
WHERE run_id IN (SELECT value FROM json_each(:ids))

-- query: output_of_deleted
-- delete_runs: the output chunks of pruned runs (left by a holder that died before it ended).
DELETE FROM run_output
WHERE run_id IN (SELECT value FROM json_each(:ids))
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = run_output.run_id)

-- query: kills_of_deleted
DELETE FROM kill_requests
WHERE run_id IN (SELECT value FROM json_each(:ids))
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = kill_requests.run_id)
