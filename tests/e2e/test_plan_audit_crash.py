"""A pass killed with -9 right after its plan is recorded (the `after_plan` failpoint) leaves
the plan's `plan.recorded` entry beside the runs it queued: the audit log says who enqueued
every queued run and at which commit, on SQLite and on PostgreSQL (where the entry may wait
in the audit queue until a sealer chains it). The entry is written in the plan's own
transaction; before, it was written in a later one, and a pass killed between the two (under
load, while its runs waited for capacity) left runs in the queue that no entry accounted for,
and a pass whose entry could not be written left its runs queued without one.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.support.git_repos import git
from tests.support.project import Project
from tests.support.store_rows import store_rows

CRASH = {"RECONCILER_FAILPOINTS": "after_plan=crash"}


def _plan_entries(url) -> list[dict]:
    """The details of every `plan.recorded` entry: chained, and (PostgreSQL) still queued."""
    tables = ["audit_log"]
    if str(url).startswith("postgresql://"):
        tables.append("audit_queue")
    found = []
    for table in tables:
        query = f"SELECT detail FROM {table} WHERE action = 'plan.recorded'"
        found += [json.loads(detail) for (detail,) in store_rows(url, query)]
    return found


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def state(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / ".reconciler" / "state.db")
    return request.getfixturevalue("postgres_url")


def test_a_pass_killed_after_recording_its_plan_leaves_an_entry_for_every_queued_run(
    tmp_path, state
):
    p = Project(tmp_path)
    for name in ("a", "b", "c"):
        p.task(name, f"command: {p.record(name)}\n")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "three tasks")
    head = git(tmp_path, "rev-parse", "HEAD")

    killed = p.run("--once", "--state", state, "-q", env=CRASH)
    assert killed.code == -signal.SIGKILL, killed.err
    assert p.ledger_lines() == []  # killed before anything was claimed
    queued = store_rows(state, "SELECT \"commit\", reason FROM runs WHERE status = 'pending'")
    assert len(queued) == 3 and {commit for commit, _ in queued} == {head}
    plans = _plan_entries(state)
    assert len(plans) == 1, "the queued runs have no plan.recorded entry: nobody enqueued them"
    [plan] = plans
    assert (plan["commit"], plan["enqueued"], plan["reasons"]) == (head, 3, {"new": 3})
    assert (plan["cancelled"], plan["cancelled_runs"]) == (0, [])
    p.run("audit", "verify", "--state", state, code=0)

    p.run("--once", "--state", state, "-q", code=0)  # adopts the dead pass's runs
    assert sorted(p.ledger_lines()) == ["a", "b", "c"]
    plans = _plan_entries(state)
    assert [e["enqueued"] for e in plans] == [3, 0]  # the second pass enqueued nothing
    report = p.run("audit", "verify", "--state", state, "--format", "json", code=0).json()
    assert report["unsealed"] == 0


def test_a_plan_whose_entry_cannot_be_written_queues_nothing_and_exits_3(tmp_path):
    """All or nothing: the store refuses `plan.recorded` (as a full disk would refuse any
    write); the pass fails with exit 3, one line and no traceback, and no run is queued
    without its entry."""
    p = Project(tmp_path)
    p.run("--once", "-q", code=0)  # a pass with nothing to do creates the store
    p.task("a", f"command: {p.record('a')}\n")
    store_rows(
        p.state,
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.action = 'plan.recorded' "
        "BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
    )
    failed = p.run("--once", "-q", code=3)
    assert "audit refused" in failed.err and "Traceback" not in failed.err
    assert store_rows(p.state, "SELECT id FROM runs") == []
    assert p.ledger_lines() == []
