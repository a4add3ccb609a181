"""Manual runs (`reconcile run`, migration 13) on every backend: queued beside the planner's
bookkeeping, never colliding with its one-active-run invariant, carrying their trigger, actor,
reason and parameters to whichever process claims them, audited in their own transaction."""

from __future__ import annotations

from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.base import ManualRun
from reconciler.core.plan import Plan
from reconciler.core.state import RunStatus
from tests.support.store_contract import ended, enqueue, one, race

MANUAL = ManualRun(
    "prod/web", "m1", "v1", 2, "hotfix INC-7", "alice", (("MODE", "full"),), "c0ffee"
)


def audited(run):
    return [AuditRecord("2024-05-01T12:00:00Z", "alice", "run.manual", {"run": run.id})]


def test_a_manual_run_keeps_its_trigger_actor_reason_and_params_through_claim_and_end(
    store, open_handle, now
):
    [run] = store.enqueue_manual([MANUAL], now, audited)
    assert (run.status, run.trigger, run.actor, run.reason) == (
        RunStatus.PENDING,
        "manual",
        "alice",
        "hotfix INC-7",
    )
    assert (run.params, run.priority, run.commit, run.slot) == (
        (("MODE", "full"),),
        2,
        "c0ffee",
        None,
    )
    other = open_handle()  # another process's connection claims and runs it
    claimed = other.claim(run.id, "worker-2", now)
    assert claimed.params == (("MODE", "full"),) and claimed.manual
    done = other.finish(claimed.id, claimed.epoch, RunStatus.SUCCEEDED, now, exit_code=0)
    assert done.manual and done.actor == "alice"
    for listed in (store.list_runs(), store.pending() + [store.get_run(run.id)]):
        assert [r.trigger for r in listed if r.id == run.id] == ["manual"]
    store.seal_audit(wait=True)  # PostgreSQL queues a batch's entries; chained by then
    [entry] = [e for e in store.iter_audit() if e.action == "run.manual"]
    assert entry.detail == {"run": run.id}


def test_a_manual_run_never_collides_with_the_planned_run_of_the_same_version(store, now):
    planned = one(store, now)  # pending: the active run of (prod/web, m1, v1)
    manual, again = store.enqueue_manual([MANUAL, MANUAL], now)
    assert len({planned.id, manual.id, again.id}) == 3
    # ... and a pass recording the same version beside pending manual runs still inserts.
    store.cancel_run(planned.id, now)
    [replanned] = store.record_plan(Plan(enqueue=(enqueue(),)), "c0ffee", now)
    assert replanned.trigger == "plan"
    assert store.record_plan(Plan(enqueue=(enqueue(),)), "c0ffee", now) == []  # still one


def test_the_snapshot_never_takes_a_manual_run_for_the_latest_run_of_its_version(store, now):
    succeeded = ended(store, now, RunStatus.SUCCEEDED)
    [manual] = store.enqueue_manual([MANUAL], now)
    claimed = store.claim(manual.id, "w", now)
    store.finish(claimed.id, claimed.epoch, RunStatus.FAILED, now, exit_code=1)
    snapshot = store.snapshot()
    assert snapshot.latest_run("prod/web", "m1", "v1").id == succeeded.id
    [pending] = store.enqueue_manual([MANUAL], now)
    assert [r.id for r in store.snapshot().active] == [pending.id]  # in the queue all the same
    assert store.snapshot().latest_run("prod/web", "m1", "v1").id == succeeded.id


def test_an_old_manual_run_is_pruned_and_the_newest_planned_run_is_kept(store, now, later):
    planned = ended(store, now, RunStatus.SUCCEEDED)
    [manual] = store.enqueue_manual([MANUAL], later(seconds=1))
    claimed = store.claim(manual.id, "w", later(seconds=1))
    store.finish(claimed.id, claimed.epoch, RunStatus.SUCCEEDED, later(seconds=2))
    prunable = store.prunable_runs(later(days=1))
    assert [r.id for r in prunable] == [manual.id]
    assert store.delete_runs([manual.id, planned.id], later(days=1)) == 1
    assert store.get_run(planned.id) is not None


RACE = """
import sys
from datetime import UTC, datetime
from reconciler.adapters.store.base import ManualRun
from reconciler.adapters.store.factory import open_store
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason
store = open_store(sys.argv[1])
now = datetime.now(UTC)
print("ready", flush=True)
sys.stdin.readline()
if sys.argv[2] == "plan":
    runs = store.record_plan(
        Plan(enqueue=(Enqueue("prod/web", "m1", "v1", 3, Reason.NEW),)), "c0ffee", now, "p")
else:
    runs = store.enqueue_manual(
        [ManualRun("prod/web", "m1", "v1", 3, "now", "alice")] * 3, now)
print(" ".join(r.trigger for r in runs))
store.close()
"""


def test_a_pass_enqueueing_the_same_version_concurrently_with_manual_runs_still_works(
    store, store_url
):
    outputs = race(RACE, [[store_url, "plan"], [store_url, "manual"], [store_url, "plan"]])
    triggers = sorted(word for out in outputs for word in out)
    assert triggers == ["manual", "manual", "manual", "plan"]  # one planned run, never two
    active = store.pending()
    assert sorted(r.trigger for r in active) == triggers
