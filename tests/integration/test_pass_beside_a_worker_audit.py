"""A pass beside a worker on one PostgreSQL queue: a run of the pass that the worker executed
has one `run.finished` entry, the worker's (written with its end). The pass learns how it ended
and reports it, but wrote a second entry of its own, one locked append per run, until issue 13's
review: the audit log said every such run finished twice.

Real processes against the real server; the commands wait on a file the test creates until
both runs are dispatched, so the worker is sure to hold one run of the pass at least (the pass
runs one at a time)."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from reconciler.adapters.store.factory import open_store
from tests.support.cli import spawn
from tests.support.project import Project
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_a_run_of_the_pass_ended_by_a_worker_is_audited_once(tmp_path, postgres_url):
    p = Project(tmp_path)
    go = p.root / "go"
    for name in ("a", "b"):
        p.task(name, f'command: while [ ! -f "{go}" ]; do sleep 0.05; done\n')
    worker = spawn("worker", "--state", postgres_url, "-q", cwd=p.root)
    try:
        once = spawn(
            "--once",
            "--state",
            postgres_url,
            "-q",
            "--format",
            "json",
            "--concurrency",
            "1",
            cwd=p.root,
        )
        wait_until(
            lambda: (
                store_rows(
                    postgres_url, "SELECT count(*) FROM runs WHERE dispatched", while_starting=True
                )
                == [(2,)]
            ),
            timeout=60,
            message="the pass and the worker to hold one run each",
        )
        go.touch()
        out, err = once.communicate(timeout=60)
        assert once.returncode == 0, err
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    owners = dict(store_rows(postgres_url, "SELECT id, owner FROM runs"))
    # The pass runs one at a time: the worker held one at least (both, when it saw them first).
    assert str(worker.pid) in {owner.split(":")[1] for owner in owners.values()}
    store = open_store(postgres_url)
    try:
        store.seal_audit(wait=True)
        finished = Counter(
            e.detail["run"] for e in store.iter_audit() if e.action == "run.finished"
        )
    finally:
        store.close()
    assert finished == {run_id: 1 for run_id in owners}
