"""Approvals, the two-person rule (issue 15 §3), through the CLI on SQLite and PostgreSQL.

Real git commits signed with real `ssh-keygen` ed25519 keys (tests/support/trust_repo.py):
team prod has two admins (alice, dana), an operator (bob) and a viewer (valerie); mallory is
nobody. Every task's command creates a marker file, so a test proves what ran.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.support.cli import reconcile, spawn
from tests.support.trust_repo import TrustRepo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

APPROVAL = "approval: {role: admin, count: %d}\n"


class Approvals:
    """A TrustRepo whose store is `url`, with helpers for passes and approvals."""

    def __init__(self, tmp_path, url: str):
        self.repo = TrustRepo(tmp_path)
        self.repo.team("prod", admins=["alice", "dana"], operators=["bob"], viewers=["valerie"])
        self.url = url
        self.repo.commit("alice", "initial")
        self.cli(0, "--once", "--trust-anchor", self.repo.fingerprint("alice"))

    def cli(self, code: int, *args: str):
        return reconcile(*args, "--state", self.url, cwd=self.repo.work, check_code=code)

    def approve(self, code: int, who: str, task: str = "prod/deploy", *extra: str):
        return self.cli(code, "approve", task, "--key", str(self.repo.keys[who]), *extra)

    def waiting(self) -> list[dict]:
        return json.loads(self.cli(0, "approvals", "--format", "json").out)["waiting"]

    def audit(self, action: str) -> list[dict]:
        """The details of the audit entries of `action`, oldest first."""
        lines = [json.loads(line) for line in self.cli(0, "audit", "export").out.splitlines()]
        return [e["detail"] for e in lines if e.get("type") == "audit" and e["action"] == action]


@pytest.fixture(params=["sqlite", "postgres"])
def approvals(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    return Approvals(tmp_path, url)


def test_a_run_waits_for_an_admin_approval_then_runs(approvals):
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    repo.commit("alice", "deploy, needs an approval")
    comment = approvals.cli(0, "diff", "HEAD~1", "HEAD", "--format", "markdown").out
    assert "awaiting approval (0 of 1 admin approval)" in comment  # the PR comment says so
    held = approvals.cli(0, "--once", "--format", "json")
    (run,) = [r for r in json.loads(held.out)["runs"] if r["task"] == "prod/deploy"]
    assert run["status"] == "pending"
    assert "awaiting approval (0 of 1 admin approval)" in json.dumps(run)
    assert not repo.marker("deploy").exists()
    (item,) = approvals.waiting()
    assert (item["task"], item["role"], item["count"]) == ("prod/deploy", "admin", 1)
    assert [m["machine"] for m in item["machines"]] == ["box"]
    text = approvals.cli(0, "approvals").out
    assert "prod/deploy" in text and item["version"] in text

    err = approvals.approve(0, "dana", "prod/deploy", "--version", item["version"]).err
    assert "approved version" in err and repo.fingerprint("dana") in err
    assert approvals.waiting() == []
    (entry,) = approvals.audit("approval.given")
    assert entry["task"] == "prod/deploy" and entry["version"] == item["version"]
    assert entry["signer"] == repo.fingerprint("dana") and entry["role"] == "admin"
    assert list(entry["machines"]) == ["box"]
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()


def test_refused_approvals_exit_2_with_why_and_change_nothing(approvals):
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    repo.commit("alice", "deploy, needs an approval")
    approvals.cli(0, "--once")
    before = approvals.waiting()
    cases = [
        ("mallory", (), "no team member's ssh: key"),
        ("valerie", (), "is viewer of team prod"),
        ("bob", (), "is operator of team prod"),
        ("alice", (), "signed commit"),
        ("dana", ("--version", "0123456789abcdef"), "is not the version"),
        ("dana", ("--machine", "devbox"), "'devbox' is no target of task 'prod/deploy'"),
    ]
    for who, extra, why in cases:
        result = approvals.approve(2, who, "prod/deploy", *extra)
        assert why in result.err, (who, result.err)
        assert "Traceback" not in result.err
    assert "no task 'prod/nope'" in approvals.approve(2, "dana", "prod/nope").err
    assert "asks for none" in approvals.approve(2, "dana", "prod/hello").err
    assert approvals.waiting() == before
    assert approvals.audit("approval.given") == []
    approvals.cli(0, "--once")
    assert not repo.marker("deploy").exists()


def test_the_author_cannot_approve_when_another_commit_landed_on_top(approvals):
    """Under verify: range one pass takes in several commits: the signer of each of them,
    not only of the last, brought what it queues."""
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    change = repo.commit("alice", "deploy, needs an approval")
    repo.task("prod", "other")
    repo.commit("bob", "an unrelated task on top")
    approvals.cli(0, "--once")  # reconciles both commits at once
    refused = approvals.approve(2, "alice")
    assert f"signed commit {change[:12]}, which brought this version" in refused.err
    approvals.approve(0, "dana")
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()


def test_a_key_added_with_the_change_cannot_approve_it(approvals):
    """An admin's commit that brings the version and a second admin key of her own (mallory's
    key, standing in for it) together: the new key is a member in the last reconciled commit,
    but was not before the change, so it cannot be the second person."""
    repo = approvals.repo
    repo.team("prod", admins=["alice", "dana", "mallory"], operators=["bob"], viewers=["valerie"])
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    repo.commit("alice", "deploy, and a new admin key")
    approvals.cli(0, "--once")
    refused = approvals.approve(2, "mallory")
    assert "a key added with the change cannot approve it" in refused.err
    assert "Traceback" not in refused.err
    assert approvals.audit("approval.given") == []
    approvals.approve(0, "dana")
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()


def test_count_2_needs_two_different_members(approvals):
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 2)
    repo.commit("bob", "deploy, needs two admins")
    approvals.cli(0, "--once")
    approvals.approve(0, "alice")
    again = approvals.approve(0, "alice")
    assert "already approved" in again.err
    (item,) = approvals.waiting()
    assert item["machines"][0]["approvals"] == 1
    held = approvals.cli(0, "--once", "--format", "json").out
    assert "awaiting approval (1 of 2 admin approvals)" in held
    assert not repo.marker("deploy").exists()
    status = approvals.cli(0, "status", "--format", "json").out
    assert "awaiting approval (1 of 2 admin approvals)" in status
    approvals.approve(0, "dana")
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()
    signers = [e["signer"] for e in approvals.audit("approval.given")]
    assert signers == [repo.fingerprint("alice"), repo.fingerprint("dana")]


def test_a_new_version_needs_new_approvals(approvals):
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    repo.commit("bob", "deploy v1")
    approvals.cli(0, "--once")
    (first,) = approvals.waiting()
    approvals.approve(0, "alice")
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()
    repo.marker("deploy").unlink()

    repo.write(
        "inventory/tasks/prod/deploy.yaml",
        f"name: deploy\nmachines: [box]\ncommand: touch {repo.marker('deploy')} && echo v2\n"
        + APPROVAL % 1,
    )
    repo.commit("bob", "deploy v2")
    held = approvals.cli(0, "--once", "--format", "json").out
    assert "awaiting approval (0 of 1 admin approval)" in held
    assert not repo.marker("deploy").exists()
    (second,) = approvals.waiting()
    assert second["version"] != first["version"]
    refused = approvals.approve(2, "dana", "prod/deploy", "--version", first["version"])
    assert "is not the version" in refused.err
    approvals.approve(0, "dana", "prod/deploy", "--version", second["version"])
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()


def _deploy_v1_approved_and_run(approvals) -> None:
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    repo.commit("bob", "deploy v1")
    approvals.cli(0, "--once")
    approvals.approve(0, "alice")
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()
    repo.marker("deploy").unlink()


def _deploy_v2(repo, rule: str = "") -> None:
    repo.write(
        "inventory/tasks/prod/deploy.yaml",
        f"name: deploy\nmachines: [box]\ncommand: touch {repo.marker('deploy')} && echo v2\n"
        + rule,
    )


@pytest.mark.parametrize(
    "lowered", ["", "approval: {role: operator, count: 1}\n"], ids=["removed", "to-operator"]
)
def test_lowering_the_rule_in_the_changing_commit_does_not_spare_its_version(approvals, lowered):
    """The commit that changes the command cannot lower the rule its version must meet: the
    rule of the commit reconciled before it still counts, for as long as that version waits,
    in every pass, in `approvals` and in `approve`."""
    repo = approvals.repo
    _deploy_v1_approved_and_run(approvals)
    _deploy_v2(repo, lowered)
    repo.commit("bob", "deploy v2, and no admin needed any more")
    comment = approvals.cli(0, "diff", "HEAD~1", "HEAD", "--format", "markdown").out
    assert "awaiting approval (0 of 1 admin approval)" in comment  # the PR comment says so
    held = approvals.cli(0, "--once", "--format", "json").out
    assert "awaiting approval (0 of 1 admin approval)" in held
    approvals.cli(0, "--once")  # the next pass of the same commit holds it too
    assert not repo.marker("deploy").exists()
    (item,) = approvals.waiting()
    assert (item["role"], item["count"]) == ("admin", 1)
    if lowered:  # an operator would do by the new rule; the old one wants an admin
        assert "is operator of team prod" in approvals.approve(2, "bob").err
    approvals.approve(0, "dana")
    approvals.cli(0, "--once")
    assert repo.marker("deploy").exists()


def test_a_rule_lowered_by_a_commit_reconciled_before_the_change_takes_effect(approvals):
    repo = approvals.repo
    _deploy_v1_approved_and_run(approvals)
    repo.task("prod", "deploy")  # the same command: no new version, only the rule goes
    repo.commit("alice", "deploy needs no approval any more")
    approvals.cli(0, "--once")
    assert not repo.marker("deploy").exists()  # nothing new to run
    _deploy_v2(repo)
    repo.commit("bob", "deploy v2")
    runs = json.loads(approvals.cli(0, "--once", "--format", "json").out)["runs"]
    assert [r["status"] for r in runs if r["task"] == "prod/deploy"] == ["succeeded"]
    assert repo.marker("deploy").exists()
    assert approvals.waiting() == []


def test_an_approval_row_written_into_the_store_by_hand_counts_for_nothing(tmp_path):
    """A pass checks every stored signature again: a v1 approval copied onto v2 (a replay)
    and a row with a made-up signature leave v2 held."""
    import sqlite3

    approvals = Approvals(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    repo.commit("bob", "deploy v1")
    approvals.cli(0, "--once")
    approvals.approve(0, "alice")
    approvals.cli(0, "--once")
    repo.write(
        "inventory/tasks/prod/deploy.yaml",
        f"name: deploy\nmachines: [box]\ncommand: touch {repo.marker('deploy')}.v2\n"
        + APPROVAL % 1,
    )
    repo.commit("bob", "deploy v2")
    approvals.cli(0, "--once")
    (waiting,) = approvals.waiting()
    v2 = waiting["machines"][0]["version"]
    with sqlite3.connect(tmp_path / "state.db") as db:
        columns = 'task, machine, fingerprint, role, "commit", signature, approved_at'
        db.execute(
            f"INSERT INTO approvals (version, {columns}) SELECT ?, {columns} FROM approvals",
            (v2,),
        )
        db.execute(
            f"INSERT INTO approvals (version, {columns}) SELECT ?, task, machine, ?, role, "
            '"commit", ?, approved_at FROM approvals LIMIT 1',
            (v2, repo.fingerprint("dana"), "-----BEGIN SSH SIGNATURE-----\nAAAA\n"),
        )
    (still,) = approvals.waiting()
    assert still["machines"][0]["approvals"] == 0
    approvals.cli(0, "--once")
    assert not (tmp_path / "ran-deploy.v2").exists()
    approvals.approve(0, "dana")
    approvals.cli(0, "--once")
    assert (tmp_path / "ran-deploy.v2").exists()


def test_a_worker_starts_what_an_approval_given_while_it_runs_completes(tmp_path, postgres_url):
    approvals = Approvals(tmp_path, postgres_url)
    repo = approvals.repo
    repo.task("prod", "deploy", extra=APPROVAL % 1)
    repo.commit("bob", "deploy, needs an approval")
    approvals.cli(0, "--once")  # queues the run, held
    worker = spawn("worker", "--state", postgres_url, cwd=repo.work)
    try:
        approvals.approve(0, "alice")
        wait_until(
            lambda: repo.marker("deploy").exists() or worker.poll() is not None,
            timeout=60,
            message="the worker to run the approved version",
        )
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert repo.marker("deploy").exists(), err


def _inventory(tmp_path, approval: str):
    """A one-team inventory (one admin with an ssh: key) whose task has `approval`."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJuv01peA2bSw4eUQcpKFgdLVjwbV8okLtTCRl8VfhuX a"
    root = tmp_path / "inventory"
    (root / "teams").mkdir(parents=True)
    (root / "machines").mkdir()
    (root / "tasks" / "ops").mkdir(parents=True)
    (root / "teams" / "ops.yaml").write_text(
        f"name: ops\nmembers:\n  - {{name: a, role: admin, ssh: {key}}}\n"
    )
    (root / "machines" / "box.yaml").write_text("name: box\nteam: ops\ntransport: local\n")
    (root / "tasks" / "ops" / "t.yaml").write_text(
        f'name: t\nmachines: [box]\ncommand: "true"\napproval: {approval}\n'
    )
    return tmp_path


@pytest.mark.parametrize(
    ("approval", "where", "why"),
    [
        ("{role: viewer}", "t.yaml:4:18", "approval.role must be one of admin, operator"),
        ("{role: owner}", "t.yaml:4:18", "approval.role must be one of admin, operator"),
        ("{role: admin, count: 0}", "t.yaml:4:32", "approval.count must be at least 1"),
        ("{count: 1}", "t.yaml:4:11", "approval needs 'role'"),
    ],
)
def test_a_malformed_approval_is_a_located_error(tmp_path, approval, where, why):
    result = reconcile("validate", cwd=_inventory(tmp_path, approval), check_code=2)
    assert f"{where}: {why}" in result.err and "Traceback" not in result.err


def test_an_approval_count_the_team_cannot_reach_is_a_warning(tmp_path):
    result = reconcile("validate", cwd=_inventory(tmp_path, "{role: admin, count: 2}"))
    assert result.code == 0
    assert "t.yaml:4:11: warning: task 'ops/t' needs 2 admin approvals" in result.err
    strict = reconcile("validate", "--strict", cwd=tmp_path, check_code=2)
    assert "needs 2 admin approvals" in strict.err
