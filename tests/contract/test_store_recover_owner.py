"""Recovery spares the runs the recovering process itself holds (`keep_owner`): the daemon
overlaps its passes, and a later pass must not declare an earlier pass's live runs dead.
Every backend (conftest); on PostgreSQL only expired leases are recovered anyway."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from reconciler.adapters.store.common import pid_namespace
from reconciler.core.state import RunStatus
from tests.support.store_contract import add, enqueue


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


# SQLite only (PostgreSQL judges running runs by their lease alone: its holders may be on
# other hosts), so the backend is chosen here rather than skipped there.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_recovers_a_gone_process_at_once_and_spares_a_live_one(store, now, later):
    """SQLite: every process of the store runs on one host, so a holder whose process is
    gone is dead before its lease runs out, and a live one (a pass draining beside the
    recovering one) keeps its runs, whatever its lease says."""
    host = socket.gethostname()
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        alive_run, dead_run, dead_dispatched = add(
            store, now, enqueue(machine="a"), enqueue(machine="b"), enqueue(machine="c")
        )
        store.claim(alive_run.id, f"{host}:{live.pid}:aaaaaa:{pid_namespace()}", now)
        store.claim(dead_run.id, f"{host}:{gone.pid}:bbbbbb:{pid_namespace()}", now)
        claimed = store.claim(
            dead_dispatched.id, f"{host}:{gone.pid}:bbbbbb:{pid_namespace()}", now
        )
        store.mark_dispatched(claimed.id, claimed.epoch, now)
        recovered = store.recover(later(minutes=1), keep_owner=f"{host}:1:cccccc:{pid_namespace()}")
        assert [(r.id, r.status) for r in recovered] == [
            (dead_run.id, RunStatus.PENDING),
            (dead_dispatched.id, RunStatus.UNKNOWN),
        ]
        assert store.get_run(alive_run.id).status is RunStatus.RUNNING
        assert store.sweep(60, later(minutes=1)) == []  # nothing dead is left to sweep
    finally:
        live.communicate(input=b"")
