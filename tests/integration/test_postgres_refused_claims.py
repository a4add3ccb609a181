"""A claim another holder's run refused (its machine filled up between the pass's read of the
queue and its claim) is not lost: the pass decides on that run again once the re-read shows
it still pending, and runs it when the machine frees up. A refusal no longer makes every
following round decide on the whole queue (a lost race on a shared queue is common: every
drain reads the same head of it), so this is what keeps the refused run in the pass's order.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.core.state import RunStatus
from tests.support.in_process import InProcessProject

pytestmark = pytest.mark.integration

OTHER = "elsewhere:1:abcdef:0:0"  # another worker's owner string


class _Racing:
    """The pass's store, with another holder that claims run `b` (on the same one-slot
    machine as run `a`) just before the pass's first claim, and finishes it at the pass's
    second re-read of the queue after that (by then the pass has seen `a` still pending)."""

    def __init__(self, store, other, task_b: str):
        self._store, self._other, self._task_b = store, other, task_b
        self.b = None
        self.rereads_since = None

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _race(self) -> None:
        if self.b is None:
            [b] = [r for r in self._store.pending() if r.task == self._task_b]
            self.b = self._other.claim(b.id, OTHER, datetime.now(UTC), max_parallel=1)
            assert self.b is not None
            self.rereads_since = 0

    def round_batch(self, *args, **kw):  # the engine with a journal
        self._race()
        return self._store.round_batch(*args, **kw)

    def claim_batch(self, *args, **kw):  # without one
        self._race()
        return self._store.claim_batch(*args, **kw)

    def run_changes(self, since=None):
        if self.rereads_since is not None:
            self.rereads_since += 1
            if self.rereads_since == 2:
                self._other.finish(self.b.id, self.b.epoch, RunStatus.SUCCEEDED, datetime.now(UTC))
        return self._store.run_changes(since)


def test_a_claim_refused_for_a_full_machine_is_run_once_it_frees_up(tmp_path, postgres_url):
    p = InProcessProject(tmp_path, postgres_url)
    p.write("machines/one.yaml", "name: one\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    p.write(
        "tasks/ops/pair.yaml",
        "tasks:\n"
        "  - {name: a, machines: [one], priority: 1, command: 'true'}\n"
        "  - {name: b, machines: [one], priority: 2, command: 'true'}\n",
    )
    store, other = open_store(postgres_url), open_store(postgres_url)
    racing = _Racing(store, other, "ops/b")
    try:
        report = p.run_pass(racing)
    finally:
        other.close()
        store.close()
    assert racing.b is not None and racing.rereads_since >= 2
    rows = {
        task: (status, owner, epoch)
        for task, status, owner, epoch in p.sql("SELECT task, status, owner, epoch FROM runs")
    }
    assert rows["ops/b"] == ("succeeded", OTHER, 1)  # the other holder's
    status, owner, epoch = rows["ops/a"]
    assert (status, epoch) == ("succeeded", 1)  # refused once (nothing claimed), then run
    assert owner != OTHER
    assert report.counts() == {"succeeded": 2}
