-- The PostgreSQL state store schema, as numbered migrations.
--
-- Each migration starts with a line `-- migration N: name` and runs, with its record in
-- `schema_migrations`, in one transaction when a store is opened, under an advisory lock so
-- that several processes opening a fresh database at once migrate it once. Never edit a
-- migration that has shipped: append a new one (an added column goes last: rows are read by
-- position). The numbering follows sqlite.sql, so both backends are at "the same" schema.
-- Queries follow the migrations, each under `-- query: name`; parameters are always bound
-- (psycopg's named placeholders), so no query text may hold a bare percent sign.
-- Arrays on the batch path come cheap to adapt: integers as their text literal (postgres._ints,
-- cast here), texts and bytea in binary (%(name)b): psycopg adapts a list in text element by
-- element in Python.

-- migration 1: runs
CREATE TABLE runs (
    -- An identity is never reused: run ids are cited in audit records and alerts.
    id              bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- COLLATE "C": byte order, as in SQLite, so list_runs' team range [team/, team0) holds
    -- whatever the database's locale is (a locale collation may ignore '/' and '_').
    task            text    COLLATE "C" NOT NULL,   -- <team>/<name>
    machine         text    COLLATE "C" NOT NULL,
    version         text    COLLATE "C" NOT NULL,
    slot            text    COLLATE "C",            -- due cron slot (ISO 8601 UTC) or NULL
    "commit"        text,
    priority        integer NOT NULL CHECK (priority BETWEEN 1 AND 5),
    status          text    NOT NULL CHECK (status IN ('pending', 'running', 'succeeded',
                                                   'failed', 'skipped', 'cancelled', 'blocked',
                                                   'unknown')),
    attempt         integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    reason          text    NOT NULL,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz,
    not_before      timestamptz,
    exit_code       integer,
    -- bytea, not text: a command's output may hold NUL characters, which text refuses. UTF-8.
    output          bytea   NOT NULL DEFAULT '',
    error           text,
    dispatched      boolean NOT NULL DEFAULT false,
    retry_requested boolean NOT NULL DEFAULT false,
    epoch           bigint  NOT NULL DEFAULT 0,      -- bumped by every claim: the lease
    owner           text
);

-- The invariant of DESIGN §5: at most one active run per (task, machine, version, slot). Two
-- planners recording the same plan at once collide here, and ON CONFLICT DO NOTHING makes the
-- loser a no-op. COALESCE because NULLs are distinct in a UNIQUE index.
CREATE UNIQUE INDEX runs_one_active
    ON runs (task, machine, version, (COALESCE(slot, '')))
    WHERE status IN ('pending', 'running');

-- The queue: pending() in dispatch order, running(), counts() by status, snapshot's active runs.
CREATE INDEX runs_by_status ON runs (status, priority, created_at, id);

-- snapshot(): MAX(id) per (task, machine, version); also list_runs' team filter (a range on task).
CREATE INDEX runs_latest ON runs (task, machine, version, id);

-- failed_since(): the problem runs by end time.
CREATE INDEX runs_problems_by_finished ON runs (finished_at)
    WHERE status IN ('failed', 'blocked', 'unknown');

-- migration 2: leases
-- The lease of a running run (DESIGN §5): stamped by claim, heartbeat and mark_dispatched with
-- the server's clock (now()), so workers on hosts with skewed clocks agree on who is dead.
-- NULL for a run claimed before this migration: its lease counts from its claim (started_at).
ALTER TABLE runs ADD COLUMN heartbeat_at timestamptz;

-- migration 3: passes
-- The commits passes reconciled, newest last: a pass refuses a commit that does not descend
-- from the last one (history rewritten, or a late CI run for an older commit).
CREATE TABLE passes (
    id          bigserial PRIMARY KEY,
    commit_sha  text NOT NULL,
    recorded_at timestamptz NOT NULL
);

-- migration 4: audit and alerts
-- The audit log (SPEC §4): a hash chain, one row per entry, appended only by append_audit,
-- which takes a transaction-level advisory lock, reads the head and inserts after it, so
-- concurrent writers on every host form one linear chain. seq is the chain position (head + 1,
-- never chosen by the database); `at` and `detail` are text, not timestamptz and jsonb: they
-- keep the exact text that was hashed (detail: canonical JSON).
CREATE TABLE audit_log (
    seq     bigint PRIMARY KEY,
    at      text   COLLATE "C" NOT NULL,
    actor   text   NOT NULL,
    action  text   NOT NULL,
    detail  text   NOT NULL,
    prev    text   NOT NULL,
    hash    text   NOT NULL
);

-- audit export --since: entries by time (ISO 8601 UTC text: byte order is time order).
CREATE INDEX audit_log_by_time ON audit_log (at);

-- After `queue prune --archive`: the last archived entry, which the first kept entry links to.
CREATE TABLE audit_anchor (
    id        integer PRIMARY KEY CHECK (id = 1),
    seq       bigint  NOT NULL,
    hash      text    NOT NULL,
    pruned_at timestamptz NOT NULL
);

-- What was alerted: one row per dedupe key (task, version, machine, outcome); the primary key
-- makes a second reconciler's (or a restarted one's) insert of the same key a no-op. A machine
-- alert has '' for task and version.
CREATE TABLE alert_memory (
    task       text   COLLATE "C" NOT NULL,
    version    text   COLLATE "C" NOT NULL,
    machine    text   COLLATE "C" NOT NULL,
    outcome    text   NOT NULL,
    run_id     bigint,
    alert_id   text   NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (task, version, machine, outcome)
);
CREATE INDEX alert_memory_by_line ON alert_memory (task, machine, run_id);

-- Deliveries of alerts, one per (alert, target), until delivered: the outbox a failed delivery
-- waits in for the next pass. `target` is `url:<url>` or `vault:<NAME>`: never a resolved
-- secret. A claim (claimed_at by the server's clock) keeps two processes from sending one row.
CREATE TABLE alert_outbox (
    id              text    PRIMARY KEY,
    alert_id        text    NOT NULL,
    team            text    NOT NULL,
    target          text    NOT NULL,
    event           text    NOT NULL,
    title           text    NOT NULL,
    body            text    NOT NULL,
    status          text    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'delivered', 'abandoned')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    claimed_by      text,
    claimed_at      timestamptz
);
CREATE INDEX alert_outbox_by_status ON alert_outbox (status, created_at, id);

-- previous_outcome(): the newest runs of a task on a machine, whatever their version.
CREATE INDEX runs_by_task_machine ON runs (task, machine, id);

-- migration 5: planners
-- Which pass enqueued each run (`planner`: that pass's owner string, kept by a retry; taken by
-- the pass that adopts the run of a dead planner), so a pass claims only its own runs and
-- those of planners that are gone, never the queue of a live pass draining beside it. NULL for
-- a run enqueued before this migration: its planner is unknown, so any pass may adopt it.
-- `drains`: each live drain stamps its owner with the server's clock every heartbeat, the sign of
-- life of a planner whose process cannot be looked at from here (another pid namespace).
ALTER TABLE runs ADD COLUMN planner text;
CREATE TABLE drains (
    owner   text PRIMARY KEY,
    beat_at timestamptz NOT NULL
);

-- migration 6: audit queue
-- Group commit without a global lock on the hot path (issue 13): a batch of run changes inserts
-- its audit entries here, in its own transaction, without the audit lock; one sealer at a time
-- (under the audit lock) links queued entries in id order after the head of `audit_log` and
-- deletes them from here, in one transaction. `at`, `actor`, `action` and `detail` are the
-- exact texts that will be hashed (detail: canonical JSON), as in `audit_log`. An entry is in
-- exactly one of the two tables: `audit verify` checks the chain and counts what waits here.
CREATE TABLE audit_queue (
    id      bigserial PRIMARY KEY,
    at      text COLLATE "C" NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    detail  text NOT NULL
);

-- A queued entry leaves the queue only into the chain: a role that does not own the table
-- (the worker role: every worker seals, so it may DELETE) deletes only entries whose texts are
-- in audit_log already, put there by its seal in the same transaction or before. So a worker
-- host cannot drop or rewrite (DELETE then INSERT) an entry another host queued without
-- leaving it in the chain, where the hash chain covers it; its DELETE of an unsealed entry
-- deletes nothing. A detail the sealer could not link as it was (not canonical JSON: see
-- `postgres._sealable`) is chained as {"unreadable": <text>}; to_json escapes text exactly as
-- the sealer's canonical JSON does. Row-level security, not a trigger: the condition is part
-- of the DELETE's plan (no call per row), and the owner (the admin) is not subject to it.
CREATE INDEX audit_log_by_detail ON audit_log (md5(detail));
ALTER TABLE audit_queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_queue_read ON audit_queue FOR SELECT USING (true);
CREATE POLICY audit_queue_write ON audit_queue FOR INSERT WITH CHECK (true);
CREATE POLICY audit_queue_leaves_into_the_chain ON audit_queue FOR DELETE USING (
    EXISTS (SELECT 1 FROM audit_log AS l
            WHERE md5(l.detail) = md5(audit_queue.detail) AND l.detail = audit_queue.detail
              AND l.at = audit_queue.at AND l.actor = audit_queue.actor
              AND l.action = audit_queue.action)
    OR EXISTS (SELECT 1 FROM audit_log AS l
               WHERE md5(l.detail) = md5('{"unreadable":' || to_json(audit_queue.detail)::text || '}')
                 AND l.detail = '{"unreadable":' || to_json(audit_queue.detail)::text || '}'
                 AND l.at = audit_queue.at AND l.actor = audit_queue.actor
                 AND l.action = audit_queue.action)
);

-- migration 7: run changes
-- The change feed of a drain (issue 13): every write of a run stamps the row with the id of
-- the transaction that wrote it (`changed_by`, by a trigger: whatever the statement), so a
-- drain re-reads only the runs whose write committed since its last read, those whose writer
-- its last snapshot did not see (`run_changes`), instead of the whole queue every round. A
-- transaction id is assigned in commit-independent order, so "since" is a snapshot, never
-- a number. Rows written before this migration carry 0, which every snapshot sees.
ALTER TABLE runs ADD COLUMN changed_by xid8 NOT NULL DEFAULT '0';
CREATE INDEX runs_by_change ON runs (changed_by);
CREATE FUNCTION runs_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $stamp$
BEGIN
    NEW.changed_by := pg_current_xact_id();
    RETURN NEW;
END
$stamp$;
CREATE TRIGGER runs_stamp_change BEFORE INSERT OR UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION runs_stamp_change();

-- migration 8: approvals
-- The two-person rule (issue 15 §3): one row per member's signed approval of a task's version
-- on a machine (`reconcile approve`). `signature` is the `ssh-keygen -Y sign` armour over the
-- approval's text (task, versions, machines), kept so it can be checked again; `commit` is the
-- last reconciled commit whose member keys it was verified against. A new version has no rows.
CREATE TABLE approvals (
    id          bigserial PRIMARY KEY,
    task        text NOT NULL,
    machine     text NOT NULL,
    version     text NOT NULL,
    fingerprint text NOT NULL,
    role        text NOT NULL,
    "commit"    text NOT NULL,
    signature   text NOT NULL,
    approved_at timestamptz NOT NULL,
    UNIQUE (task, machine, version, fingerprint)
);

-- migration 9: run output
-- The output of running runs as it comes (issue 16 §1): the engine appends each run's new
-- lines, redacted, once a second (never for a run that ended within its first second: its
-- final output is all there is to see). `start` is where the chunk begins in the run's
-- redacted output (UTF-8 bytes), so a reader that starts late knows how much it missed. The
-- writer drops a run's oldest chunks beyond the last 64 KiB, and all of them once the run's
-- end is recorded (its `output` column then holds the same text). bytea as `runs.output`.
CREATE TABLE run_output (
    run_id  bigint  NOT NULL,
    attempt integer NOT NULL,
    seq     integer NOT NULL,
    start   bigint  NOT NULL,
    body    bytea   NOT NULL,
    PRIMARY KEY (run_id, attempt, seq)
);

-- migration 10: reconciled freezes
-- The freezes (`suspend:`) in force in the inventory the latest pass planned with, replaced by
-- each pass in the transaction that records its plan. Workers hold what they cover besides
-- what their own checkout freezes: a checkout that lags the passes cannot run work that a
-- reconciled freeze holds, and a freeze lifts for workers once a pass reconciles its lifting.
CREATE TABLE reconciled_freezes (
    scope            text PRIMARY KEY,
    reason           text NOT NULL,
    until            timestamptz,
    allow_priority_1 boolean NOT NULL
);

-- migration 11: killed
-- `queue kill` (issue 16 §2): a run stopped on request ends `killed`, a final problem status.
-- `kill_requests`: what `queue kill` asks of the process that holds a running run (found
-- through the store, wherever it runs): the holder looks for requests on its runs every
-- second and stops the run's process group (TERM, then KILL after `grace` seconds). `epoch`
-- names the claim the request is for: a later attempt is not killed by it.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled',
                      'blocked', 'unknown', 'killed'));
DROP INDEX runs_problems_by_finished;
CREATE INDEX runs_problems_by_finished ON runs (finished_at)
    WHERE status IN ('failed', 'blocked', 'unknown', 'killed');
CREATE TABLE kill_requests (
    run_id       bigint  PRIMARY KEY,
    epoch        bigint  NOT NULL,
    grace        double precision NOT NULL,
    actor        text    NOT NULL,
    reason       text,
    requested_at timestamptz NOT NULL
);

-- migration 12: halted
-- A final status of issue 15 §1: a run whose rollout stopped past its failure budget before it
-- started ends `halted` (a problem). The problem runs' index counts it too.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled',
                      'blocked', 'unknown', 'killed', 'halted'));
DROP INDEX runs_problems_by_finished;
CREATE INDEX runs_problems_by_finished ON runs (finished_at)
    WHERE status IN ('failed', 'blocked', 'unknown', 'killed', 'halted');

-- migration 13: manual runs
-- `reconcile run` (issue 16 §3): a run a person asked for now, with the parameters it was
-- given. `trigger` is 'plan' for what a pass enqueued, 'manual' for these; `reason` then holds
-- the person's text and `actor` who asked; `params` is a JSON object of the parameters
-- given (defaults filled in), read by whichever worker runs it. A manual run is outside the
-- planner's bookkeeping: the one-active-run invariant and the "latest run of a version"
-- (runs_latest, which now carries the trigger) are about planned runs only, so a pass may
-- enqueue the same version beside a manual run, and a manual run never stands for the
-- version's outcome.
ALTER TABLE runs ADD COLUMN "trigger" text NOT NULL DEFAULT 'plan'
    CHECK ("trigger" IN ('plan', 'manual'));
ALTER TABLE runs ADD COLUMN actor text;
ALTER TABLE runs ADD COLUMN params text;
DROP INDEX runs_one_active;
CREATE UNIQUE INDEX runs_one_active
    ON runs (task, machine, version, (COALESCE(slot, '')))
    WHERE status IN ('pending', 'running') AND "trigger" = 'plan';
DROP INDEX runs_latest;
CREATE INDEX runs_latest ON runs (task, machine, version, "trigger", id);

-- ---------------------------------------------------------------------------------------------
-- Queries. Reads that feed the planner and the queue name their columns and leave `output` out
-- (empty in its place): it is up to 64 KiB per run and only get_run needs it.

-- query: schema_exists
SELECT to_regclass('runs') IS NOT NULL, to_regclass('schema_migrations') IS NOT NULL

-- query: lock_migrations
-- Held to the end of the migrating transaction: a second process opening the same fresh
-- database waits here, then finds every migration recorded.
SELECT pg_advisory_xact_lock(%(key)s)

-- query: create_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL
)

-- query: applied_migrations
SELECT version FROM schema_migrations ORDER BY version

-- query: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (%(version)s, %(name)s, now())

-- query: try_pass_lock
-- Session level: held until unlocked or until the session ends, however its process ends.
SELECT pg_try_advisory_lock(%(key)s)

-- query: pass_unlock
SELECT pg_advisory_unlock(%(key)s)

-- query: lock_record
-- Serialises record_plan between planners for its one transaction: two plans that insert
-- and cancel the same keys in different orders would otherwise deadlock on each other's rows.
SELECT pg_advisory_xact_lock(%(key)s)

-- query: insert_runs
-- A plan's enqueues in one statement, idempotent: the partial unique index turns a second
-- active run into a no-op. In plan order (ids are drawn as the rows come, so dispatch order
-- among runs of one priority and age stays the plan's).
INSERT INTO runs (task, machine, version, slot, "commit", priority, status, attempt, reason,
                  created_at, not_before, planner)
SELECT e.task, e.machine, e.version, e.slot, %(commit)s, e.priority, 'pending', 1, e.reason,
       %(now)s, NULL, %(planner)s
FROM unnest(%(tasks)s::text[], %(machines)s::text[], %(versions)s::text[], %(slots)s::text[],
            %(priorities)s::integer[], %(reasons)s::text[])
     WITH ORDINALITY AS e(task, machine, version, slot, priority, reason, ord)
ORDER BY e.ord
ON CONFLICT (task, machine, version, (COALESCE(slot, '')))
    WHERE status IN ('pending', 'running') AND "trigger" = 'plan' DO NOTHING
RETURNING *

-- query: insert_manual_run
-- `reconcile run`: outside the one-active-run index (migration 13), so it never collides.
INSERT INTO runs (task, machine, version, slot, "commit", priority, status, attempt, reason,
                  created_at, not_before, planner, "trigger", actor, params)
VALUES (%(task)s, %(machine)s, %(version)s, NULL, %(commit)s, %(priority)s, 'pending', 1,
        %(reason)s, %(now)s, NULL, %(planner)s, 'manual', %(actor)s, %(params)s)
RETURNING *

-- query: cancel_pending
UPDATE runs SET status = 'cancelled', finished_at = %(now)s, error = %(error)s
WHERE id = %(id)s AND status = 'pending'
RETURNING *

-- query: reslot_pending
-- A scheduled run that has not started takes its task's latest due slot (`Plan.reslot`).
UPDATE runs SET slot = %(slot)s
WHERE id = %(id)s AND status = 'pending' AND started_at IS NULL

-- query: snapshot
-- The newest planned run of every (task, machine, version) plus every active run (manual
-- ones too: migration 13).
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, ''::bytea AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       NULL AS changed_by, "trigger", actor, params
FROM runs
WHERE id IN (SELECT MAX(id) FROM runs WHERE "trigger" = 'plan' GROUP BY task, machine, version)
   OR status IN ('pending', 'running')

-- query: pending
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, ''::bytea AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       NULL AS changed_by, "trigger", actor, params
FROM runs WHERE status = 'pending'
ORDER BY priority, created_at, id

-- query: running
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, ''::bytea AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       NULL AS changed_by, "trigger", actor, params
FROM runs WHERE status = 'running'
ORDER BY id

-- query: listen_runs
-- wait_for_runs: an idle worker's connection hears of each plan recorded (notify_runs).
LISTEN reconciler_runs

-- query: notify_runs
-- record_plan, when it queued runs: delivered when its transaction commits, to every listener.
SELECT pg_notify('reconciler_runs', '')

-- query: listen_ends
-- wait_for_ends: a pass waiting only on runs held elsewhere hears of each end recorded.
-- A channel of its own, so that idle workers (listen_runs) are not woken by every end.
LISTEN reconciler_ends

-- query: active_runs
-- run_changes from nothing: every active run, and the snapshot they were read in (the
-- statement's own: the cursor of the next call). One row with NULL columns when none is.
WITH now AS (SELECT pg_current_snapshot()::text AS snap)
SELECT r.id, r.task, r.machine, r.version, r.slot, r."commit", r.priority, r.status,
       r.attempt, r.reason, r.created_at, r.started_at, r.finished_at, r.not_before,
       r.exit_code, ''::bytea AS output, r.error, r.dispatched, r.retry_requested, r.epoch,
       r.owner, NULL AS heartbeat_at, NULL AS planner, NULL AS changed_by, r."trigger",
       r.actor, r.params, now.snap
FROM now LEFT JOIN runs AS r ON r.status IN ('pending', 'running')

-- query: run_changes
-- run_changes since the snapshot %(since)s: the runs whose last write that snapshot did not
-- see, whatever their status, and the snapshot of this read. Every transaction the old
-- snapshot did not see has an id of at least its xmin (%(xmin)s), which the index finds.
WITH now AS (SELECT pg_current_snapshot()::text AS snap)
SELECT r.id, r.task, r.machine, r.version, r.slot, r."commit", r.priority, r.status,
       r.attempt, r.reason, r.created_at, r.started_at, r.finished_at, r.not_before,
       r.exit_code, ''::bytea AS output, r.error, r.dispatched, r.retry_requested, r.epoch,
       r.owner, NULL AS heartbeat_at, NULL AS planner, NULL AS changed_by, r."trigger",
       r.actor, r.params, now.snap
FROM now LEFT JOIN runs AS r
  ON r.changed_by >= %(xmin)s::xid8
 AND NOT pg_visible_in_snapshot(r.changed_by, %(since)s::pg_snapshot)

-- query: list_runs
-- statuses is a text array or NULL; the team filter is a range on task ([team/, team0): '0'
-- follows '/' in the "C" collation of the column), which unlike LIKE needs no escaping.
-- A NULL limit is no limit.
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, ''::bytea AS output, error,
       dispatched, retry_requested, epoch, owner, NULL AS heartbeat_at, NULL AS planner,
       NULL AS changed_by, "trigger", actor, params
FROM runs
WHERE (%(statuses)s::text[] IS NULL OR status = ANY (%(statuses)s::text[]))
  AND (%(team_lo)s::text IS NULL OR (task >= %(team_lo)s::text AND task < %(team_hi)s::text))
ORDER BY id DESC
LIMIT %(limit)s

-- query: get_run
SELECT * FROM runs WHERE id = %(id)s

-- query: get_runs
-- get_runs: several runs by id, with their output, in one read.
SELECT * FROM runs WHERE id = ANY(%(ids)s)

-- query: status_of
SELECT status, epoch FROM runs WHERE id = %(id)s

-- query: claim
-- The compare-and-set of the run protocol, in one statement (its own short transaction,
-- committed before any work). FOR UPDATE SKIP LOCKED: of several workers claiming the same run
-- at once, one locks the row and the others skip it at once (None) instead of queueing behind
-- it. The lock returns the newest committed version of the row, so `pending` is checked on
-- it, and the lock keeps it so until the update: a run claimed meanwhile is not taken twice.
-- The row is locked by its primary key alone and found by it again (a scalar subquery):
-- with `status` in the locking scan or a join, the planner may walk every pending run once
-- per claim. The new epoch is the lease every later write names; heartbeat_at takes the
-- server's clock, started_at the caller's (the run's history).
WITH target AS MATERIALIZED (
    SELECT id, status FROM runs WHERE id = %(id)s
    FOR UPDATE SKIP LOCKED
)
UPDATE runs
SET status = 'running', started_at = %(now)s, owner = %(owner)s, epoch = epoch + 1,
    heartbeat_at = now()
WHERE id = (SELECT id FROM target WHERE status = 'pending')
RETURNING *

-- query: lock_machine_of_run
-- max_parallel across workers: claims for one machine take this transaction-level lock in
-- turn (released at commit), so counting its running runs and claiming one is atomic.
SELECT machine, pg_advisory_xact_lock(hashtext('reconciler.machine'), hashtext(machine))
FROM runs WHERE id = %(id)s

-- query: running_on_machine
SELECT count(*) FROM runs WHERE machine = %(machine)s AND status = 'running'

-- query: claim_commit_unflushed
-- A claim batch commits without waiting for its WAL to reach the disk: it holds its machines'
-- locks until it commits, and every other claim for those machines waits that long (a flush
-- is ~3 ms, most of a claim). Nothing is lost: no command is sent before the batch's dispatch
-- marks commit, and their durable commit flushes the WAL the claims were written to first; a
-- server that crashed before then forgets the claims, and the dispatch batch finds no run
-- held at its epoch (refused: nothing sent), as after any lost lease.
SET LOCAL synchronous_commit = off

-- query: claim_within_limits
-- claim_batch's claims in one statement, after the batch took its machines' locks (so the
-- running runs counted here cannot change until it commits): of the requests still pending
-- (a request repeated counts once, at its first place), in request order, those whose
-- machine runs fewer than their limit (%(limits)s, NULL: none) counting the requests before
-- them on that machine, at most %(want)s (NULL: all). Each chosen row is locked by its
-- primary key (SKIP LOCKED: a run another claim holds is not waited for) and taken only if
-- still pending on its newest version, as in claim. Every row carries the ids chosen,
-- and one row of NULLs (the ids chosen) is returned when none was taken. The chosen rows are
-- locked and updated through joins on their ids, which the planner probes by primary key:
-- `id = ANY (ARRAY(SELECT ...))` is estimated at 10 ids, and on a small table (a few hundred
-- runs) it scanned the whole table twice for one claim (18 of 71 buffers, ~0.3 ms).
-- %(dispatch)s: the claim marks its runs dispatched too (as dispatch_batch_queued: the lease renewed
-- by the same heartbeat_at), for round_batch, whose claims and dispatch marks commit in one
-- transaction, held from the claim on: a mark of its own rewrote each run's row (and its
-- seven index entries) once more. The claim batch alone passes false.
WITH req AS (
    SELECT DISTINCT ON (u.id) u.id, u.lim, u.ord
    FROM unnest(%(ids)s::bigint[], %(limits)s::integer[]) WITH ORDINALITY AS u(id, lim, ord)
    ORDER BY u.id, u.ord
), cand AS (
    SELECT r.id, r.machine, req.lim, req.ord
    FROM runs AS r JOIN req ON req.id = r.id
    WHERE r.id = ANY (%(ids)s::bigint[]) AND r.status = 'pending'
), busy AS (
    SELECT machine, count(*) AS n FROM runs
    WHERE status = 'running' AND machine = ANY (ARRAY(SELECT machine FROM cand))
    GROUP BY machine
), ranked AS (
    SELECT c.id, c.ord, c.lim, COALESCE(b.n, 0) AS n,
           row_number() OVER (PARTITION BY c.machine ORDER BY c.ord) AS nth
    FROM cand AS c LEFT JOIN busy AS b ON b.machine = c.machine
), chosen AS MATERIALIZED (
    SELECT id FROM ranked WHERE lim IS NULL OR n + nth <= lim
    ORDER BY ord LIMIT %(want)s
), target AS MATERIALIZED (
    SELECT r.id, r.status FROM runs AS r WHERE r.id IN (SELECT id FROM chosen)
    FOR UPDATE OF r SKIP LOCKED
), claimed AS (
    UPDATE runs AS r
    SET status = 'running', started_at = %(now)s, owner = %(owner)s, epoch = r.epoch + 1,
        heartbeat_at = now(), dispatched = (r.dispatched OR %(dispatch)s::boolean)
    FROM target AS t WHERE r.id = t.id AND t.status = 'pending'
    RETURNING r.*
)
SELECT claimed.*, ch.ids
FROM (SELECT ARRAY(SELECT id FROM chosen) AS ids) AS ch LEFT JOIN claimed ON true

-- query: lock_machines_of_runs
-- The machine locks of a claim batch (as lock_machine_of_run), one per key, in key order: two
-- batches never wait on each other in a cycle, even for machines whose names hash alike. A
-- volatile function of the output list is evaluated after ORDER BY, so the locks are taken
-- in that order.
SELECT pg_advisory_xact_lock(hashtext('reconciler.machine'), key)
FROM (SELECT DISTINCT hashtext(machine) AS key FROM runs WHERE id = ANY (%(ids)s::bigint[])) AS k
ORDER BY key

-- query: runs_by_ids
SELECT * FROM runs WHERE id = ANY (%(ids)s::bigint[])

-- query: dispatch_batch_queued
-- dispatch_batch and its audit entries in one statement: the entries of the runs it marked
-- (%(runs)s names each entry's run) are queued in order (as audit_enqueue), those of a run
-- whose lease was lost are not. Sent alone (a transaction of its own: the session is in
-- autocommit), a dispatch batch is one round trip.
-- A run is marked only at its claim's epoch and owner: a claim commits unflushed
-- (claim_commit_unflushed), and one a crashed server forgot leaves its epoch to the next claim.
WITH marked AS (
    UPDATE runs AS r SET dispatched = true, heartbeat_at = now()
    FROM unnest(%(ids)s::bigint[], %(epochs)s::bigint[], %(owners)b::text[])
         AS t(id, epoch, owner)
    WHERE r.id = ANY (%(ids)s::bigint[]) AND r.id = t.id AND r.epoch = t.epoch
      AND r.owner = t.owner AND r.status = 'running'
    RETURNING r.*
), queued AS (
    INSERT INTO audit_queue (at, actor, action, detail)
    SELECT q.at, q.actor, q.action, q.detail
    FROM unnest(%(runs)s::bigint[], %(at)b::text[], %(actor)b::text[], %(action)b::text[],
                %(detail)b::text[]) WITH ORDINALITY AS q(run, at, actor, action, detail, n)
    WHERE q.run IN (SELECT id FROM marked)
    ORDER BY q.n
)
SELECT * FROM marked

-- query: finish_batch_told
-- end_batch and round_batch: the finishes of a batch (each run by its id and epoch: the
-- `id = ANY` lets the planner find the rows by primary key, whatever the number of running
-- runs; requeue_batch alike), then the notification of ends for all the batch's ends
-- (%(ended)s), and (as lock_machines_of_runs) the machine locks of the claims sent after it in
-- the same transaction (%(lock)s, maybe none): one statement where there were three.
-- The notification is delivered when the transaction commits (one per transaction, however
-- many ends it records), and only once the planners of those runs have none pending (a pass
-- waits on ends once its queue is taken): a notifying COMMIT takes a database-wide lock,
-- which the hot path of a busy queue should not take. A requeue of the same batch is sent
-- before this statement, so that the pending runs it makes are seen. The locks are taken by
-- this statement, before the claims' statement starts: that one counts the running runs in
-- a snapshot taken after it holds them. Each CTE is read by the final SELECT (a CTE of a plain SELECT that nothing
-- reads is never run), the volatile functions after each one's ORDER BY (as in
-- lock_machines_of_runs: the locks in key order).
WITH done AS (
    UPDATE runs AS r
    SET status = t.status, finished_at = %(now)s, exit_code = t.exit_code, output = t.output,
        error = t.error
    FROM unnest(%(ids)s::bigint[], %(epochs)s::bigint[], %(statuses)b::text[],
                %(exit_codes)s::integer[], %(outputs)b::bytea[], %(errors)b::text[])
         AS t(id, epoch, status, exit_code, output, error)
    WHERE r.id = ANY (%(ids)s::bigint[]) AND r.id = t.id AND r.epoch = t.epoch
      AND r.status = 'running'
    RETURNING r.*
), told AS (
    SELECT pg_notify('reconciler_ends', '')
    WHERE NOT EXISTS (
        SELECT 1 FROM runs AS p
        WHERE p.status = 'pending'
          AND p.planner IN (SELECT e.planner FROM runs AS e
                            WHERE e.id = ANY (%(ended)s::bigint[])))
), locked AS (
    SELECT pg_advisory_xact_lock(hashtext('reconciler.machine'), key)
    FROM (SELECT DISTINCT hashtext(machine) AS key FROM runs
          WHERE id = ANY (%(lock)s::bigint[])) AS k
    ORDER BY key
)
SELECT done.* FROM done
WHERE (SELECT count(*) FROM told) >= 0 AND (SELECT count(*) FROM locked) >= 0

-- query: requeue_batch
UPDATE runs AS r
SET status = 'pending', attempt = r.attempt + 1, not_before = t.not_before, dispatched = false,
    owner = NULL, exit_code = t.exit_code, output = t.output, error = t.error
FROM unnest(%(ids)s::bigint[], %(epochs)s::bigint[], %(not_befores)s::timestamptz[],
            %(exit_codes)s::integer[], %(outputs)b::bytea[], %(errors)b::text[])
     AS t(id, epoch, not_before, exit_code, output, error)
WHERE r.id = ANY (%(ids)s::bigint[]) AND r.id = t.id AND r.epoch = t.epoch
  AND r.status = 'running'
RETURNING r.*

-- query: mark_dispatched
-- Dispatching is a sign of life too: the lease is renewed with it.
UPDATE runs SET dispatched = true, heartbeat_at = now()
WHERE id = %(id)s AND status = 'running' AND epoch = %(epoch)s
RETURNING *

-- query: heartbeat
UPDATE runs SET heartbeat_at = now()
WHERE id = %(id)s AND status = 'running' AND epoch = %(epoch)s
RETURNING id

-- query: finish
UPDATE runs SET status = %(status)s, finished_at = %(now)s, exit_code = %(exit_code)s,
                output = %(output)s, error = %(error)s
WHERE id = %(id)s AND status = 'running' AND epoch = %(epoch)s
RETURNING *

-- query: adopt
-- An `unknown` run whose command did finish, as the target's markers tell: its real result.
UPDATE runs SET status = %(status)s, exit_code = %(exit_code)s, output = %(output)s,
                error = %(error)s
WHERE id = %(id)s AND status = 'unknown'
RETURNING *

-- query: requeue
-- Back to the queue for the next attempt; the last attempt's result stays visible meanwhile.
UPDATE runs SET status = 'pending', attempt = attempt + 1, not_before = %(not_before)s,
                dispatched = false, owner = NULL, exit_code = %(exit_code)s,
                output = %(output)s, error = %(error)s
WHERE id = %(id)s AND status = 'running' AND epoch = %(epoch)s
RETURNING *

-- query: block
-- A pending run that ends without running: `blocked` (a dependency failed) or `halted`.
UPDATE runs SET status = %(status)s, finished_at = %(now)s, error = %(error)s
WHERE id = %(id)s AND status = 'pending'
RETURNING *

-- query: request_retry
UPDATE runs SET retry_requested = true
WHERE id = %(id)s AND status IN ('failed', 'blocked', 'unknown', 'halted')
RETURNING *

-- query: sweep_undispatched
-- A dead worker's claim that never sent its command: nothing ran, so the run waits again.
-- The epoch stays: the dead worker's late writes find the run not running (or, once it is
-- claimed again, at a newer epoch) and are refused. An UPDATE re-checks its WHERE on a row a
-- live worker renewed meanwhile, so a heartbeat racing the sweep keeps its run.
UPDATE runs SET status = 'pending', owner = NULL, dispatched = false, heartbeat_at = NULL
WHERE status = 'running' AND NOT dispatched
  AND COALESCE(heartbeat_at, started_at) < now() - make_interval(secs => %(lease)s)
  AND (%(keep)s::text IS NULL OR owner IS DISTINCT FROM %(keep)s::text)
RETURNING *

-- query: sweep_dispatched
-- The command may have run: unknown; the planner re-runs it only if the task is idempotent.
UPDATE runs SET status = 'unknown', finished_at = %(now)s, error = %(error)s
WHERE status = 'running' AND dispatched
  AND COALESCE(heartbeat_at, started_at) < now() - make_interval(secs => %(lease)s)
  AND (%(keep)s::text IS NULL OR owner IS DISTINCT FROM %(keep)s::text)
RETURNING *

-- query: counts
SELECT status, COUNT(*) FROM runs GROUP BY status

-- query: record_commit
INSERT INTO passes (commit_sha, recorded_at) VALUES (%(commit)s, %(now)s)

-- query: last_commit
SELECT commit_sha FROM passes ORDER BY id DESC LIMIT 1

-- query: forget_freezes
DELETE FROM reconciled_freezes

-- query: record_freeze
INSERT INTO reconciled_freezes (scope, reason, until, allow_priority_1)
VALUES (%(scope)s, %(reason)s, %(until)s, %(allow_priority_1)s)

-- query: reconciled_freezes
SELECT scope, reason, until, allow_priority_1 FROM reconciled_freezes ORDER BY scope

-- query: failed_since
SELECT COUNT(*) FROM runs
WHERE finished_at >= %(since)s AND status IN ('failed', 'blocked', 'unknown', 'killed', 'halted')

-- query: lock_audit
-- The audit append lock (transaction level): the head read and the insert after it are one
-- step for every writer of the database.
SELECT pg_advisory_xact_lock(%(key)s)

-- query: audit_head
-- The audit log, alerts and retention (migration 4).
SELECT seq, at, actor, action, detail, prev, hash FROM audit_log ORDER BY seq DESC LIMIT 1

-- query: audit_insert_many
-- Linked entries (a seal, an append), one statement for all of them.
INSERT INTO audit_log (seq, at, actor, action, detail, prev, hash)
SELECT * FROM unnest(%(seq)s::bigint[], %(at)b::text[], %(actor)b::text[], %(action)b::text[],
                     %(detail)b::text[], %(prev)b::text[], %(hash)b::text[])

-- query: try_lock_audit
-- The sealer that must not wait (after a batch): the audit lock if free, else false.
SELECT pg_try_advisory_xact_lock(%(key)s)

-- query: audit_enqueue
-- A batch's audit entries, in order (unnest yields the arrays in order, and each row takes
-- its id from the sequence as it is inserted), without the audit lock.
INSERT INTO audit_queue (at, actor, action, detail)
SELECT * FROM unnest(%(at)b::text[], %(actor)b::text[], %(action)b::text[], %(detail)b::text[])

-- query: audit_queued
SELECT id, at, actor, action, detail FROM audit_queue ORDER BY id LIMIT %(limit)s

-- query: audit_dequeue
-- By id, never by range: an entry with a lower id may still be committing elsewhere.
DELETE FROM audit_queue WHERE id = ANY (%(ids)s::bigint[])

-- query: audit_unsealed
SELECT count(*) FROM audit_queue

-- query: audit_has_entry
-- Whether an entry with exactly these texts was written (queued or sealed): how a batch whose
-- commit went unanswered tells whether its leading entries landed.
SELECT EXISTS (SELECT 1 FROM audit_queue
               WHERE at = %(at)s AND actor = %(actor)s AND action = %(action)s
                 AND detail = %(detail)s)
    OR EXISTS (SELECT 1 FROM audit_log
               WHERE at = %(at)s AND actor = %(actor)s AND action = %(action)s
                 AND detail = %(detail)s)

-- query: audit_page
SELECT seq, at, actor, action, detail, prev, hash FROM audit_log
WHERE seq > %(after)s AND (%(since)s::text IS NULL OR at >= %(since)s::text)
ORDER BY seq
LIMIT %(limit)s

-- query: audit_anchor
SELECT seq, hash FROM audit_anchor WHERE id = 1

-- query: audit_entry_hash
SELECT hash FROM audit_log WHERE seq = %(seq)s

-- query: audit_set_anchor
INSERT INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, %(seq)s, %(hash)s, %(now)s)
ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                               pruned_at = excluded.pruned_at

-- query: audit_delete_through
DELETE FROM audit_log WHERE seq <= %(seq)s

-- query: alert_newer
-- A newer run of the same (task, machine) alerted already: this event is a late duplicate.
SELECT 1 FROM alert_memory
WHERE task = %(task)s AND machine = %(machine)s AND run_id > %(run_id)s
LIMIT 1

-- query: alert_remember
INSERT INTO alert_memory (task, version, machine, outcome, run_id, alert_id, created_at)
VALUES (%(task)s, %(version)s, %(machine)s, %(outcome)s, %(run_id)s, %(alert_id)s, %(now)s)
ON CONFLICT (task, version, machine, outcome) DO NOTHING
RETURNING alert_id

-- query: alert_forget
DELETE FROM alert_memory
WHERE task = %(task)s AND machine = %(machine)s AND outcome = ANY (%(outcomes)s::text[])

-- query: unreachable_machines
SELECT DISTINCT machine FROM alert_memory WHERE outcome = 'unreachable'

-- query: outbox_insert
INSERT INTO alert_outbox (id, alert_id, team, target, event, title, body, created_at,
                          claimed_by, claimed_at)
VALUES (%(id)s, %(alert_id)s, %(team)s, %(target)s, %(event)s, %(title)s, %(body)s, %(now)s,
        %(owner)s, now())
ON CONFLICT (id) DO NOTHING

-- query: outbox_claim
-- SKIP LOCKED: two processes claiming at once take different rows instead of waiting.
WITH free AS (
    SELECT id FROM alert_outbox
    WHERE status = 'pending'
      AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => %(lease)s))
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE alert_outbox AS o SET claimed_by = %(owner)s, claimed_at = now()
FROM free WHERE o.id = free.id
RETURNING o.id, o.alert_id, o.team, o.target, o.event, o.title, o.body, o.attempts,
          o.last_error, o.created_at

-- query: outbox_done
UPDATE alert_outbox
SET status = 'delivered', attempts = attempts + 1, last_attempt_at = %(now)s,
    delivered_at = %(now)s, last_error = NULL, claimed_by = NULL, claimed_at = NULL
WHERE id = %(id)s AND status = 'pending'

-- query: outbox_failed
UPDATE alert_outbox
SET attempts = attempts + 1, last_error = %(error)s, last_attempt_at = %(now)s,
    status = CASE WHEN %(give_up)s THEN 'abandoned' ELSE status END,
    claimed_by = NULL, claimed_at = NULL
WHERE id = %(id)s AND status = 'pending'

-- query: outbox_release
UPDATE alert_outbox SET claimed_by = NULL, claimed_at = NULL
WHERE claimed_by = %(owner)s AND status = 'pending'

-- query: outbox_pending
SELECT COUNT(*) FROM alert_outbox WHERE status = 'pending'

-- query: outbox_prune
DELETE FROM alert_outbox
WHERE status IN ('delivered', 'abandoned') AND created_at < %(before)s

-- query: previous_outcome
SELECT status FROM runs
WHERE task = %(task)s AND machine = %(machine)s AND id < %(before_id)s
  AND status NOT IN ('pending', 'running', 'cancelled')
ORDER BY id DESC
LIMIT 1

-- query: prunable_runs
-- Final runs that ended before the cut-off and are not the newest planned run of their
-- (task, machine, version): that one is what the planner remembers as "ran", and is never
-- pruned. A manual run (migration 13) is nobody's memory: it goes when it is old enough.
SELECT * FROM runs AS r
WHERE r.id > %(after)s AND r.status NOT IN ('pending', 'running')
  AND r.finished_at < %(before)s
  AND (r."trigger" <> 'plan'
       OR r.id < (SELECT MAX(l.id) FROM runs AS l
                  WHERE l.task = r.task AND l.machine = r.machine AND l.version = r.version
                    AND l."trigger" = 'plan'))
ORDER BY r.id
LIMIT %(limit)s

-- query: delete_runs
DELETE FROM runs AS r
WHERE r.id = ANY (%(ids)s::bigint[])
  AND r.status NOT IN ('pending', 'running') AND r.finished_at < %(before)s
  AND (r."trigger" <> 'plan'
       OR r.id < (SELECT MAX(l.id) FROM runs AS l
                  WHERE l.task = r.task AND l.machine = r.machine AND l.version = r.version
                    AND l."trigger" = 'plan'))

-- query: beat_drain
-- A drain's sign of life (see migration 5).
INSERT INTO drains (owner, beat_at) VALUES (%(owner)s, now())
ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at

-- query: forget_drains
DELETE FROM drains WHERE beat_at < now() - interval '1 day'

-- query: pending_planners
-- Every pending run that %(owner)s did not plan, with its planner and whether that planner's
-- drain beat within the lease (in seconds, by the server's clock).
SELECT r.id, r.planner,
       COALESCE(d.beat_at >= now() - make_interval(secs => %(lease)s), false)
FROM runs r LEFT JOIN drains d ON d.owner = r.planner
WHERE r.status = 'pending' AND (r.planner IS NULL OR r.planner <> %(owner)s)

-- query: take_over
-- Adopt a pending run of a dead planner: compare-and-set on the planner judged dead.
UPDATE runs SET planner = %(owner)s
WHERE id = %(id)s AND status = 'pending' AND planner IS NOT DISTINCT FROM %(old)s
RETURNING id

-- query: approval_insert
-- `approve` writes only what no verified approval of the same key covers: a row already
-- there does not verify (written by hand, altered), and the new signature replaces it.
INSERT INTO approvals (task, machine, version, fingerprint, role, "commit", signature, approved_at)
VALUES (%(task)s, %(machine)s, %(version)s, %(fingerprint)s, %(role)s, %(commit)s,
        %(signature)s, %(now)s)
ON CONFLICT (task, machine, version, fingerprint) DO UPDATE
SET role = excluded.role, "commit" = excluded."commit", signature = excluded.signature,
    approved_at = excluded.approved_at

-- query: approvals_of_task
SELECT task, machine, version, fingerprint, role, "commit", signature, approved_at
FROM approvals WHERE task = %(task)s ORDER BY id

-- query: reconciled_before
-- The trusted inventory a commit was judged by: the commit passes reconciled last before the
-- first pass over it (approvals: a key added by the change itself may not approve it).
SELECT commit_sha FROM passes
WHERE id < (SELECT MIN(id) FROM passes WHERE commit_sha = %(commit)s) AND commit_sha <> %(commit)s
ORDER BY id DESC LIMIT 1

-- query: output_insert
INSERT INTO run_output (run_id, attempt, seq, start, body)
VALUES (%(run_id)s, %(attempt)s, %(seq)s, %(start)s, %(body)s)
ON CONFLICT (run_id, attempt, seq) DO NOTHING

-- query: output_trim
DELETE FROM run_output WHERE run_id = %(run_id)s AND attempt = %(attempt)s AND seq <= %(seq)s

-- query: output_since
SELECT seq, start, body FROM run_output
WHERE run_id = %(run_id)s AND attempt = %(attempt)s AND seq > %(after)s
ORDER BY seq

-- query: output_drop
DELETE FROM run_output WHERE run_id = ANY(%(ids)s)

-- query: runs_page
-- The web console's runs, newest first, one page after the keyset before (an id; NULL: the
-- newest). Each filter is NULL or narrows: statuses (a text array), team (a range on task, as
-- list_runs), task and machine (equal), commit (a prefix of the sha).
SELECT id, task, machine, version, slot, "commit", priority, status, attempt, reason,
       created_at, started_at, finished_at, not_before, exit_code, ''::bytea AS output, error,
       dispatched, retry_requested, epoch, owner
FROM runs
WHERE (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
  AND (%(statuses)s::text[] IS NULL OR status = ANY (%(statuses)s::text[]))
  AND (%(team_lo)s::text IS NULL OR (task >= %(team_lo)s::text AND task < %(team_hi)s::text))
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(machine)s::text IS NULL OR machine = %(machine)s::text)
  AND (%(commit)s::text IS NULL OR starts_with("commit", %(commit)s::text))
ORDER BY id DESC
LIMIT %(limit)s

-- query: last_pass
SELECT commit_sha, recorded_at FROM passes ORDER BY id DESC LIMIT 1

-- query: kill_request
-- One request per run: a second `queue kill` of the same claim replaces the first (its grace
-- and reason); the holder acts on the first one it saw.
INSERT INTO kill_requests (run_id, epoch, grace, actor, reason, requested_at)
VALUES (%(run_id)s, %(epoch)s, %(grace)s, %(actor)s, %(reason)s, %(now)s)
ON CONFLICT (run_id) DO UPDATE SET epoch = excluded.epoch, grace = excluded.grace,
    actor = excluded.actor, reason = excluded.reason, requested_at = excluded.requested_at

-- query: kill_requests_of
SELECT run_id, epoch, grace, actor, reason FROM kill_requests WHERE run_id = ANY(%(ids)s)

-- query: output_of_deleted
-- delete_runs: the output chunks of pruned runs (left by a holder that died before it ended).
DELETE FROM run_output AS o
WHERE o.run_id = ANY (%(ids)s::bigint[])
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = o.run_id)

-- query: kills_of_deleted
DELETE FROM kill_requests AS k
WHERE k.run_id = ANY (%(ids)s::bigint[])
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = k.run_id)
