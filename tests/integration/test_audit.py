"""The audit log end to end: what a pass records, `audit verify` and `audit export` against
edits, deletions, reordering, truncation and rollback; one linear chain under concurrent
writers on PostgreSQL; and an audit write that fails stops dispatching.

Passes run in this process (engine + sinks on the local transport); the audit commands run
through their own `add_parser`/`run`, parsed as `reconcile` parses them. Tampering is done
with raw SQL on the database, as an attacker with write access to it would.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC
from pathlib import Path

import pytest

from reconciler.adapters.audit import checkpoint as cp
from reconciler.adapters.audit.chain import verify
from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport.local import LocalTransport
from reconciler.adapters.vault import age
from reconciler.core.errors import StoreError
from reconciler.core.plan import make_plan
from reconciler.core.redact import Redactor
from reconciler.core.state import RunStatus
from reconciler.pipeline.engine import Engine
from reconciler.pipeline.metrics import Metrics
from reconciler.pipeline.sinks import build_sinks
from tests.support.in_process import InProcessProject
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path) -> InProcessProject:
    p = InProcessProject(tmp_path)
    p.task("fail", "echo broken; exit 2")
    p.task("ok", "echo fine")
    return p


def actions(project: InProcessProject) -> list[str]:
    return [row[0] for row in project.sql("SELECT action FROM audit_log ORDER BY seq")]


def test_a_pass_records_start_plan_claim_dispatch_finish_and_end(project):
    project.run_pass()
    found = actions(project)
    assert found[:2] == ["pass.start", "plan.recorded"] and found[-1] == "pass.end"
    assert found.count("run.claimed") == found.count("run.dispatched") == 2
    assert found.count("run.finished") == 2
    for claimed in (i for i, a in enumerate(found) if a == "run.claimed"):
        assert found[claimed + 1] == "run.dispatched"
    plan = json.loads(
        project.sql("SELECT detail FROM audit_log WHERE action = 'plan.recorded'")[0][0]
    )
    assert (plan["enqueued"], plan["reasons"], plan["commit"]) == (2, {"new": 2}, "c0ffee")
    code, out = project.audit("verify")
    assert code == 0 and "intact: 9 entries" in out


def test_an_edited_entry_fails_verify_naming_it(project):
    project.run_pass()
    project.sql(
        "UPDATE audit_log SET detail = replace(detail, 'failed', 'succeeded') "
        "WHERE action = 'run.finished' AND detail LIKE '%failed%'"
    )
    [(seq,)] = project.sql("SELECT seq FROM audit_log WHERE detail LIKE '%\"exit_code\":2%'")
    code, out = project.audit("verify")
    assert code == 1 and f"audit entry {seq}:" in out and "edited" in out
    code, out = project.audit("verify", "--format", "json")
    report = json.loads(out)
    assert (code, report["ok"], report["bad_entry"]) == (1, False, seq)


def test_a_deleted_entry_fails_verify_naming_the_gap(project):
    project.run_pass()
    project.sql("DELETE FROM audit_log WHERE seq = 4")
    code, out = project.audit("verify")
    assert code == 1 and "audit entry 5: entry 4 is missing" in out


def test_reordered_entries_fail_verify_at_the_first_moved_one(project):
    project.run_pass()
    swap = (
        "UPDATE audit_log SET at = (SELECT at FROM audit_log AS o WHERE o.seq = 7 - "
        "audit_log.seq), actor = (SELECT actor FROM audit_log AS o WHERE o.seq = 7 - "
        "audit_log.seq), action = (SELECT action FROM audit_log AS o WHERE o.seq = 7 - "
        "audit_log.seq), detail = (SELECT detail FROM audit_log AS o WHERE o.seq = 7 - "
        "audit_log.seq), prev = (SELECT prev FROM audit_log AS o WHERE o.seq = 7 - "
        "audit_log.seq), hash = (SELECT hash FROM audit_log AS o WHERE o.seq = 7 - "
        "audit_log.seq) WHERE seq IN (3, 4)"
    )
    project.sql(swap)  # entries 3 and 4 trade places
    code, out = project.audit("verify")
    assert code == 1 and "audit entry 3:" in out


def test_truncation_and_rollback_are_caught_against_a_checkpoint(project, tmp_path):
    project.run_pass()
    db = Path(project.url[len("sqlite:///") :])
    shutil.copy(db, tmp_path / "old.db")  # a backup an attacker could restore later
    project.task("more", "echo more")
    project.run_pass()
    export = tmp_path / "export.jsonl"
    code, out = project.audit("export", "-o", str(export))
    assert code == 0 and "signed with the key key file" in out
    assert project.key.exists()
    assert project.audit("verify", "--checkpoint", str(export))[0] == 0

    head = project.sql("SELECT MAX(seq) FROM audit_log")[0][0]
    project.sql("DELETE FROM audit_log WHERE seq > ?", (head - 3,))  # truncated tail
    assert project.audit("verify")[0] == 0  # the chain alone cannot tell
    code, out = project.audit("verify", "--checkpoint", str(export))
    assert code == 1 and "removed from its end" in out

    project.run_pass()  # new entries written over the cut: the chain is valid again
    code, out = project.audit("verify", "--checkpoint", str(export))
    assert code == 1 and "differs from the checkpoint" in out

    shutil.copy(tmp_path / "old.db", db)  # a rollback to the old copy
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    assert project.audit("verify")[0] == 0
    assert project.audit("verify", "--checkpoint", str(export))[0] == 1


def test_a_checkpoint_from_an_unknown_key_or_altered_is_refused(project, tmp_path):
    project.run_pass()
    export = tmp_path / "export.jsonl"
    project.audit("export", "-o", str(export))
    lines = export.read_text().splitlines()
    checkpoint = json.loads(lines[-1])
    forged = cp.sign(
        cp.Ed25519PrivateKey.generate(), checkpoint["count"], checkpoint["head"], checkpoint["at"]
    )
    (tmp_path / "forged.json").write_text(json.dumps(forged.to_json()))
    code, out = project.audit("verify", "--checkpoint", str(tmp_path / "forged.json"))
    assert code == 1 and "not a key this host trusts" in out
    assert (
        project.audit(
            "verify",
            "--checkpoint",
            str(tmp_path / "forged.json"),
            "--public-key",
            forged.public_key,
        )[0]
        == 0
    )
    altered = {**checkpoint, "count": checkpoint["count"] - 1}
    (tmp_path / "altered.json").write_text(json.dumps(altered))
    code, out = project.audit("verify", "--checkpoint", str(tmp_path / "altered.json"))
    assert code == 1 and "signature is invalid" in out


def test_an_exported_entry_rewritten_in_the_log_is_caught(project, tmp_path):
    project.run_pass()
    export = tmp_path / "export.jsonl.gz"
    project.audit("export", "-o", str(export))
    # rewrite the whole chain from entry 3 with valid hashes: only the export can tell
    from reconciler.adapters.audit.chain import AuditRecord, link

    store = open_store(project.url)
    try:
        entries = list(store.iter_audit())
    finally:
        store.close()
    forged = link(
        2, entries[1].hash, [AuditRecord(e.at, "mallory", e.action, e.detail) for e in entries[2:]]
    )
    for entry in forged:
        project.sql(
            "UPDATE audit_log SET actor = ?, prev = ?, hash = ? WHERE seq = ?",
            (entry.actor, entry.prev, entry.hash, entry.seq),
        )
    assert project.audit("verify")[0] == 0
    code, out = project.audit("verify", "--checkpoint", str(export))
    assert code == 1 and "rewritten" in out


def test_export_writes_json_lines_since_a_time_and_ends_with_a_checkpoint(project, tmp_path):
    identity = age.generate_x25519()
    (tmp_path / "key.txt").write_text(identity.to_bech32() + "\n")
    project.run_pass()
    first = project.sql("SELECT at FROM audit_log ORDER BY seq DESC LIMIT 1")[0][0]
    project.run_pass()
    export = tmp_path / "recent.jsonl"
    code, out = project.audit(
        "export", "--since", first, "-o", str(export), "--identity", str(tmp_path / "key.txt")
    )
    assert code == 0 and "derived from the configured identity" in out
    assert not project.key.exists()  # no key file when an identity is configured
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert all(line["at"] >= first for line in lines[:-1])
    assert lines[0]["action"] == "pass.end" and lines[-2]["action"] == "audit.export"
    assert lines[-1]["type"] == "checkpoint"
    assert lines[-1]["count"] == lines[-2]["seq"]
    assert lines[-1]["public_key"] == cp.public_text(cp.derive_from_identity(identity))
    assert project.audit("verify", "--checkpoint", str(export))[0] == 1  # not trusted here...
    assert (
        project.audit(
            "verify", "--checkpoint", str(export), "--identity", str(tmp_path / "key.txt")
        )[0]
        == 0
    )  # ...but with the identity


def test_export_refuses_to_sign_a_tampered_log(project, tmp_path, capsys):
    project.run_pass()
    project.sql("DELETE FROM audit_log WHERE seq = 2")
    code, _ = project.audit("export", "-o", str(tmp_path / "x.jsonl"))
    assert code == 1 and not (tmp_path / "x.jsonl").exists()


# --- audit failures stop dispatching ----------------------------------------------------------------


REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.action = '{action}' "
        "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log FOR EACH ROW "
        "WHEN (NEW.action = '{action}') EXECUTE FUNCTION refuse()",
    ],
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def any_backend(request, tmp_path):
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    p = InProcessProject(tmp_path, url)
    p.backend = request.param
    open_store(p.url).close()  # create the schema
    return p


def refuse(project: InProcessProject, action: str) -> None:
    for statement in REFUSE[project.backend]:
        project.sql(statement.replace("{action}", action))


def test_a_dispatch_that_cannot_be_audited_is_not_dispatched(any_backend, tmp_path):
    p = any_backend
    marker = tmp_path / "ran"
    p.task("touch", f"touch {marker}")
    refuse(p, "run.dispatched")
    with pytest.raises(StoreError) as failed:
        p.run_pass()
    assert failed.value.exit_code == 3
    assert not marker.exists()
    [(status, dispatched)] = p.sql("SELECT status, dispatched FROM runs")
    assert status == "running" and not dispatched  # claimed, never sent: recovery re-queues it
    assert "run.dispatched" not in actions(p)


def test_a_lost_audit_entry_stops_later_dispatches_and_fails_the_pass(any_backend, tmp_path):
    p = any_backend
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    p.task("first", f"touch {tmp_path / 'first'}", "priority: 1\n")
    p.task("second", f"touch {tmp_path / 'second'}", "priority: 2\n")
    refuse(p, "run.finished")
    with pytest.raises(StoreError):
        p.run_pass()
    assert (tmp_path / "first").exists() and not (tmp_path / "second").exists()


def test_a_read_only_store_starts_no_pass(tmp_path):
    p = InProcessProject(tmp_path)
    p.task("touch", f"touch {tmp_path / 'ran'}")
    p.run_pass()  # creates the store; nothing due after it
    p.task("again", f"touch {tmp_path / 'again'}")
    store = open_store(p.url, read_only=True)
    try:
        with pytest.raises(StoreError):
            p.run_pass(store)
    finally:
        store.close()
    assert not (tmp_path / "again").exists()


# --- concurrent writers on PostgreSQL ---------------------------------------------------------------


def test_four_workers_on_postgresql_write_one_linear_chain(tmp_path, postgres_url):
    p = InProcessProject(tmp_path, postgres_url)
    for i in range(40):
        p.task(f"t{i:02d}", "echo $RECONCILE_RUN_ID")
    desired = p.desired()
    planner = open_store(p.url)
    from datetime import datetime

    now = datetime.now(UTC)
    runs = planner.record_plan(make_plan(desired, planner.snapshot(), now), "c0ffee", now)
    assert len(runs) == 40
    engines, threads, stores = [], [], []
    for n in range(4):
        store = open_store(p.url)
        stores.append(store)
        sinks = build_sinks(
            store,
            None,
            desired,
            Redactor(),
            None,
            commit="c0ffee",
            metrics=Metrics(),
            owner=f"worker{n}",
            actor=f"worker{n}",
        )
        engine = Engine(store, {"local": LocalTransport(tmp_path / f"markers{n}")}, on_event=sinks)
        engine.owner = f"worker{n}"
        engines.append(engine)
        threads.append(threading.Thread(target=engine.work, args=(desired,)))
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: planner.counts()["succeeded"] == 40, timeout=60, message="40 runs to succeed"
        )
    finally:
        for engine in engines:
            engine.stop.set()
        for thread in threads:
            thread.join(timeout=60)
    entries = list(planner.iter_audit())
    try:
        assert verify(entries).ok
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        claimed = [e.detail["run"] for e in entries if e.action == "run.claimed"]
        assert sorted(claimed) == sorted(r.id for r in runs)  # each claimed once, in the chain
        finished = [e for e in entries if e.action == "run.finished"]
        assert len({e.detail["run"] for e in finished}) == 40
        assert {e.actor for e in entries} <= {f"worker{n}" for n in range(4)}
        for entry in entries:  # a dispatch entry always follows its own claim
            if entry.action == "run.dispatched":
                before = entries[entry.seq - 2]
                assert (before.action, before.detail["run"]) == ("run.claimed", entry.detail["run"])
        assert planner.counts()[RunStatus.SUCCEEDED.value] == 40
    finally:
        for store in stores + [planner]:
            store.close()
