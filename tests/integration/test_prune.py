"""`reconcile queue prune --older-than D [--archive FILE]`: old finished runs go, the planner's
memory stays, the audit log goes only into an archive that verifies, and `audit verify` still
holds afterwards (from the anchor the prune leaves)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.cli import prune_cmd
from reconciler.core.errors import UsageError
from reconciler.core.plan import make_plan
from tests.support.in_process import InProcessProject

pytestmark = pytest.mark.integration


def prune(project: InProcessProject, *argv: str) -> tuple[int, str]:
    return project.command(prune_cmd, ("queue", "prune"), *argv)


@pytest.fixture
def project(tmp_path) -> InProcessProject:
    p = InProcessProject(tmp_path)
    p.task("cron", "echo tick", "schedule: '* * * * *'\n")
    p.task("once", "echo once")
    return p


def run_slots(project: InProcessProject, slots: int) -> None:
    """Record and run `slots` runs of the scheduled task (as passes at successive minutes)."""
    from datetime import datetime, timedelta

    for n in range(slots):
        store = open_store(project.url)
        try:
            now = datetime.now(UTC) + timedelta(minutes=n)
            plan = make_plan(project.desired(), store.snapshot(), now)
            store.record_plan(plan, None, now)
            project.run_pass(store)
        finally:
            store.close()


def statuses(project: InProcessProject) -> list[tuple[str, str]]:
    return project.sql("SELECT task, status FROM runs ORDER BY id")


def test_prune_with_an_archive_removes_old_runs_and_audit_and_keeps_what_the_planner_needs(
    project, tmp_path
):
    run_slots(project, 3)
    before = statuses(project)
    assert before.count(("ops/cron", "succeeded")) == 3
    archive = tmp_path / "archive.jsonl.gz"
    code, out = prune(project, "--older-than", "0", "--archive", str(archive))
    assert code == 0 and "pruned 2 runs" in out
    assert statuses(project).count(("ops/cron", "succeeded")) == 1  # the newest is kept
    assert ("ops/once", "succeeded") in statuses(project)
    lines = [json.loads(line) for line in gzip.open(archive, "rt")]
    assert [line["type"] for line in lines].count("run") == 2
    assert lines[0]["output"] == "tick\n"
    assert lines[-1]["type"] == "checkpoint"
    archived = [line for line in lines if line["type"] == "audit"]
    assert archived and lines[-1]["count"] == archived[-1]["seq"]
    kept = project.sql("SELECT MIN(seq) FROM audit_log")[0][0]
    assert kept == archived[-1]["seq"] + 1
    assert project.audit("verify")[0] == 0  # from the anchor
    assert project.audit("verify", "--checkpoint", str(archive))[0] == 0
    assert project.sql("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1") == [
        ("queue.prune",)
    ]
    assert project.run_pass().runs == {}  # nothing re-runs: the planner still knows


def test_prune_without_an_archive_keeps_the_audit_log_whole(project):
    run_slots(project, 2)
    entries = project.sql("SELECT COUNT(*) FROM audit_log")[0][0]
    code, out = prune(project, "--older-than", "0")
    assert code == 0 and "kept whole" in out
    assert project.sql("SELECT MIN(seq) FROM audit_log")[0][0] == 1
    assert project.sql("SELECT COUNT(*) FROM audit_log")[0][0] == entries + 1  # + queue.prune
    assert statuses(project).count(("ops/cron", "succeeded")) == 1


def test_prune_keeps_recent_runs(project):
    run_slots(project, 2)
    code, out = prune(project, "--older-than", "30d", "--format", "json")
    assert code == 0 and json.loads(out)["runs"] == 0
    assert len(statuses(project)) == 3


def test_prune_refuses_to_archive_a_tampered_log(project, tmp_path):
    run_slots(project, 2)
    project.sql("DELETE FROM audit_log WHERE seq = 3")
    from reconciler.adapters.audit.chain import TamperedError

    with pytest.raises(TamperedError) as refused:
        prune(project, "--older-than", "0", "--archive", str(tmp_path / "a.jsonl"))
    assert refused.value.exit_code == 1
    assert len(statuses(project)) == 3 and not (tmp_path / "a.jsonl").exists()


def test_prune_never_overwrites_an_archive(project, tmp_path):
    (tmp_path / "a.jsonl").write_text("precious\n")
    with pytest.raises(UsageError):
        prune(project, "--older-than", "0", "--archive", str(tmp_path / "a.jsonl"))
    assert (tmp_path / "a.jsonl").read_text() == "precious\n"
