"""On PostgreSQL too, a `--once` pass claims only the runs it enqueued (and those of passes
that died): a second pass beside a busy one runs its own urgent run and ends, leaving the
first pass's queued run to the first pass (review of issue 12.3, finding (a)). Workers still
take any queued run: tests/integration/test_workers.py.
"""

from __future__ import annotations

import json

import pytest

from tests.support.cli import reaped, spawn
from tests.support.project import Project
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _status(url: str, task: str) -> str | None:
    rows = store_rows(
        url, "SELECT status FROM runs WHERE task = %s ORDER BY id DESC", task, while_starting=True
    )
    return rows[0][0] if rows else None


def test_a_second_pass_on_postgresql_leaves_a_live_pass_queued_run_to_it(tmp_path, postgres_url):
    p = Project(tmp_path)
    go, go_theirs = p.root / "go", p.root / "go-theirs"
    p.write(
        "machines/more.yaml",
        "machines:\n"
        "  - {name: slowbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: otherbox, team: ops, transport: local, max_parallel: 1}\n"
        "  - {name: idlebox, team: ops, transport: local, max_parallel: 1}\n",
    )
    p.write(
        "tasks/ops/low.yaml",
        "tasks:\n"
        "  - name: long\n    machines: [slowbox]\n    priority: 5\n"
        f"    command: while [ ! -f '{go}' ]; do sleep 0.05; done\n"
        "  - name: theirs\n    machines: [otherbox]\n    priority: 5\n"
        f"    command: while [ ! -f '{go_theirs}' ]; do sleep 0.05; done; {p.record('theirs')}\n",
    )
    state = ("--state", postgres_url)
    first = spawn("--once", *state, "-q", "--concurrency", "1", "--format", "json", cwd=p.root)
    with reaped(first):
        wait_until(
            lambda: _status(postgres_url, "ops/long") == "running" or first.poll() is not None,
            timeout=60,
            message="the first pass running its long run",
        )
        assert first.poll() is None, first.communicate()
        p.write(
            "tasks/ops/urgent.yaml",
            f"name: urgent\nmachines: [idlebox]\npriority: 1\ncommand: {p.record('urgent')}\n",
        )
        with reaped(spawn("--once", *state, "-q", "--format", "json", cwd=p.root)) as second:
            try:
                wait_until(
                    lambda: second.poll() is not None,
                    timeout=30,
                    message="the second pass to end after its own quick run",
                )
            finally:
                theirs_when_second_ended = _status(postgres_url, "ops/theirs")
                go_theirs.touch()
                go.touch()
            out, err = second.communicate(timeout=60)
        first_out, first_err = first.communicate(timeout=60)
    assert second.returncode == 0, err
    assert {r["task"]: r["status"] for r in json.loads(out)["runs"]} == {"ops/urgent": "succeeded"}
    assert theirs_when_second_ended == "pending"
    first_report = {r["task"]: r["status"] for r in json.loads(first_out)["runs"]}
    assert first_report == {"ops/long": "succeeded", "ops/theirs": "succeeded"}, first_err
    assert sorted(p.ledger_lines()) == ["theirs", "urgent"]
