"""`record_plan` writes the plan's audit entries in the plan's own transaction, on every
backend (chained at once on SQLite, queued for the sealer on PostgreSQL): made from what the
transaction really did (the runs it inserted, the runs it cancelled), and all or nothing: a
plan whose entry cannot be stored queues and cancels no run.

The poison is a constraint (PostgreSQL) or a trigger (SQLite) added with raw SQL that refuses
an audit entry of action `poison`, as a full disk or a revoked grant would refuse any."""

from __future__ import annotations

import pytest

from reconciler.adapters.audit.chain import AuditRecord, verify
from reconciler.core.errors import StoreError
from reconciler.core.plan import Cancel, Plan
from reconciler.core.state import Reason, RunStatus
from tests.support.audit_poison import poison
from tests.support.store_contract import add, enqueue

AT = "2024-05-01T12:00:00.000000Z"


class Seen:
    """A `PlanAuditOf` that notes what it was given and makes one entry of `action` from it."""

    def __init__(self, action: str = "plan.recorded"):
        self.action = action
        self.calls: list[tuple[list, list]] = []

    def __call__(self, inserted, cancelled):
        self.calls.append((list(inserted), list(cancelled)))
        detail = {
            "enqueued": [run.id for run in inserted],
            "reasons": [run.reason for run in inserted],
            "cancelled_runs": [run.id for run in cancelled],
        }
        return [AuditRecord(AT, "tester", self.action, detail)]


def entries(store) -> list:
    store.seal_audit(wait=True)
    found = list(store.iter_audit())
    assert verify(found, store.audit_anchor()).ok
    return found


def _cancel(run) -> Cancel:
    return Cancel(run.id, run.task, run.machine, "removed")


def test_the_plan_entry_is_made_from_the_runs_inserted_and_cancelled(store, now):
    doomed, started, active = add(
        store,
        now,
        enqueue(task="prod/doomed"),
        enqueue(task="prod/started"),
        enqueue(task="prod/active"),
    )
    store.claim(started.id, "w", now)  # no longer the planner's to cancel
    plan = Plan(
        enqueue=(
            enqueue(task="prod/active"),  # its key has an active run: inserts nothing
            enqueue(task="prod/new", reason=Reason.CHANGED),
        ),
        cancel=(_cancel(doomed), _cancel(started)),
    )
    seen = Seen()
    [new] = store.record_plan(plan, "c0ffee", now, "planner", seen)

    [(inserted, cancelled)] = seen.calls
    assert [run.id for run in inserted] == [new.id] and new.task == "prod/new"
    assert [(run.id, run.status) for run in cancelled] == [(doomed.id, RunStatus.CANCELLED)]
    [entry] = entries(store)
    assert entry.action == "plan.recorded"
    assert entry.detail == {
        "enqueued": [new.id],
        "reasons": ["changed"],
        "cancelled_runs": [doomed.id],
    }
    assert store.get_run(started.id).status is RunStatus.RUNNING
    assert store.get_run(active.id).status is RunStatus.PENDING


def test_a_plan_with_nothing_to_do_still_writes_its_entry(store, now):
    seen = Seen()
    assert store.record_plan(Plan(), "c0ffee", now, "planner", seen) == []
    assert seen.calls == [([], [])]
    assert [e.action for e in entries(store)] == ["plan.recorded"]


def test_a_plan_whose_entry_cannot_be_stored_records_nothing(store, now, raw, backend):
    [doomed] = add(store, now, enqueue(task="prod/doomed"))
    poison(raw, backend)
    plan = Plan(enqueue=(enqueue(task="prod/new"),), cancel=(_cancel(doomed),))
    with pytest.raises(StoreError):
        store.record_plan(plan, "c0ffee", now, "planner", Seen("poison"))
    assert [run.task for run in store.pending()] == ["prod/doomed"]  # nothing queued, cancelled
    assert entries(store) == []
