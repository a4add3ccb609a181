-- Least-privilege roles for a shared PostgreSQL state store (docs/postgresql-roles.md).
--
-- Run it as the role that owns the reconciler's tables (the one whose first `reconcile`
-- created them, the "admin") or as a superuser, in the store's database, after the schema
-- exists, and again after every upgrade that adds a migration:
--
--     python -m reconciler.adapters.store.roles | psql -v ON_ERROR_STOP=1 -d reconciler
--
-- It is idempotent. It creates two group roles (NOLOGIN) and grants them what they need;
-- give them to login roles with `GRANT reconciler_worker TO worker1;`.
--
--   reconciler_worker  `reconcile --once`, the daemon, `reconcile worker`: reads and writes
--                      the queue and the alert tables, and may only INSERT into the audit
--                      log: it can neither UPDATE, DELETE nor TRUNCATE an audit entry, nor
--                      move the audit anchor, nor delete runs (retention is the admin's).
--                      Its batches queue audit entries (`audit_queue`, migration 6) and it
--                      seals them into the log: it inserts, reads and deletes queued entries
--                      (sealing moves them), but never rewrites one (no UPDATE, TRUNCATE).
--   reconciler_reader  `status`, `queue list|show`, `audit verify|export`, the console:
--                      SELECT only.
--
-- The admin (owner) keeps everything else: migrations, `queue prune` (it deletes runs, and
-- with --archive audit entries), `audit` anchor moves. Objects are looked up in the current
-- schema (`search_path`), where the reconciler created them.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reconciler_worker') THEN
        CREATE ROLE reconciler_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reconciler_reader') THEN
        CREATE ROLE reconciler_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- created meanwhile by another session running this file
END
$roles$;

DO $grants$
DECLARE
    schema_name text := current_schema();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO reconciler_worker, reconciler_reader',
                   schema_name);
    -- Every table, including those of later migrations: read for both, write for workers...
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO reconciler_reader',
                   schema_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I '
                   'TO reconciler_worker', schema_name);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO reconciler_worker',
                   schema_name);
    -- ...except what makes the history trustworthy: the audit log is append-only for a
    -- worker, its anchor (set when entries are pruned) is the admin's, and so are the
    -- removal of runs and the schema's own record.
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM reconciler_worker;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_anchor FROM reconciler_worker;
    REVOKE DELETE, TRUNCATE ON runs FROM reconciler_worker;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM reconciler_worker;
    REVOKE UPDATE, DELETE, TRUNCATE ON passes FROM reconciler_worker;
    -- Queued audit entries are moved (DELETE) into the chain by whoever seals, never edited.
    -- Absent before migration 6: the script may be run on an older schema.
    IF to_regclass('audit_queue') IS NOT NULL THEN
        REVOKE UPDATE, TRUNCATE ON audit_queue FROM reconciler_worker;
    END IF;
    -- Approvals (migration 8) are given by people, not rewritten by workers.
    IF to_regclass('approvals') IS NOT NULL THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON approvals FROM reconciler_worker;
    END IF;
    EXECUTE format('REVOKE TRUNCATE ON ALL TABLES IN SCHEMA %I FROM reconciler_worker',
                   schema_name);
END
$grants$;
