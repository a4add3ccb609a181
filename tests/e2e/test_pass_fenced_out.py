"""A `--once` pass declared dead (stopped past its lease, its run swept by another pass) that
comes back: its late result is refused (epoch fencing), and its own summary and exit code say
what became of its run, not that it is still running.

Real processes on a fresh PostgreSQL database; the lease is aged with SQL, the command waits
on a file that never comes: the second pass stops it as an orphan (no sleeps).
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.support.cli import spawn
from tests.support.fencing import end_other_sessions, expire_leases, stopped
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_a_pass_fenced_out_of_its_run_reports_the_run_as_it_ended(project, postgres_url):
    p = project
    go = p.root / "go"
    p.task(
        "slow",
        f'command: {p.record("started")}; while [ ! -f "{go}" ]; do sleep 0.05; done; '
        f"{p.record('done')}\n",
    )
    first = spawn("--once", "--state", postgres_url, "-q", "--format", "json", cwd=p.root)
    try:
        wait_until(lambda: "started" in p.ledger_lines(), timeout=30, message="the command")
        stopped(first)
        end_other_sessions(postgres_url)
        expire_leases(postgres_url)
        second = p.run("--once", "--state", postgres_url, "--format", "json", code=1)
        assert [r["status"] for r in second.json()["runs"]] == ["unknown"]
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=60)
    assert store_rows(postgres_url, "SELECT status FROM runs") == [("unknown",)]
    report = json.loads(out)
    assert [r["status"] for r in report["runs"]] == ["unknown"], (out, err)
    assert first.returncode == 1, (out, err)
    assert p.ledger_lines() == ["started"]  # the second pass stopped the orphan: not run again
