"""claim_batch with `want`: a drain on a shared queue asks for more runs than it has room for,
in its dispatch order, and the batch claims at most `want` of them: a run another worker took
since the drain looked (or whose machine is full) leaves its place to the next request in the
same transaction, and the requests after the last one claimed are `unclaimed`, not refused."""

from __future__ import annotations

from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.base import ClaimRequest
from reconciler.core.state import RunStatus
from tests.support.store_contract import add, enqueue

AT = "2024-05-01T12:00:00.000000Z"


def test_a_run_taken_elsewhere_is_replaced_by_the_next_request(store, open_handle, now):
    a, b, c, d = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(4)))
    open_handle().claim(a.id, "another worker", now)
    batch = store.claim_batch([ClaimRequest(r.id) for r in (a, b, c, d)], "w", now, want=2)
    assert [run.id for run in batch.runs] == [b.id, c.id]
    assert batch.refused == [a.id]
    assert batch.unclaimed == [d.id]
    assert store.get_run(d.id).status is RunStatus.PENDING


def test_a_full_machine_leaves_its_place_to_a_request_for_another(store, now):
    first = add(store, now, *(enqueue(task=f"prod/a{i}", machine="m1") for i in range(2)))
    other = add(store, now, *(enqueue(task=f"prod/b{i}", machine="m2") for i in range(2)))
    store.claim(first[0].id, "elsewhere", now)
    requests = [ClaimRequest(first[1].id, 1), *(ClaimRequest(r.id, 1) for r in other)]
    batch = store.claim_batch(requests, "w", now, want=1)
    assert [run.id for run in batch.runs] == [other[0].id]
    assert batch.refused == [first[1].id]
    assert batch.unclaimed == [other[1].id]


def test_without_enough_claimable_runs_every_request_is_looked_at(store, now):
    a, b = add(store, now, enqueue(task="prod/a"), enqueue(task="prod/b"))
    store.cancel_run(b.id, now)
    batch = store.claim_batch([ClaimRequest(a.id), ClaimRequest(b.id)], "w", now, want=2)
    assert [run.id for run in batch.runs] == [a.id]
    assert batch.refused == [b.id] and batch.unclaimed == []


def test_only_the_claimed_runs_get_audit_entries(store, now):
    runs = add(store, now, *(enqueue(task=f"prod/t{i}") for i in range(3)))

    def audit(run):
        return [AuditRecord(AT, "tester", "run.claimed", {"run": run.id})]

    batch = store.claim_batch([ClaimRequest(r.id) for r in runs], "w", now, audit, want=1)
    assert [run.id for run in batch.runs] == [runs[0].id]
    store.seal_audit(wait=True)
    claimed = [e.detail["run"] for e in store.iter_audit() if e.action == "run.claimed"]
    assert claimed == [runs[0].id]
