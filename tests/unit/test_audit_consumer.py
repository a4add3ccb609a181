"""The audit consumer on a real SQLite store: what a pass's events leave in the audit log, and
what a lost entry refuses afterwards."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.adapters.audit.writer import AuditWriter
from reconciler.adapters.store.base import ClaimRequest
from reconciler.core.errors import StoreError, VaultError
from reconciler.core.model import VaultRef
from reconciler.core.plan import make_plan
from reconciler.core.state import RunStatus
from reconciler.pipeline.consumers.audit import AuditConsumer
from reconciler.pipeline.engine import PassReport
from reconciler.pipeline.events import Event, Kind
from tests.support.event_stream import actions, planned, refuse_audit
from tests.support.in_process import InProcessProject


@pytest.fixture
def project(tmp_path):
    p = InProcessProject(tmp_path)
    p.task("first", "true")
    p.task("second", "true")
    return p


def started_pass(store, runs, lost=None) -> AuditConsumer:
    audit = AuditConsumer(
        AuditWriter(store, actor="test"), on_failure=(lost if lost is not None else []).append
    )
    audit.commit = "c0ffee"
    audit.pass_started()
    for run in runs:
        audit(Event(Kind.ENQUEUED, run, "new"))
    return audit


def report(runs) -> PassReport:
    return PassReport(plan=None, commit="c0ffee", runs={r.id: r for r in runs})


def test_the_plan_comes_before_the_first_run_entry_and_audited_events_write_nothing(project, store):
    _, (first, second) = planned(project, store)
    audit = started_pass(store, [first, second])
    assert actions(store) == ["pass.start"]  # the plan waits for the drain's first entry

    audit(Event(Kind.STARTED, first))
    audit(Event(Kind.HELD, second, "2030-01-01T00:00:00+00:00"))  # a wait: no entry
    audit(Event(Kind.UNREACHABLE, second, "refused"))  # the machine's alert is audited
    done = replace(first, status=RunStatus.SUCCEEDED, exit_code=0)
    audit(Event(Kind.FINISHED, done, audited=True))  # the engine's journal wrote it
    audit(Event(Kind.STARTED, second, audited=True))
    audit.pass_finished(report([done, second]))

    assert actions(store) == [
        "pass.start",
        "plan.recorded",
        "run.claimed",
        "run.dispatched",
        "pass.end",
    ]
    [plan] = [e for e in store.iter_audit() if e.action == "plan.recorded"]
    detail = plan.detail if isinstance(plan.detail, dict) else json.loads(plan.detail)
    assert (detail["enqueued"], detail["reasons"], detail["commit"]) == (2, {"new": 2}, "c0ffee")


def test_the_journal_leads_the_first_claim_with_the_plan_once(project, store):
    _, runs = planned(project, store)
    audit = started_pass(store, runs)
    journal = audit.journal
    journal.check()  # nothing lost yet
    claimed = store.claim_batch(
        [ClaimRequest(run.id, 2) for run in runs],
        "test-owner",
        datetime.now(UTC),
        journal.claimed,
        journal.leading(),
    )
    journal.flushed()
    assert journal.leading() == []
    assert len(claimed.runs) == 2
    audit.pass_finished(report(claimed.runs))
    assert actions(store) == [
        "pass.start",
        "plan.recorded",
        "run.claimed",
        "run.claimed",
        "pass.end",
    ]


def test_the_journal_writes_the_plan_with_the_runs_it_recorded_and_only_then(project, store):
    audit = AuditConsumer(AuditWriter(store, actor="test"))
    audit.commit = "c0ffee"
    audit.pass_started()
    journal = audit.journal
    desired = project.desired()
    now = datetime.now(UTC)
    plan = make_plan(desired, store.snapshot(), now)
    runs = store.record_plan(plan, "c0ffee", now, "test-owner", journal.plan)
    assert actions(store) == ["pass.start", "plan.recorded"]  # in the plan's transaction
    journal.planned()
    for run in runs:  # the engine's events of the plan come after it: counted no more
        audit(Event(Kind.ENQUEUED, run, run.reason))
    assert journal.leading() == []
    audit.pass_finished(report(runs))
    assert actions(store) == ["pass.start", "plan.recorded", "pass.end"]
    [entry] = [e for e in store.iter_audit() if e.action == "plan.recorded"]
    detail = entry.detail if isinstance(entry.detail, dict) else json.loads(entry.detail)
    assert detail == {
        "commit": "c0ffee",
        "enqueued": 2,
        "cancelled": 0,
        "reasons": {"new": 2},
        "cancelled_runs": [],
    }


def test_a_lost_entry_refuses_every_later_start_and_fails_the_pass(project, store):
    _, (first, second) = planned(project, store)
    refuse_audit(project, "run.blocked")
    lost: list[StoreError] = []
    audit = started_pass(store, [first, second], lost)

    audit(Event(Kind.BLOCKED, replace(first, status=RunStatus.BLOCKED), "dependency failed"))
    assert len(lost) == 1  # counted, not raised: the blocked run is already final

    with pytest.raises(StoreError, match="not dispatching run"):
        audit(Event(Kind.STARTED, second))
    with pytest.raises(StoreError):
        audit.journal.check()  # the batched path refuses too
    audit.pass_finished(report([first, second]))
    with pytest.raises(StoreError, match="could not be written during this pass"):
        audit.raise_if_failed()
    assert "run.claimed" not in actions(store)
    assert actions(store)[-1] == "pass.end"  # the end is still recorded, with what was lost


def test_a_run_reads_a_secret_only_after_the_read_is_audited(project, store):
    audit = AuditConsumer(AuditWriter(store, actor="test"))
    reads: list[int] = []

    def vault(team: str, ref: VaultRef) -> str:
        reads.append(actions(store).count("vault.read"))  # entries written before the read
        return "hunter2"

    resolve = audit.audit_resolver(vault)
    assert resolve("ops", VaultRef("DB_PASSWORD")) == "hunter2"
    assert reads == [1]
    [entry] = [e for e in store.iter_audit() if e.action == "vault.read"]
    assert "hunter2" not in str(entry.detail) and "DB_PASSWORD" in str(entry.detail)

    refuse_audit(project, "vault.read")
    with pytest.raises(VaultError, match="could not be audited"):
        resolve("ops", VaultRef("DB_PASSWORD"))
    assert reads == [1]  # not read
    assert audit.error is not None  # and nothing more is dispatched in this pass
