"""Least privilege on a shared PostgreSQL store: the roles script shipped in the package
(`python -m reconciler.adapters.store.roles`), applied by the admin who owns the schema, gives a
worker role everything `reconcile --once` needs, and an audit log it can only append to.

The group roles are cluster-wide (the script creates them if missing); each test makes its own
login roles and drops them afterwards. The database is a fresh one (tests.support.postgres).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest

from reconciler.adapters.audit.chain import AuditRecord, verify
from reconciler.adapters.store import postgres
from reconciler.adapters.store.base import ClaimRequest, RunEnd
from reconciler.adapters.store.factory import open_store
from reconciler.core.state import RunStatus
from tests.support.pg_roles import least_privilege
from tests.support.project import Project
from tests.support.store_contract import add, enqueue

pytestmark = pytest.mark.integration


@pytest.fixture
def roles(postgres_url):
    """The schema created by the admin, the roles script applied, and two login roles:
    (worker URL, reader URL)."""
    with least_privilege(postgres_url) as urls:
        yield urls


def _denied(url: str, statement: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_a_worker_role_runs_passes_but_cannot_rewrite_the_audit_log(tmp_path, roles):
    worker_url, reader_url = roles
    p = Project(tmp_path)
    p.task("hello", f"command: {p.record('hello')}\n")
    data = p.run("--once", "--state", worker_url, "--format", "json", code=0).json()
    assert data["counts"] == {"succeeded": 1} and p.ledger_lines() == ["hello"]
    p.run("audit", "verify", "--state", reader_url, code=0)
    with psycopg.connect(worker_url) as conn:
        [(entries,)] = conn.execute("SELECT count(*) FROM audit_log").fetchall()
    assert entries > 0  # the worker appended to it
    for statement in (
        "UPDATE audit_log SET detail = '{}'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "INSERT INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, 1, 'x', now())",
        "DELETE FROM runs",
    ):
        assert _denied(worker_url, statement), statement
    p.run("audit", "verify", "--state", reader_url, code=0)  # still intact


def test_a_reader_role_reads_and_writes_nothing(tmp_path, roles):
    worker_url, reader_url = roles
    p = Project(tmp_path)
    p.task("hello", "command: echo hello\n")
    p.run("--once", "--state", worker_url, "-q", code=0)
    runs = p.run("queue", "list", "--state", reader_url, "--format", "json", code=0).json()
    assert [r["status"] for r in runs] == ["succeeded"]
    for statement in (
        "UPDATE runs SET status = 'failed'",
        "INSERT INTO audit_log (seq, at, actor, action, detail, prev, hash) "
        "VALUES (999, 'x', 'x', 'x', '{}', 'x', 'x')",
    ):
        assert _denied(reader_url, statement), statement


def test_a_worker_role_queues_and_seals_batch_audit_entries_and_a_reader_counts_them(
    tmp_path, roles, monkeypatch
):
    """Group commit under least privilege: a worker's batches queue their audit entries and
    its sealer moves them into the chain (INSERT, SELECT, DELETE on the queue); it may not
    rewrite a queued entry; a reader sees how many wait and verifies the sealed chain."""
    monkeypatch.setattr(postgres, "SEAL_EVERY_SECONDS", 3600.0)  # no seal after a batch
    worker_url, reader_url = roles
    now = datetime.now(UTC)
    at = "2024-05-01T12:00:00.000000Z"
    store, reader = open_store(worker_url), open_store(reader_url, create=False)
    try:
        runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(3)))

        def audit(run):
            return [AuditRecord(at, "w", "run.claimed", {"run": run.id})]

        claimed = store.claim_batch([ClaimRequest(r.id, 2) for r in runs], "w", now, audit)
        assert len(claimed.runs) == 2 and claimed.refused == [runs[2].id]
        dispatched = store.dispatch_batch(claimed.runs, now, audit).runs
        assert reader.unsealed_audit() == 4  # queued, not yet chained (no seal was due)
        assert _denied(worker_url, "UPDATE audit_queue SET detail = '{}'")
        assert _denied(worker_url, "TRUNCATE audit_queue")
        assert _denied(reader_url, "DELETE FROM audit_queue")
        report = (
            Project(tmp_path)
            .run("audit", "verify", "--state", reader_url, "--format", "json", code=0)
            .json()
        )
        assert (report["ok"], report["entries"], report["unsealed"]) == (True, 0, 4)
        ends = [RunEnd(r.id, r.epoch, RunStatus.SUCCEEDED) for r in dispatched]
        store.end_batch(ends, now, audit)
        assert store.seal_audit(wait=True) == 6
        assert reader.unsealed_audit() == 0
        entries = list(reader.iter_audit())
        assert len(entries) == 6 and verify(entries, reader.audit_anchor()).ok
    finally:
        store.close()
        reader.close()


def test_a_worker_role_cannot_drop_or_rewrite_a_queued_audit_entry_unseen(
    tmp_path, roles, monkeypatch
):
    """A queued entry leaves the queue only into the chain (migration 6's policy): a worker
    host's DELETE of another's unsealed entry deletes nothing, what the worker's sealer
    chains leaves the queue (a hand-written row too, as unreadable), and a copy slipped into
    audit_log out of the chain's order to free an entry is found by `audit verify`."""
    monkeypatch.setattr(postgres, "SEAL_EVERY_SECONDS", 3600.0)
    worker_url, reader_url = roles
    now = datetime.now(UTC)
    store = open_store(worker_url)
    try:
        [run] = add(store, now, enqueue())
        record = AuditRecord("2024-05-01T12:00:00.000000Z", "w", "run.claimed", {"run": run.id})
        store.claim_batch([ClaimRequest(run.id)], "w", now, lambda _: [record])
    finally:
        store.close()  # seals what it queued: the claim's entry is entry 1
    store = open_store(worker_url)
    try:
        store.claim_batch([], "w", now, leading=[AuditRecord(record.at, "w", "victim", {})])
        with psycopg.connect(worker_url, autocommit=True) as conn:  # not sealed: it stays
            assert conn.execute("DELETE FROM audit_queue").rowcount == 0
            assert conn.execute("SELECT count(*) FROM audit_queue").fetchone()[0] == 1
            # A row written by hand, which the sealer chains as unreadable, can be sealed.
            conn.execute(
                "INSERT INTO audit_queue (at, actor, action, detail) VALUES (%s, %s, %s, %s)",
                (record.at, "hand", "odd", "".join(map(chr, range(1, 128))) + " é \u2028"),
            )
        assert store.seal_audit(wait=True) == 2 and store.unsealed_audit() == 0
        store.claim_batch([], "w", now, leading=[AuditRecord(record.at, "w", "next", {})])
        with psycopg.connect(worker_url, autocommit=True) as conn:  # a copy out of order
            conn.execute(
                "INSERT INTO audit_log (seq, at, actor, action, detail, prev, hash) "
                "SELECT 1000, at, actor, action, detail, 'x', 'y' FROM audit_queue"
            )
            conn.execute("DELETE FROM audit_queue")  # now it may leave: it is in the log
    finally:
        store.close()
    p = Project(tmp_path)
    result = p.run("audit", "verify", "--state", reader_url)
    assert result.code == 1 and "tampered: audit entry 1000" in result.out


def test_a_reader_role_exports_the_sealed_entries_without_recording_the_export(tmp_path, roles):
    worker_url, reader_url = roles
    p = Project(tmp_path)
    p.task("hello", "command: echo hello\n")
    p.run("--once", "--state", worker_url, "-q", code=0)
    out = tmp_path / "audit.jsonl"
    result = p.run("audit", "export", "--state", reader_url, "-o", str(out), code=0)
    assert "this export is not recorded in the audit log" in result.err
    assert "Traceback" not in result.err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[-1]["type"] == "checkpoint" and lines[-1]["count"] == len(lines) - 1
    assert "audit.export" not in [line.get("action") for line in lines]
    p.run("audit", "verify", "--state", reader_url, "--checkpoint", str(out), code=0)
