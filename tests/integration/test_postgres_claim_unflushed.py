"""A PostgreSQL claim batch commits without waiting for its WAL flush, so a server that crashed
may forget it and the run's next claim (another worker's) holds the same epoch. The forgotten
claim's dispatch batch must then mark nothing and send nothing: it names the claim's owner
too, not only its epoch. The crash is played by rewriting the claim as the other worker's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.adapters.store.base import ClaimRequest
from reconciler.adapters.store.factory import open_store
from tests.support.store_contract import add, enqueue
from tests.support.store_rows import store_rows

pytestmark = pytest.mark.integration


def test_a_dispatch_batch_refuses_a_run_another_owner_claimed_at_the_same_epoch(postgres_url):
    now = datetime.now(UTC)
    store = open_store(postgres_url)
    try:
        first, second = add(store, now, enqueue(task="prod/a"), enqueue(task="prod/b"))
        claimed = store.claim_batch([ClaimRequest(first.id), ClaimRequest(second.id)], "w1", now)
        assert [run.epoch for run in claimed.runs] == [1, 1]
        # The server forgot w1's claim of `first`; w2 claimed it since, at epoch 1 again.
        store_rows(postgres_url, "UPDATE runs SET owner = 'w2' WHERE id = %s", first.id)
        batch = store.dispatch_batch(claimed.runs, now)
        assert [run.id for run in batch.runs] == [second.id]
        assert batch.refused == [first.id]
        assert store.get_run(first.id).dispatched is False
    finally:
        store.close()
