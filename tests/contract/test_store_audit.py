"""The store port's audit log, alert memory, outbox and retention (migration 4), on every
backend: appends form one linear chain whoever writes, a dedupe key is remembered once, an
outbox row is claimed by one process at a time, pruning never forgets what the planner needs.

Real databases, no sleeps: concurrent writers are started together behind a barrier (threads)
or a "go" line on stdin (processes, `race`).
"""

from __future__ import annotations

import threading

import pytest

from reconciler.adapters.audit.chain import GENESIS, AuditRecord, verify
from reconciler.adapters.store import base as store_base
from reconciler.adapters.store.factory import open_store
from reconciler.core import alerts
from reconciler.core.errors import StoreError
from reconciler.core.model import AlertTarget, VaultRef
from reconciler.core.plan import Enqueue, Plan
from reconciler.core.state import Reason, Run, RunStatus
from tests.contract.conftest import _AGO
from tests.support.store_contract import race


def record(
    action: str = "test", n: int = 0, at: str = "2024-05-01T12:00:00.000000Z", **detail
) -> AuditRecord:
    return AuditRecord(at, "tester", action, {"n": n, **detail})


def add_runs(store, now, *keys: tuple[str, str, str]) -> list[Run]:
    plan = Plan(enqueue=tuple(Enqueue(t, m, v, 3, Reason.NEW) for t, m, v in keys))
    return store.record_plan(plan, "c0ffee", now)


def end(store, run: Run, status: RunStatus, now) -> Run:
    claimed = store.claim(run.id, "w", now)
    return store.finish(claimed.id, claimed.epoch, status, now, exit_code=1, output="out")


def alert_for(run: Run, event: str = "failed") -> alerts.Alert:
    return alerts.Alert(
        alerts.AlertKey(run.task, run.version, run.machine, event),
        run.team,
        run.id,
        f"reconciler: {run.task} {event} on {run.machine}",
        "body",
    )


TARGETS = (AlertTarget("json://127.0.0.1:1/a"), AlertTarget(VaultRef("HOOK")))


# --- the audit chain -------------------------------------------------------------------------------


def test_appended_entries_link_from_genesis_and_read_back_as_written(store):
    first = store.append_audit([record(n=1, text="naïve ✓", nested={"b": [1, 2], "a": None})])
    more = store.append_audit([record(n=2), record(n=3)])
    assert [e.seq for e in first + more] == [1, 2, 3]
    assert first[0].prev == GENESIS
    assert more[0].prev == first[0].hash and more[1].prev == more[0].hash
    stored = store.audit_page()
    assert stored == first + more
    assert stored[0].detail == {"n": 1, "text": "naïve ✓", "nested": {"a": None, "b": [1, 2]}}
    assert store.audit_head() == more[-1]
    assert verify(stored).ok


def test_text_a_backend_cannot_store_is_made_storable_before_it_is_hashed(store):
    [entry] = store.append_audit([record(text="nul\x00here", bad="\udcff")])
    [stored] = store.audit_page()
    assert stored == entry and "\x00" not in stored.detail["text"]
    assert verify([stored]).ok


def test_audit_pages_and_since_filter(store, monkeypatch):
    store.append_audit([record(n=i, at=f"2024-05-0{1 + i % 3}T00:00:00.000000Z") for i in range(7)])
    assert [e.seq for e in store.audit_page(after_seq=2, limit=3)] == [3, 4, 5]
    since = store.audit_page(since="2024-05-02T00:00:00.000000Z")
    assert [e.detail["n"] for e in since] == [1, 2, 4, 5]
    monkeypatch.setattr(store_base, "AUDIT_PAGE", 2)
    assert [e.seq for e in store.iter_audit()] == list(range(1, 8))
    assert [e.seq for e in store.iter_audit(after_seq=5)] == [6, 7]


def test_the_chain_continues_across_handles_and_reopening(store, open_handle):
    store.append_audit([record(n=1)])
    other = open_handle()
    other.append_audit([record(n=2)])
    store.append_audit([record(n=3)])
    entries = open_handle().audit_page()
    assert [e.seq for e in entries] == [1, 2, 3]
    assert verify(entries).ok


def test_threads_appending_at_once_form_one_linear_chain(open_handle):
    handles = [open_handle() for _ in range(4)]
    start = threading.Barrier(len(handles))
    errors: list[BaseException] = []

    def writer(handle, n):
        start.wait()
        try:
            for i in range(25):
                handle.append_audit([record(f"w{n}", i), record(f"w{n}", i, second=True)])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(h, n)) for n, h in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    entries = list(handles[0].iter_audit())
    assert [e.seq for e in entries] == list(range(1, 201))
    assert verify(entries).ok
    # each writer's pair stayed adjacent: one transaction per append
    for first, second in zip(entries[::2], entries[1::2]):
        assert (first.action, first.detail["n"]) == (second.action, second.detail["n"])


APPENDER = """
import sys
from reconciler.adapters.audit.chain import AuditRecord
from reconciler.adapters.store.factory import open_store
store = open_store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for i in range(40):
    store.append_audit([AuditRecord("2024-05-01T00:00:00.000000Z", sys.argv[2], "p", {"i": i})])
store.close()
print("done", flush=True)
"""


def test_processes_appending_at_once_form_one_linear_chain(store, store_url):
    outputs = race(APPENDER, [[store_url, f"process{n}"] for n in range(4)])
    assert outputs == [["done"]] * 4
    entries = list(store.iter_audit())
    assert [e.seq for e in entries] == list(range(1, 161))
    assert verify(entries).ok
    assert {e.actor for e in entries} == {f"process{n}" for n in range(4)}


def test_prune_audit_keeps_an_anchor_the_chain_continues_from(store, now):
    entries = store.append_audit([record(n=i) for i in range(5)])
    assert store.prune_audit(3, now) == 3
    assert store.audit_anchor().seq == 3 and store.audit_anchor().hash == entries[2].hash
    kept = store.audit_page()
    assert [e.seq for e in kept] == [4, 5]
    assert verify(kept, store.audit_anchor()).ok
    assert not verify(kept).ok  # without the anchor the first kept entry links nowhere
    store.prune_audit(5, now)
    [after] = store.append_audit([record(n=9)])
    assert (after.seq, after.prev) == (6, entries[4].hash)
    assert store.prune_audit(42, now) == 0  # no such entry: nothing happens


def read_only_handle(store_url: str, backend: str, raw):
    """A handle on the store that cannot write: SQLite opened read-only; a PostgreSQL
    database whose new sessions are read-only."""
    if backend == "sqlite":
        return open_store(store_url, read_only=True)
    name = store_url.rsplit("/", 1)[1]
    raw.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    return open_store(store_url)


def test_appending_to_a_read_only_store_raises_store_error(store, store_url, backend, raw):
    store.append_audit([record()])
    reader = read_only_handle(store_url, backend, raw)
    try:
        with pytest.raises(StoreError):
            reader.append_audit([record()])
    finally:
        reader.close()
    assert [e.seq for e in store.audit_page()] == [1]


# --- alert memory and outbox ---------------------------------------------------------------------


def test_an_alert_is_remembered_once_by_its_key_with_its_deliveries(store, open_handle, now):
    [run] = add_runs(store, now, ("ops/web", "m1", "v1"))
    alert = alert_for(run)
    rows = alerts.deliveries(alert, TARGETS)
    assert store.record_alert(alert, rows, "me", now) is True
    assert store.record_alert(alert, rows, "me", now) is False
    assert open_handle().record_alert(alert, rows, "other", now) is False  # another process
    assert store.outbox_pending() == 2
    # they were inserted claimed by their sender: nobody else takes them meanwhile
    assert open_handle().claim_deliveries("other") == []


def test_concurrent_recorders_of_one_key_send_once(open_handle, now):
    handles = [open_handle() for _ in range(4)]
    [run] = add_runs(handles[0], now, ("ops/web", "m1", "v1"))
    alert = alert_for(run)
    start = threading.Barrier(len(handles))
    results: list[bool] = []

    def recorder(handle):
        start.wait()
        results.append(handle.record_alert(alert, alerts.deliveries(alert, TARGETS[:1]), "w", now))

    threads = [threading.Thread(target=recorder, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    assert handles[0].outbox_pending() == 1


def test_recovery_clears_the_failure_so_the_next_failure_alerts_again(store, now):
    first, second, third = add_runs(
        store, now, ("ops/web", "m1", "v1"), ("ops/web", "m1", "v2"), ("ops/web", "m1", "v3")
    )
    assert store.record_alert(alert_for(first), [], "me", now)
    recovered = alerts.Alert(
        alerts.AlertKey("ops/web", "v1", "m1", "recovered"), "ops", second.id, "t", "b"
    )
    assert store.record_alert(recovered, [], "me", now)
    # the failure of v1 is forgotten: the same key alerts again (a later failure)...
    again = alerts.Alert(
        alerts.AlertKey("ops/web", "v1", "m1", "failed"), "ops", third.id, "t", "b"
    )
    assert store.record_alert(again, [], "me", now)
    # ...but a late duplicate of an older run's event does not
    assert not store.record_alert(alert_for(first, "unknown"), [], "me", now)


def test_outbox_claim_failure_retry_and_delivery(store, open_handle, now):
    [run] = add_runs(store, now, ("ops/web", "m1", "v1"))
    alert = alert_for(run)
    rows = alerts.deliveries(alert, TARGETS)
    store.record_alert(alert, rows, "me", now)
    store.delivery_failed(rows[0].id, "HTTP 500", now)
    other = open_handle()
    [claimed] = other.claim_deliveries("other")
    assert (claimed.id, claimed.attempts, claimed.last_error) == (rows[0].id, 1, "HTTP 500")
    assert (claimed.title, claimed.body, claimed.target) == (
        rows[0].title,
        rows[0].body,
        rows[0].target,
    )
    assert other.claim_deliveries("third") == []  # held by `other` now
    other.delivery_done(claimed.id, now)
    assert store.outbox_pending() == 1
    assert store.release_deliveries("me") == 1  # the second row, never attempted
    [left] = store.claim_deliveries("again")
    assert left.id == rows[1].id
    store.delivery_failed(left.id, "gone", now, give_up=True)
    assert store.outbox_pending() == 0 and store.claim_deliveries("x") == []


def test_an_expired_delivery_claim_can_be_taken_over(store, raw, backend, now):
    [run] = add_runs(store, now, ("ops/web", "m1", "v1"))
    alert = alert_for(run)
    rows = alerts.deliveries(alert, TARGETS[:1])
    store.record_alert(alert, rows, "dead", now)
    assert store.claim_deliveries("me") == []
    # the claimer died an hour ago (by the database's clock), never released its claim
    raw.execute(f"UPDATE alert_outbox SET claimed_at = {_AGO[backend]}", (3600,))
    assert store.claim_deliveries("me", lease_seconds=60) != []
    assert store.claim_deliveries("third", lease_seconds=60) == []  # `me` holds it now


def test_unreachable_memory_marks_the_machine_until_forgotten(store, now):
    alert = alerts.unreachable("box", "ops", "refused")
    assert store.record_alert(alert, [], "me", now)
    assert not store.record_alert(alert, [], "me", now)
    assert store.unreachable_machines() == {"box"}
    assert store.forget_alerts("", "box", ["unreachable"]) == 1
    assert store.unreachable_machines() == set()
    assert store.record_alert(alert, [], "me", now)


def test_previous_outcome_is_the_newest_final_run_before_any_version(store, now):
    a, b, c, d = add_runs(
        store,
        now,
        ("ops/web", "m1", "v1"),
        ("ops/web", "m1", "v2"),
        ("ops/web", "m2", "v1"),
        ("ops/db", "m1", "v1"),
    )
    end(store, a, RunStatus.FAILED, now)
    store.cancel_run(b.id, now)  # cancelled runs do not count
    [e] = add_runs(store, now, ("ops/web", "m1", "v3"))
    assert store.previous_outcome("ops/web", "m1", e.id) is RunStatus.FAILED
    assert store.previous_outcome("ops/web", "m1", a.id) is None
    assert store.previous_outcome("ops/web", "m2", e.id) is None  # c is still pending


# --- retention ---------------------------------------------------------------------------------------


def test_prune_removes_old_final_runs_but_keeps_the_newest_of_each_version(store, now, later):
    old = []
    for _ in range(3):  # three runs of one scheduled version, one after the other
        [run] = store.record_plan(
            Plan(
                enqueue=(Enqueue("ops/cron", "m1", "v1", 3, Reason.SCHEDULE, slot=f"s{len(old)}"),)
            ),
            None,
            now,
        )
        old.append(end(store, run, RunStatus.SUCCEEDED, now))
    [once] = add_runs(store, now, ("ops/once", "m1", "v1"))
    end(store, once, RunStatus.FAILED, now)
    [active] = add_runs(store, now, ("ops/pending", "m1", "v1"))
    cutoff = later(days=1)
    prunable = store.prunable_runs(cutoff)
    assert [r.id for r in prunable] == [old[0].id, old[1].id]
    assert prunable[0].output == "out"  # with output: for the archive
    assert store.prunable_runs(now) == []  # nothing ended before `now`
    assert store.delete_runs([r.id for r in prunable] + [once.id, active.id], cutoff) == 2
    assert store.get_run(old[0].id) is None and store.get_run(old[2].id) is not None
    assert store.get_run(once.id) is not None and store.get_run(active.id) is not None
    snapshot = store.snapshot()
    assert snapshot.latest_run("ops/cron", "m1", "v1").id == old[2].id


def test_prune_outbox_removes_only_finished_deliveries(store, now, later):
    [run] = add_runs(store, now, ("ops/web", "m1", "v1"))
    alert = alert_for(run)
    rows = alerts.deliveries(alert, TARGETS)
    store.record_alert(alert, rows, "me", now)
    store.delivery_done(rows[0].id, now)
    assert store.prune_outbox(now) == 0  # not older than the cut-off
    assert store.prune_outbox(later(seconds=1)) == 1
    assert store.outbox_pending() == 1


def test_a_secret_in_the_text_of_a_path_or_bytes_detail_is_masked_in_the_stored_entry(store):
    """A detail that is not a string (a path, bytes, an enum) is stored by its text: the
    writer masks that text, so a secret a vault revealed never reaches the log through it."""
    from pathlib import Path

    from reconciler.adapters.audit.writer import AuditWriter
    from reconciler.core.redact import Redactor

    secret = "hunter2-s3cret"
    redact = Redactor()
    redact.add(secret)
    writer = AuditWriter(store, actor="tester", redact=redact)
    writer.append(
        "test",
        file=Path(f"/backups/{secret}.tar"),
        raw=secret.encode(),
        nested={"paths": [Path(f"/x/{secret}")]},
        count=3,
    )
    store.seal_audit(wait=True)
    [entry] = store.audit_page()
    assert secret not in repr(entry.detail), entry.detail
    assert entry.detail["file"].startswith("/backups/") and entry.detail["count"] == 3
    assert verify(store.audit_page()).ok
