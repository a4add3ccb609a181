"""Group commit on PostgreSQL (issue 13): a batch whose connection breaks is never applied
twice nor lost, and workers started together on a new database all come up.

A broken connection is made real: the store's own session is closed under it, before its
commit (the server rolls the transaction back) or just after it (the commit landed, and the
caller saw only the broken connection, as when the server's answer is lost). Then the store
looks at the runs to tell which. Workers are real `reconcile worker` processes.
"""

from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest

from reconciler.adapters.audit.chain import AuditRecord, verify
from reconciler.adapters.store import postgres
from reconciler.adapters.store.base import ClaimRequest, RunEnd
from reconciler.adapters.store.factory import open_store
from reconciler.core.errors import StoreError
from reconciler.core.state import RunStatus
from tests.support.cli import spawn
from tests.support.planning import record_plan
from tests.support.project import Project
from tests.support.store_contract import add, enqueue
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

AT = "2024-05-01T12:00:00.000000Z"


def audit(action: str):
    return lambda run: [AuditRecord(AT, "tester", action, {"run": run.id})]


def cut(url: str, conn) -> None:
    """End the session of `conn` from the server's side and wait until it is gone, as a
    server restart or a dropped network would end it."""
    pid = conn.info.backend_pid
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(
            lambda: (
                not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchall()
            ),
            message="the cut session to end",
        )


@contextmanager
def breaking(store, url: str, when: str):
    """The store's next transaction loses its connection `before` its commit (the server
    rolls it back; the commit fails) or `after` it (it landed, and the caller sees only the
    broken connection, as when the answer is lost); later transactions are left alone."""
    real = store._transaction
    armed = [True]

    @contextmanager
    def transaction(action: str = "write"):
        if not armed[0]:
            with real(action) as conn:
                yield conn
            return
        armed[0] = False
        with real(action) as conn:
            yield conn
            if when == "before":
                cut(url, conn)
        if when == "after":
            cut(url, store._conn)
            with pytest.raises(psycopg.OperationalError):  # as psycopg would learn it
                store._conn.execute("SELECT 1")
            raise StoreError("cannot write state store: server closed the connection")

    store._transaction = transaction
    try:
        yield
    finally:
        store._transaction = real


@pytest.fixture
def store(postgres_url, monkeypatch):
    monkeypatch.setattr(postgres, "SEAL_EVERY_SECONDS", 3600.0)  # sealed when the test says
    handle = open_store(postgres_url)
    yield handle
    handle.close()


def entries(store) -> list:
    store.seal_audit(wait=True)
    found = list(store.iter_audit())
    assert verify(found, store.audit_anchor()).ok
    return found


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_claim_batch_whose_connection_breaks_claims_each_run_once(store, postgres_url, when):
    now = datetime.now(UTC)
    runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(3)))
    leading = [AuditRecord(AT, "tester", "plan.recorded", {})]
    requests = [ClaimRequest(r.id, 2) for r in runs]
    with breaking(store, postgres_url, when):
        batch = store.claim_batch(requests, "w", now, audit("run.claimed"), leading)
    assert [r.id for r in batch.runs] == [runs[0].id, runs[1].id]
    assert batch.refused == [runs[2].id]
    assert [store.get_run(r.id).epoch for r in runs] == [1, 1, 0]  # claimed once, not twice
    assert [e.action for e in entries(store)] == ["plan.recorded", "run.claimed", "run.claimed"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_claim_batch_that_claimed_nothing_writes_its_leading_entries_once(
    store, postgres_url, when
):
    now = datetime.now(UTC)
    [run] = add(store, now, enqueue())
    store.cancel_run(run.id, now)
    leading = [AuditRecord(AT, "tester", "plan.recorded", {"n": 1})]
    with breaking(store, postgres_url, when):
        batch = store.claim_batch([ClaimRequest(run.id)], "w", now, audit("x"), leading)
    assert batch.runs == [] and batch.refused == [run.id]
    assert [e.action for e in entries(store)] == ["plan.recorded"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_dispatch_and_end_batches_whose_connection_breaks_apply_once(store, postgres_url, when):
    now = datetime.now(UTC)
    runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(2)))
    claimed = store.claim_batch([ClaimRequest(r.id) for r in runs], "w", now).runs
    with breaking(store, postgres_url, when):
        dispatched = store.dispatch_batch(claimed, now, audit("run.dispatched"))
    assert [r.id for r in dispatched.runs] == [r.id for r in runs] and not dispatched.refused
    assert all(store.get_run(r.id).dispatched for r in runs)
    ends = [
        RunEnd(runs[0].id, 1, RunStatus.FAILED, exit_code=1, retry_at=now),
        RunEnd(runs[1].id, 1, RunStatus.SUCCEEDED, exit_code=0, output="ok"),
    ]
    with breaking(store, postgres_url, when):
        ended = store.end_batch(ends, now, audit("run.ended"))
    assert [r.id for r in ended.runs] == [r.id for r in runs] and not ended.refused
    retried, done = store.get_run(runs[0].id), store.get_run(runs[1].id)
    assert (retried.status, retried.attempt) == (RunStatus.PENDING, 2)
    assert (done.status, done.output) == (RunStatus.SUCCEEDED, "ok")
    assert [e.action for e in entries(store)] == ["run.dispatched"] * 2 + ["run.ended"] * 2


def test_unsealed_entries_are_sealed_by_an_append_before_its_own(store):
    """A direct append (a queue command, the end of a pass) chains what batches queued before
    it first: the chain keeps the order in which things happened."""
    now = datetime.now(UTC)
    runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(3)))
    store.claim_batch([ClaimRequest(r.id) for r in runs], "w", now, audit("run.claimed"))
    assert store.unsealed_audit() == 3
    [entry] = store.append_audit([AuditRecord(AT, "tester", "queue.cancel", {})])
    assert entry.seq == 4 and store.unsealed_audit() == 0
    assert [e.action for e in entries(store)] == ["run.claimed"] * 3 + ["queue.cancel"]


def test_a_seal_that_must_not_wait_gives_way_to_one_in_progress(store, postgres_url):
    now = datetime.now(UTC)
    [run] = add(store, now, enqueue())
    store.claim_batch([ClaimRequest(run.id)], "w", now, audit("run.claimed"))
    with psycopg.connect(postgres_url) as other:  # another process sealing: it holds the lock
        other.execute("SELECT pg_advisory_xact_lock(%s)", (postgres.AUDIT_LOCK_KEY,))
        assert store.seal_audit(wait=False) == 0 and store.unsealed_audit() == 1
    assert store.seal_audit(wait=False) == 1 and store.unsealed_audit() == 0


# --- workers on a new database --------------------------------------------------------------------


def test_four_workers_started_together_on_a_new_database_all_come_up_and_drain(
    tmp_path, postgres_url
):
    """No migration race: the four open the empty database at the same moment (held at the
    migration lock by this test, then let go together), one migrates, the others find the
    schema, and all four keep running and drain a queue."""
    p = Project(tmp_path)
    p.write(
        "machines/box.yaml",
        "machines:\n"
        + "".join(f"  - {{name: m{i}, team: ops, transport: local}}\n" for i in range(4)),
    )
    p.write(
        "tasks/ops/many.yaml",
        "tasks:\n"
        + "".join(f"  - name: t{i}\n    selector: {{}}\n    command: 'true'\n" for i in range(10)),
    )
    name = postgres_url.rsplit("/", 1)[1]
    waiting = (
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = %s"
    )
    with psycopg.connect(postgres_url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (postgres.MIGRATE_LOCK_KEY,))
        workers = [
            spawn("worker", "--state", postgres_url, "-q", "--concurrency", "4", cwd=p.root)
            for _ in range(4)
        ]
        try:
            wait_until(
                lambda: (
                    gate.execute(waiting, (name,)).fetchone()[0] == 4
                    or any(w.poll() is not None for w in workers)
                ),
                timeout=60,
                message="the four workers to wait at the migration lock",
            )
            assert [w.poll() for w in workers] == [None] * 4, [w.communicate() for w in workers]
            gate.execute("SELECT pg_advisory_unlock(%s)", (postgres.MIGRATE_LOCK_KEY,))
            ids = record_plan(p.inventory, postgres_url)
            assert len(ids) == 40
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                wait_until(
                    lambda: (
                        conn.execute(
                            "SELECT count(*) FROM runs WHERE status = 'succeeded'"
                        ).fetchone()[0]
                        == 40
                        or any(w.poll() is not None for w in workers)
                    ),
                    timeout=120,
                    message="the workers to drain the queue",
                )
                counts = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status"))
            assert counts == {"succeeded": 40}
            assert [w.poll() for w in workers] == [None] * 4  # all still running
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
        results = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, results
    for _, err in results:
        assert "Traceback" not in err, err


# --- audit verify and export with queued entries ---------------------------------------------------


def test_audit_verify_covers_sealed_entries_and_counts_unsealed_ones_without_writing(
    tmp_path, store, postgres_url
):
    p = Project(tmp_path)
    now = datetime.now(UTC)
    runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(3)))
    store.claim_batch([ClaimRequest(r.id) for r in runs[:1]], "w", now, audit("run.claimed"))
    store.seal_audit(wait=True)
    store.claim_batch([ClaimRequest(r.id) for r in runs[1:]], "w", now, audit("run.claimed"))

    text = p.run("audit", "verify", "--state", postgres_url, code=0).out
    assert "audit log intact: 1 entries" in text
    assert "2 newer entries not yet sealed into the chain (not verified)" in text
    report = p.run("audit", "verify", "--state", postgres_url, "--format", "json", code=0).json()
    assert (report["ok"], report["entries"], report["unsealed"]) == (True, 1, 2)
    assert store.unsealed_audit() == 2  # verify sealed nothing: it writes nothing

    store.seal_audit(wait=True)
    report = p.run("audit", "verify", "--state", postgres_url, "--format", "json", code=0).json()
    assert (report["ok"], report["entries"], report["unsealed"]) == (True, 3, 0)
    assert "not yet sealed" not in p.run("audit", "verify", "--state", postgres_url).out

    # Tampering with a sealed entry is found as before, with the queue's count beside it.
    store.claim_batch([], "w", now, leading=[AuditRecord(AT, "tester", "late", {})])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE audit_log SET detail = '{\"run\": 0}' WHERE seq = 2")
    result = p.run("audit", "verify", "--state", postgres_url, code=1)
    assert "tampered: audit entry 2" in result.out
    assert "note: 1 newer entry not yet sealed" in result.out


def test_audit_export_writes_sealed_entries_after_sealing_what_was_queued(
    tmp_path, store, postgres_url
):
    p = Project(tmp_path)
    now = datetime.now(UTC)
    runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(2)))
    store.claim_batch([ClaimRequest(r.id) for r in runs], "w", now, audit("run.claimed"))
    assert store.unsealed_audit() == 2
    out = tmp_path / "audit.jsonl"
    p.run("audit", "export", "--state", postgres_url, "-o", str(out), code=0)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("action") for line in lines] == [
        "run.claimed",
        "run.claimed",
        "audit.export",
        None,  # the checkpoint
    ]
    assert lines[-1]["type"] == "checkpoint" and lines[-1]["count"] == 3
    assert store.unsealed_audit() == 0
    p.run("audit", "verify", "--state", postgres_url, "--checkpoint", str(out), code=0)


def test_a_store_seals_after_its_batches_when_due_and_never_waits_for_the_lock(
    store, postgres_url, monkeypatch
):
    monkeypatch.setattr(postgres, "SEAL_EVERY_SECONDS", 0.0)  # every batch is due
    now = datetime.now(UTC)
    runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(4)))
    store.claim_batch([ClaimRequest(runs[0].id)], "w", now, audit("run.claimed"))
    assert store.unsealed_audit() == 0 and len(list(store.iter_audit())) == 1
    with psycopg.connect(postgres_url) as other:  # a sealer elsewhere holds the lock
        other.execute("SELECT pg_advisory_xact_lock(%s)", (postgres.AUDIT_LOCK_KEY,))
        done = threading.Event()

        def claim() -> None:
            store.claim_batch([ClaimRequest(runs[1].id)], "w", now, audit("run.claimed"))
            done.set()

        worker = threading.Thread(target=claim, daemon=True)
        worker.start()
        assert done.wait(timeout=30), "a batch waited for the audit lock"
        assert store.unsealed_audit() == 1  # left to a later seal
    store.claim_batch([ClaimRequest(runs[2].id)], "w", now, audit("run.claimed"))
    assert store.unsealed_audit() == 0  # the next batch's seal took both
    assert [e.detail["run"] for e in entries(store)] == [r.id for r in runs[:3]]


@pytest.mark.parametrize(
    "detail",
    [
        '{"run": 1}',  # JSON, not canonical (a space)
        "not json",
        "[1, 2]",  # not an object
        '{"x": NaN}',
        "".join(chr(c) for c in range(1, 128)) + ' é ✓ \u2028 𝄞 "\\',
        '{"x":"\\u0000"}',  # canonical, but a NUL, which a batch would have queued as U+FFFD
        '{"x":"\\ud800"}',  # canonical, but a lone surrogate, which no backend keeps
        '{"x":1e999}',  # a number no JSON value holds (infinity)
    ],
)
def test_a_queued_row_the_sealer_cannot_link_as_it_is_is_chained_as_unreadable(
    store, postgres_url, detail
):
    """Rows written into the queue by hand (not by a batch) are sealed, not left to block the
    queue: the queue's trigger must recognise the {"unreadable": text} the sealer chains, so
    the escaping of both (PostgreSQL's to_json, the canonical JSON) must agree."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_queue (at, actor, action, detail) VALUES (%s, %s, %s, %s)",
            (AT, "hand", "odd", detail),
        )
    assert store.seal_audit(wait=True) == 1 and store.unsealed_audit() == 0
    [entry] = entries(store)
    assert dict(entry.detail) == {"unreadable": detail}


def test_a_queued_detail_with_an_escaped_backslash_before_u0000_is_chained_as_it_is(store):
    """A text that holds a backslash then `u0000` (no NUL) is queued as canonical JSON
    holding `\\u0000`: the sealer links it as it is, not as unreadable."""
    now = datetime.now(UTC)
    [run] = add(store, now, enqueue())
    text = "\\u0000 and \\\\u0000"
    record = AuditRecord(AT, "tester", "odd", {"text": text})
    store.claim_batch([ClaimRequest(run.id)], "w", now, leading=[record])
    [entry] = entries(store)
    assert dict(entry.detail) == {"text": text}
