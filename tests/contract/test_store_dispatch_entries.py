"""dispatch_batch makes each run's audit entries from the run as the mark leaves it, on every
backend: PostgreSQL makes them before its one statement (the mark changes nothing but
`dispatched`), so what they were made from must be the run the batch returns, a retry's
output of its last attempt included."""

from __future__ import annotations

from datetime import timedelta

from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.base import ClaimRequest
from reconciler.core.state import RunStatus
from tests.support.store_contract import add, enqueue

AT = "2024-05-01T12:00:00.000000Z"


def test_each_entry_is_made_from_the_run_the_batch_returns(store, now):
    first, second = add(store, now, enqueue(task="prod/a"), enqueue(task="prod/b"))
    tried = store.claim(first.id, "w", now)
    store.requeue(tried.id, tried.epoch, now, now, output="attempt 1 said this", error="exit 1")
    seen = []

    def audit(run):
        seen.append(run)
        return [AuditRecord(AT, "tester", "run.dispatched", {"run": run.id, "epoch": run.epoch})]

    claimed = store.claim_batch([ClaimRequest(first.id), ClaimRequest(second.id)], "w", now)
    batch = store.dispatch_batch(claimed.runs, now + timedelta(seconds=1), audit)
    assert seen == batch.runs
    assert [run.id for run in batch.runs] == [first.id, second.id]
    assert all(run.dispatched and run.status is RunStatus.RUNNING for run in batch.runs)
    assert batch.runs[0].output == "attempt 1 said this" and batch.runs[0].attempt == 2
    assert batch.runs == [store.get_run(first.id), store.get_run(second.id)]
