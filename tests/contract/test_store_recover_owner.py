"""Recovery spares the runs the recovering process itself holds (`keep_owner`): the daemon
overlaps its passes, and a later pass must not declare an earlier pass's live runs dead.
Every backend (conftest); on PostgreSQL only expired leases are recovered anyway."""

from __future__ import annotations

from reconciler.core.state import RunStatus
from tests.contract.test_store import add, enqueue


def test_recover_spares_runs_claimed_by_the_keep_owner_and_recovers_the_dead(
    store, raw, now, later
):
    mine, dead = add(store, now, enqueue(machine="a"), enqueue(machine="b"))
    mine = store.claim(mine.id, "host:1", now)
    store.mark_dispatched(mine.id, mine.epoch, now)
    dead = store.claim(dead.id, "host:2", now)
    store.mark_dispatched(dead.id, dead.epoch, now)
    raw.expire_all_leases()
    recovered = store.recover(later(minutes=1), keep_owner="host:1")
    assert [(r.id, r.status) for r in recovered] == [(dead.id, RunStatus.UNKNOWN)]
    assert store.get_run(mine.id).status is RunStatus.RUNNING
