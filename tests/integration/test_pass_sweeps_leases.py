"""A `--once` pass on PostgreSQL resolves the runs of a pass that was killed while it drains,
instead of waiting forever on a run nobody holds any more (issue 12.1).

Real processes against a fresh database; the dead run's lease is aged with SQL, never slept on.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.support.cli import spawn
from tests.support.project import Project
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _statuses(url: str) -> dict[str, str]:
    return dict(store_rows(url, "SELECT task, status FROM runs"))


def test_once_on_postgresql_sweeps_a_killed_pass_run_whose_lease_expires_and_ends(
    tmp_path, postgres_url
):
    p = Project(tmp_path)
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    go = p.root / "go"
    p.task("slow", f'command: {p.record("started")}; while [ ! -f "{go}" ]; do sleep 0.05; done\n')
    first = spawn("--once", "--state", postgres_url, "-q", cwd=p.root)
    try:
        wait_until(
            lambda: "started" in p.ledger_lines() or first.poll() is not None,
            timeout=30,
            message="the first pass to start its command",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    # New work on the same machine (max_parallel 1) while the dead run still holds its lease.
    p.task("urgent", f"priority: 1\ncommand: {p.record('urgent')}\n")
    second = spawn("--once", "--state", postgres_url, "-q", "--format", "json", cwd=p.root)
    try:
        wait_until(
            lambda: (
                _statuses(postgres_url).get("ops/urgent") == "pending" or second.poll() is not None
            ),
            timeout=30,
            message="the second pass to record its plan",
        )
        assert second.poll() is None, second.communicate()
        # The dead pass's lease runs out (by the database's clock) while the second drains.
        store_rows(
            postgres_url,
            "UPDATE runs SET heartbeat_at = now() - interval '1 hour' WHERE status = 'running'",
        )
        out, err = second.communicate(timeout=60)
    finally:
        second.kill()
        go.touch()
    assert "urgent" in p.ledger_lines(), err
    assert _statuses(postgres_url) == {"ops/slow": "unknown", "ops/urgent": "succeeded"}
    # A pass reports (and exits by) its own runs: the killed pass's run it swept is audited and
    # alerted as `unknown`, and the store says so, but it is not this pass's outcome.
    assert second.returncode == 0, err
    reported = {run["task"] for run in json.loads(out)["runs"]}
    assert reported == {"ops/urgent"}, out
    assert p.ledger_lines().count("started") == 1
