"""A pass whose own queue is taken listens for the ends of its runs held elsewhere while its
last runs still run here: a worker's end recorded before the pass's first wait on ends wakes
that wait at once. The listener used to open at that first wait, so an end recorded between
the pass's last re-read and its wait was heard only at the next poll (issue 13, row d: the
pass beside workers ended up to a poll interval after its last run)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.core.state import RunStatus
from tests.support.in_process import InProcessProject

pytestmark = pytest.mark.integration

OTHER = "elsewhere:1:abcdef:0:0"  # a worker's owner string
UNWOKEN = 20.0  # how long a wait that no notification wakes would take


class _WorkerBeside:
    """The pass's store, with a worker that claims run `b` just before the pass's first
    claim, and records its end right after the pass's first re-read that follows the pass's
    own end of `a` (so that re-read does not see it: only the wait after it can)."""

    def __init__(self, store, worker, task_b: str):
        self._store, self._worker, self._task_b = store, worker, task_b
        self.b = None
        self.a_ended = self.b_ended = False
        self.waits: list[bool | None] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _take_b(self) -> None:
        if self.b is None:
            [b] = [r for r in self._store.pending() if r.task == self._task_b]
            self.b = self._worker.claim(b.id, OTHER, datetime.now(UTC))
            self._worker.mark_dispatched(self.b.id, self.b.epoch, datetime.now(UTC))

    def round_batch(self, *args, **kw):  # the engine with a journal
        self._take_b()
        return self._store.round_batch(*args, **kw)

    def claim_batch(self, *args, **kw):  # without one
        self._take_b()
        return self._store.claim_batch(*args, **kw)

    def end_batch(self, *args, **kw):
        batch = self._store.end_batch(*args, **kw)
        self.a_ended = True
        return batch

    def run_changes(self, since=None):
        changes = self._store.run_changes(since)
        if self.a_ended and not self.b_ended:
            self.b_ended = True
            end = self._worker.finish(
                self.b.id, self.b.epoch, RunStatus.SUCCEEDED, datetime.now(UTC)
            )
            assert end.status is RunStatus.SUCCEEDED
        return changes

    def wait_for_ends(self, timeout):
        # Given time to be woken: unwoken, the wait would take UNWOKEN seconds, not a poll.
        self.waits.append(
            self._store.wait_for_ends(max(timeout, UNWOKEN) if not self.waits else timeout)
        )
        return self.waits[-1]


def test_a_worker_end_before_the_pass_waits_wakes_its_wait_at_once(tmp_path, postgres_url):
    p = InProcessProject(tmp_path, postgres_url)
    p.write(
        "tasks/ops/pair.yaml",
        "tasks:\n"
        # Long enough for the pass to see `b` taken and its own queue empty while `a` runs.
        "  - {name: a, machines: [box], priority: 1, command: 'sleep 0.5'}\n"
        "  - {name: b, machines: [box], priority: 2, command: 'true'}\n",
    )
    store, worker = open_store(postgres_url), open_store(postgres_url)
    beside = _WorkerBeside(store, worker, "ops/b")
    try:
        started = datetime.now(UTC)
        report = p.run_pass(beside)
        took = (datetime.now(UTC) - started).total_seconds()
    finally:
        worker.close()
        store.close()
    assert beside.b_ended and beside.waits[:1] == [True]
    assert took < UNWOKEN
    assert {r.task: r.status for r in report.runs.values()} == {
        "ops/a": RunStatus.SUCCEEDED,
        "ops/b": RunStatus.SUCCEEDED,
    }
