"""Group commit (issue 13): `claim_batch`, `dispatch_batch` and `end_batch` write a scheduling
round's state changes and their audit entries in one transaction, on every backend; and
`start_batch` claims and marks dispatched in ONE durable transaction (what the engine uses).

All or nothing: a batch whose audit entry cannot be stored changes no run. The poison is a
constraint (PostgreSQL) or a trigger (SQLite) added with raw SQL that refuses an audit entry
of action `poison`, as a full disk or a revoked grant would refuse any: the refused entry is
the batch's last, so every change before it has to be rolled back.

Chained after `seal_audit`: on PostgreSQL batches queue their entries and a sealer links them
(no global lock on the hot path); on SQLite they are linked in the batch's own transaction.
Either way, once sealed the chain verifies and holds every entry in causal order.

Real databases, no sleeps: concurrent claimers are processes let go together (`race`).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.adapters.audit.chain import Anchor, AuditRecord, verify
from reconciler.adapters.store.base import Batch, ClaimRequest, RunEnd
from reconciler.core.errors import StoreError
from reconciler.core.state import RunStatus
from tests.support.audit_poison import poison
from tests.support.cli import reconcile
from tests.support.store_contract import add, enqueue, race

AT = "2024-05-01T12:00:00.000000Z"


def records_of(action: str):
    """An `AuditOf`: one entry per run, naming it and its epoch."""
    return lambda run: [AuditRecord(AT, "tester", action, {"run": run.id, "epoch": run.epoch})]


def poison_at(run_id: int):
    """An `AuditOf` whose entry for `run_id` the database refuses (see `poison`)."""

    def audit(run):
        action = "poison" if run.id == run_id else "run.claimed"
        return [AuditRecord(AT, "tester", action, {"run": run.id})]

    return audit


def runs_on(store, now, machine: str, n: int, prefix: str = "t"):
    return add(store, now, *(enqueue(task=f"prod/{prefix}{i}", machine=machine) for i in range(n)))


def chain(store) -> list:
    store.seal_audit(wait=True)
    entries = list(store.iter_audit())
    assert verify(entries, store.audit_anchor()).ok
    assert store.unsealed_audit() == 0
    return entries


# --- claim_batch ---------------------------------------------------------------------------------


def test_a_claim_batch_claims_in_request_order_and_refuses_what_is_not_pending(store, now):
    a, b, c = runs_on(store, now, "m1", 3)
    store.cancel_run(b.id, now)
    batch = store.claim_batch(
        [ClaimRequest(c.id), ClaimRequest(b.id), ClaimRequest(a.id), ClaimRequest(999_999)],
        "w1",
        now,
    )
    assert [run.id for run in batch.runs] == [c.id, a.id]
    assert batch.refused == [b.id, 999_999]
    for run in batch.runs:
        assert run.status is RunStatus.RUNNING and run.owner == "w1" and run.epoch == 1
        assert run.started_at == now and store.get_run(run.id) == run
    again = store.claim_batch([ClaimRequest(a.id), ClaimRequest(c.id)], "w2", now)
    assert again == Batch([], [a.id, c.id])  # a claimed run is never claimed twice


def test_max_parallel_counts_the_claims_of_the_same_batch(store, now):
    busy = runs_on(store, now, "m1", 4, "a")
    other = runs_on(store, now, "m2", 2, "b")
    store.claim(busy[0].id, "elsewhere", now)  # one runs on m1 already
    requests = [ClaimRequest(run.id, max_parallel=3) for run in busy[1:] + other]
    batch = store.claim_batch(requests, "w", now)
    # m1: 1 running + 2 of this batch = 3, so the third of m1 is refused; m2 is not full.
    assert [run.id for run in batch.runs] == [busy[1].id, busy[2].id] + [r.id for r in other]
    assert batch.refused == [busy[3].id]
    assert store.get_run(busy[3].id).status is RunStatus.PENDING
    # Unlimited requests are not counted against: a request without a limit always claims.
    assert store.claim_batch([ClaimRequest(busy[3].id)], "w", now).runs[0].id == busy[3].id


def test_a_claim_batch_chains_leading_entries_then_each_claim_in_request_order(store, now):
    a, b = runs_on(store, now, "m1", 2)
    leading = [AuditRecord(AT, "tester", "plan.recorded", {"n": 1})]
    batch = store.claim_batch(
        [ClaimRequest(b.id), ClaimRequest(a.id)], "w", now, records_of("run.claimed"), leading
    )
    assert [run.id for run in batch.runs] == [b.id, a.id]
    entries = chain(store)
    assert [(e.action, e.detail.get("run")) for e in entries] == [
        ("plan.recorded", None),
        ("run.claimed", b.id),
        ("run.claimed", a.id),
    ]
    assert [e.detail["epoch"] for e in entries[1:]] == [1, 1]  # made from the runs as claimed


def test_a_claim_batch_whose_audit_entry_cannot_be_stored_claims_nothing(store, now, raw, backend):
    runs = runs_on(store, now, "m1", 3)
    poison(raw, backend)
    leading = [AuditRecord(AT, "tester", "plan.recorded", {})]
    with pytest.raises(StoreError):
        store.claim_batch(
            [ClaimRequest(r.id, max_parallel=5) for r in runs],
            "w",
            now,
            poison_at(runs[-1].id),
            leading,
        )
    assert [store.get_run(r.id).status for r in runs] == [RunStatus.PENDING] * 3
    assert [store.get_run(r.id).epoch for r in runs] == [0, 0, 0]
    assert chain(store) == []  # neither the plan's entry nor a claim's
    # The store is still usable: the same batch without the poison claims all three.
    batch = store.claim_batch([ClaimRequest(r.id) for r in runs], "w", now, records_of("ok"))
    assert len(batch.runs) == 3 and len(chain(store)) == 3


# --- dispatch_batch and end_batch ----------------------------------------------------------------


def test_dispatch_and_end_batches_refuse_runs_whose_lease_was_lost(store, now, raw):
    a, b, c = runs_on(store, now, "m1", 3)
    claimed = store.claim_batch([ClaimRequest(r.id) for r in (a, b, c)], "w", now).runs
    raw.age_heartbeat(b.id)
    [swept] = store.sweep(60, now)  # b's holder looked dead: b is pending again...
    store.claim(swept.id, "other", now)  # ...and another worker holds it at epoch 2
    store.finish(c.id, 1, RunStatus.SUCCEEDED, now)  # c is not running any more
    dispatched = store.dispatch_batch(claimed, now, records_of("run.dispatched"))
    assert [run.id for run in dispatched.runs] == [a.id] and dispatched.runs[0].dispatched
    assert dispatched.refused == [b.id, c.id]
    assert store.get_run(b.id).dispatched is False  # the other holder's run is untouched
    later = now + timedelta(seconds=5)
    ends = [
        RunEnd(a.id, 1, RunStatus.FAILED, exit_code=2, output="boom", error="exit 2"),
        RunEnd(b.id, 1, RunStatus.SUCCEEDED),
        RunEnd(c.id, 1, RunStatus.SUCCEEDED),
    ]
    ended = store.end_batch(ends, later, records_of("run.finished"))
    assert [run.id for run in ended.runs] == [a.id] and ended.refused == [b.id, c.id]
    final = store.get_run(a.id)
    assert (final.status, final.exit_code, final.output, final.error) == (
        RunStatus.FAILED,
        2,
        "boom",
        "exit 2",
    )
    assert final.finished_at == later and store.get_run(b.id).status is RunStatus.RUNNING
    assert [e.action for e in chain(store)] == ["run.dispatched", "run.finished"]


def test_an_end_batch_requeues_a_retry_and_finishes_the_rest(store, now):
    a, b = runs_on(store, now, "m1", 2)
    claimed = store.claim_batch([ClaimRequest(a.id), ClaimRequest(b.id)], "w", now).runs
    store.dispatch_batch(claimed, now)
    retry_at = now + timedelta(minutes=1)
    ends = [
        RunEnd(a.id, 1, RunStatus.FAILED, exit_code=1, output="x", retry_at=retry_at),
        RunEnd(b.id, 1, RunStatus.SKIPPED, exit_code=0),
    ]
    batch = store.end_batch(ends, now)
    assert [run.id for run in batch.runs] == [a.id, b.id] and batch.refused == []
    retried, skipped = (store.get_run(a.id), store.get_run(b.id))
    assert (retried.status, retried.attempt, retried.not_before) == (
        RunStatus.PENDING,
        2,
        retry_at,
    )
    assert retried.dispatched is False and retried.owner is None
    assert skipped.status is RunStatus.SKIPPED and skipped.finished_at == now
    with pytest.raises(ValueError):
        store.end_batch([RunEnd(a.id, 1, RunStatus.RUNNING)], now)


def test_an_end_batch_stores_every_output_and_error_as_given(store, now):
    # Texts go to SQLite inline in the batch's JSON unless JSON would change them (a NUL, a
    # lone surrogate): each must read back exactly, beside the others, whichever way it went.
    texts = [
        ("plain\n", None),
        ("nul \x00 inside", "error too"),
        ('ünïcødé ✓ \u2028 \\ " quotes', "exit 3: ✗"),
        ("", ""),
        ("lone \ud800 surrogate", "nul \x00 in the error"),
    ]
    runs = runs_on(store, now, "m1", len(texts))
    claimed = store.claim_batch([ClaimRequest(r.id) for r in runs], "w", now).runs
    store.dispatch_batch(claimed, now)
    ends = [
        RunEnd(run.id, run.epoch, RunStatus.FAILED, exit_code=3, output=out, error=err)
        for run, (out, err) in zip(claimed, texts)
    ]
    batch = store.end_batch(ends, now)
    stored = [store.get_run(run.id) for run in claimed]
    written = [(run.output, run.error) for run in batch.runs]
    assert written == [(run.output, run.error) for run in stored]
    assert [(run.output, run.error) for run in stored[:4]] == texts[:4]
    # What a backend cannot keep as it is (PostgreSQL text holds no NUL, no surrogate) it
    # stores its own way, never losing the rest of the text.
    assert "surrogate" in stored[4].output
    assert stored[4].error.replace("\ufffd", "\x00") == "nul \x00 in the error"


@pytest.mark.parametrize("step", ["dispatch", "end"])
def test_a_dispatch_or_end_batch_whose_audit_entry_fails_changes_nothing(
    store, now, raw, backend, step
):
    runs = runs_on(store, now, "m1", 3)
    claimed = store.claim_batch([ClaimRequest(r.id) for r in runs], "w", now).runs
    if step == "end":
        claimed = store.dispatch_batch(claimed, now).runs
    poison(raw, backend)
    with pytest.raises(StoreError):
        if step == "dispatch":
            store.dispatch_batch(claimed, now, poison_at(claimed[-1].id))
        else:
            ends = [RunEnd(r.id, r.epoch, RunStatus.SUCCEEDED) for r in claimed]
            store.end_batch(ends, now, poison_at(claimed[-1].id))
    assert [store.get_run(r.id) for r in runs] == claimed  # as the last good batch left them


def test_empty_batches_write_nothing(store, now):
    assert store.claim_batch([], "w", now) == Batch([], [])
    assert store.dispatch_batch([], now) == Batch([], [])
    assert store.end_batch([], now) == Batch([], [])
    assert chain(store) == []


def test_a_whole_round_is_chained_in_causal_order_and_verifies(store, now):
    runs = runs_on(store, now, "m1", 5)
    leading = [AuditRecord(AT, "tester", "plan.recorded", {})]
    claimed = store.claim_batch(
        [ClaimRequest(r.id, 8) for r in runs], "w", now, records_of("run.claimed"), leading
    ).runs
    store.append_audit([AuditRecord(AT, "tester", "between", {})])  # a direct append
    dispatched = store.dispatch_batch(claimed, now, records_of("run.dispatched")).runs
    ends = [RunEnd(r.id, r.epoch, RunStatus.SUCCEEDED, exit_code=0) for r in dispatched]
    store.end_batch(ends, now, records_of("run.finished"))
    entries = chain(store)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    actions = [e.action for e in entries]
    assert (
        actions
        == ["plan.recorded"]
        + ["run.claimed"] * 5
        + ["between"]
        + ["run.dispatched"] * 5
        + ["run.finished"] * 5
    )
    assert store.seal_audit() == 0  # nothing left to seal


# --- concurrency ---------------------------------------------------------------------------------

CLAIMER = r"""
import sys
from datetime import UTC, datetime
from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.base import ClaimRequest
from reconciler.adapters.store.factory import open_store

url, name, limit, order = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = open_store(url)
ids = [run.id for run in store.pending()]
if order == "reversed":  # machines are then locked in the other order of their names
    ids.reverse()
print("ready", flush=True)
sys.stdin.readline()
mine = []
def audit(run):
    return [AuditRecord("2024-05-01T12:00:00.000000Z", name, "run.claimed", {"run": run.id})]
for start in range(0, len(ids), 16):
    batch = store.claim_batch(
        [ClaimRequest(i, limit) for i in ids[start:start + 16]], name, datetime.now(UTC), audit
    )
    mine += [run.id for run in batch.runs]
store.seal_audit(wait=True)
store.close()
print(" ".join(map(str, mine)))
"""


def test_four_processes_claiming_batches_from_one_queue_claim_each_run_exactly_once(
    store, store_url, now, tmp_path
):
    machines = [f"m{i}" for i in range(8)]
    runs = add(
        store, now, *(enqueue(task=f"prod/t{i}", machine=machines[i % 8]) for i in range(400))
    )
    orders = ["forward", "reversed"] * 2
    outputs = race(CLAIMER, [[store_url, f"w{i}", "400", orders[i]] for i in range(4)])
    claimed = [int(run_id) for lines in outputs for run_id in lines]
    assert sorted(claimed) == sorted(run.id for run in runs)  # each exactly once
    by_worker = {f"w{i}": len(lines) for i, lines in enumerate(outputs)}
    for run in runs:
        stored = store.get_run(run.id)
        assert stored.status is RunStatus.RUNNING and stored.epoch == 1
    entries = chain(store)
    assert sorted(e.detail["run"] for e in entries) == sorted(claimed)
    assert {e.actor: 0 for e in entries}.keys() <= by_worker.keys()
    for worker, count in by_worker.items():
        assert sum(1 for e in entries if e.actor == worker) == count
    verified = reconcile(
        "audit", "verify", "--state", store_url, "--format", "json", cwd=tmp_path, check_code=0
    ).json()
    assert (verified["ok"], verified["entries"], verified["unsealed"]) == (True, 400, 0)


def test_a_run_asked_for_twice_in_one_batch_is_claimed_once(store, now):
    [run] = runs_on(store, now, "m1", 1)
    batch = store.claim_batch([ClaimRequest(run.id), ClaimRequest(run.id, 5)], "w", now)
    assert [r.id for r in batch.runs] == [run.id] and batch.refused == [run.id]
    assert store.get_run(run.id).epoch == 1


@pytest.mark.parametrize(
    "detail",
    [
        {},
        {"text": 'quote " backslash \\ slash / tab \t newline \n nul \x00 bell \x07 del \x7f'},
        {"unicode": "naïve ✓ 𝄞 \u2028 \ud800", "nested": {"b": [1, 2.5, None, True], "a": {}}},
        {"big": 2**70, "neg": -1.5e-300, "keys": {"z": 1, "é": 2, "A": 3, "": 4}},
    ],
)
def test_chaining_stored_texts_gives_the_hashes_of_the_entries(detail):
    """The sealer and SQLite's batches link entries from their stored texts without parsing
    them again; that must give exactly the hashes `link` and `verify` compute."""
    from reconciler.adapters.audit.chain import chain_texts, link, stored_fields

    records = [AuditRecord(AT, "actör \x00", "act\ud800ion", detail)] * 2
    rows = chain_texts(3, "ab" * 32, map(stored_fields, records))
    entries = link(3, "ab" * 32, records)
    assert [row[-1] for row in rows] == [entry.hash for entry in entries]
    assert verify(entries, Anchor(3, "ab" * 32)).ok


def test_max_parallel_holds_across_processes_claiming_batches(store, store_url, now):
    """Four processes claim batches of one machine's runs (limit 3) in opposite orders at the
    same moment: three runs are claimed in all, never more, and no batch deadlocks."""
    runs = add(store, now, *(enqueue(task=f"prod/t{i}", machine="m1") for i in range(40)))
    add(store, now, *(enqueue(task=f"prod/o{i}", machine=f"o{i}") for i in range(8)))
    orders = ["forward", "reversed"] * 2
    outputs = race(CLAIMER, [[store_url, f"w{i}", "3", orders[i]] for i in range(4)])
    claimed = [int(run_id) for lines in outputs for run_id in lines]
    on_m1 = [i for i in claimed if i in {run.id for run in runs}]
    assert len(on_m1) == 3 and len(claimed) == 3 + 8  # the other machines are not full
    assert sum(1 for run in store.running() if run.machine == "m1") == 3


# --- start_batch: a round's claims and dispatch marks in one transaction ----------------------


def test_a_start_batch_claims_and_dispatches_with_entries_in_causal_order(store, now):
    a, b, c = runs_on(store, now, "m1", 3)
    store.cancel_run(c.id, now)
    leading = [AuditRecord(AT, "tester", "plan.recorded", {})]
    batch = store.start_batch(
        [ClaimRequest(b.id, 8), ClaimRequest(a.id, 8), ClaimRequest(c.id, 8)],
        "w",
        now,
        claimed=records_of("run.claimed"),
        dispatched=records_of("run.dispatched"),
        leading=leading,
    )
    assert [run.id for run in batch.runs] == [b.id, a.id]
    assert batch.refused == [c.id]
    for run in batch.runs:
        assert (run.status, run.dispatched, run.epoch, run.owner) == (
            RunStatus.RUNNING,
            True,
            1,
            "w",
        )
        stored = store.get_run(run.id)
        assert stored.dispatched and stored.epoch == 1 and stored.started_at == now
    entries = chain(store)
    assert [(e.action, e.detail.get("run")) for e in entries] == [
        ("plan.recorded", None),
        ("run.claimed", b.id),
        ("run.claimed", a.id),
        ("run.dispatched", b.id),
        ("run.dispatched", a.id),
    ]


def test_a_start_batch_counts_max_parallel_and_takes_spares_up_to_want(store, now):
    busy = runs_on(store, now, "m1", 3, "a")
    spare = runs_on(store, now, "m2", 2, "b")
    store.claim(busy[0].id, "elsewhere", now)  # taken by another worker since it was read
    requests = [ClaimRequest(r.id, 2) for r in busy + spare]
    batch = store.start_batch(requests, "w", now, want=2)
    # busy[0] refused (not pending); busy[1] fills m1 (1 running + 1 = 2); busy[2] refused
    # (m1 full); the first spare takes a refused run's place; the second is not needed.
    assert [r.id for r in batch.runs] == [busy[1].id, spare[0].id]
    assert batch.refused == [busy[0].id, busy[2].id]
    assert batch.unclaimed == [spare[1].id]
    assert store.get_run(spare[1].id).status is RunStatus.PENDING


def test_a_start_batch_whose_dispatch_entry_cannot_be_stored_claims_nothing(
    store, now, raw, backend
):
    """The dispatch entries are the batch's last writes: refusing one must undo the claims
    too, since they are one transaction."""
    runs = runs_on(store, now, "m1", 3)
    poison(raw, backend)
    with pytest.raises(StoreError):
        store.start_batch(
            [ClaimRequest(r.id, 5) for r in runs],
            "w",
            now,
            claimed=records_of("run.claimed"),
            dispatched=lambda run: [AuditRecord(AT, "tester", "poison", {"run": run.id})],
        )
    assert [store.get_run(r.id).status for r in runs] == [RunStatus.PENDING] * 3
    assert [store.get_run(r.id).epoch for r in runs] == [0, 0, 0]
    assert chain(store) == []


def test_a_start_batch_that_fails_between_its_claims_and_its_commit_leaves_runs_pending(store, now):
    """Where the engine's `after_claim` failpoint kills the process: the claims are made,
    not committed."""
    runs = runs_on(store, now, "m1", 2)
    seen = []

    def crash(run):
        seen.append(run.id)
        raise RuntimeError("killed between the claims and the commit")

    with pytest.raises(RuntimeError):
        store.start_batch([ClaimRequest(r.id) for r in runs], "w", now, claimed=crash)
    assert seen == [runs[0].id]
    assert [store.get_run(r.id).status for r in runs] == [RunStatus.PENDING] * 2
    assert not any(store.get_run(r.id).dispatched for r in runs)
    # The store is usable after it: the same batch claims and dispatches both.
    batch = store.start_batch([ClaimRequest(r.id) for r in runs], "w", now)
    assert [r.id for r in batch.runs] == [r.id for r in runs]


STARTER = r"""
import sys
from datetime import UTC, datetime
from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.base import ClaimRequest
from reconciler.adapters.store.factory import open_store

url, name, limit, order = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = open_store(url)
ids = [run.id for run in store.pending()]
if order == "reversed":  # machines are then locked in the other order of their names
    ids.reverse()
print("ready", flush=True)
sys.stdin.readline()
mine = []
def audit(action):
    return lambda run: [AuditRecord("2024-05-01T12:00:00.000000Z", name, action, {"run": run.id})]
for start in range(0, len(ids), 16):
    batch = store.start_batch(
        [ClaimRequest(i, limit) for i in ids[start:start + 16]], name, datetime.now(UTC),
        claimed=audit("run.claimed"), dispatched=audit("run.dispatched"),
    )
    assert all(run.dispatched for run in batch.runs)
    mine += [run.id for run in batch.runs]
store.seal_audit(wait=True)
store.close()
print(" ".join(map(str, mine)))
"""


def test_four_processes_starting_batches_start_each_run_once_within_max_parallel(
    store, store_url, now
):
    runs = add(store, now, *(enqueue(task=f"prod/t{i}", machine=f"m{i % 4}") for i in range(200)))
    orders = ["forward", "reversed"] * 2
    outputs = race(STARTER, [[store_url, f"w{i}", "10", orders[i]] for i in range(4)])
    started = [int(run_id) for lines in outputs for run_id in lines]
    assert len(started) == len(set(started)) == 40  # 4 machines x max_parallel 10, once each
    for machine in ("m0", "m1", "m2", "m3"):
        assert sum(1 for run in store.running() if run.machine == machine) == 10
    entries = chain(store)
    for action in ("run.claimed", "run.dispatched"):
        assert sorted(e.detail["run"] for e in entries if e.action == action) == sorted(started)
    assert {run.id for run in runs} >= set(started)


# --- round_batch: the last round's ends with this round's starts ---------------------------------


def _running(store, now, runs):
    """`runs` claimed and dispatched by "w" (as a round started them)."""
    return store.start_batch([ClaimRequest(r.id) for r in runs], "w", now).runs


def test_a_round_batch_records_ends_then_starts_within_the_slots_they_freed(store, now, later):
    first = _running(store, now, runs_on(store, now, "m1", 2, "a"))
    waiting = runs_on(store, now, "m1", 2, "b")
    ends = [RunEnd(r.id, r.epoch, RunStatus.SUCCEEDED, exit_code=0, output="ok") for r in first]
    recorded, started = store.round_batch(
        ends,
        [ClaimRequest(r.id, max_parallel=2) for r in waiting],  # m1 is full until they end
        "w",
        later(seconds=1),
        ended=records_of("run.finished"),
        claimed=records_of("run.claimed"),
        dispatched=records_of("run.dispatched"),
    )
    assert [r.id for r in recorded.runs] == [r.id for r in first] and recorded.refused == []
    assert [r.output for r in recorded.runs] == ["ok", "ok"]
    assert [r.id for r in started.runs] == [r.id for r in waiting]
    assert all(r.dispatched for r in started.runs)
    for run in first:
        stored = store.get_run(run.id)
        assert (stored.status, stored.finished_at) == (RunStatus.SUCCEEDED, later(seconds=1))
    entries = [(e.action, e.detail["run"]) for e in chain(store)]
    assert entries == [
        *(("run.finished", r.id) for r in first),
        *(("run.claimed", r.id) for r in waiting),
        *(("run.dispatched", r.id) for r in waiting),
    ]


def test_a_round_batch_whose_end_is_refused_records_the_others_and_claims_nothing(store, now):
    a, b = _running(store, now, runs_on(store, now, "m1", 2, "a"))
    [waiting] = runs_on(store, now, "m2", 1, "b")
    ends = [
        RunEnd(a.id, a.epoch, RunStatus.SUCCEEDED, exit_code=0),
        RunEnd(b.id, b.epoch + 1, RunStatus.SUCCEEDED, exit_code=0),  # a lease lost since
    ]
    recorded, started = store.round_batch(ends, [ClaimRequest(waiting.id)], "w", now)
    assert [r.id for r in recorded.runs] == [a.id] and recorded.refused == [b.id]
    assert (started.runs, started.refused, started.unclaimed) == ([], [], [waiting.id])
    assert store.get_run(waiting.id).status is RunStatus.PENDING
    assert store.get_run(a.id).status is RunStatus.SUCCEEDED


def test_a_round_batch_that_cannot_store_a_dispatch_entry_records_no_end_either(
    store, now, raw, backend
):
    first = _running(store, now, runs_on(store, now, "m1", 1, "a"))
    waiting = runs_on(store, now, "m1", 1, "b")
    poison(raw, backend)
    with pytest.raises(StoreError):
        store.round_batch(
            [RunEnd(first[0].id, first[0].epoch, RunStatus.SUCCEEDED, exit_code=0)],
            [ClaimRequest(waiting[0].id)],
            "w",
            now,
            ended=records_of("run.finished"),
            dispatched=lambda run: [AuditRecord(AT, "tester", "poison", {"run": run.id})],
        )
    assert store.get_run(first[0].id).status is RunStatus.RUNNING
    assert store.get_run(waiting[0].id).status is RunStatus.PENDING
    assert chain(store) == []
