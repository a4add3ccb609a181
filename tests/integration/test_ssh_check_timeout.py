"""Over real sshd: a check that does not answer within the task's `timeout` fails the run and
its command never runs; `timeout` bounds check and command together (issue 12.9)."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration


def _seconds(run: dict) -> float:
    start, end = (
        datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at")
    )
    return (end - start).total_seconds()


def test_ssh_check_that_hangs_fails_the_run_and_bounds_the_whole_run(tmp_path, sshd, client_key):
    # The key from the team vault; runs one after another, as on a machine without max_parallel.
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key, max_parallel=1)
    p.task("hung", f"timeout: 1\ncheck: sleep 30\ncommand: {p.record('hung-ran')}\n")
    p.task(
        "slow", f"timeout: 5\ncheck: sleep 4; exit 1\ncommand: {p.record('slow-ran')}; sleep 30\n"
    )
    data = p.run("--once", "--format", "json", "--identity", str(p.key), code=1).json()
    runs = {r["task"]: r for r in data["runs"]}
    assert runs["ops/hung"]["status"] == "failed"
    assert "check" in runs["ops/hung"]["error"], runs["ops/hung"]
    assert runs["ops/slow"]["status"] == "failed"
    assert "timed out after 5s" in runs["ops/slow"]["error"], runs["ops/slow"]
    assert _seconds(runs["ops/slow"]) < 8, runs["ops/slow"]  # at least 9 s before
    assert p.ledger_lines() == ["slow-ran"]
