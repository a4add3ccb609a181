"""git.verify: commits signed with test SSH keys (gpg.format=ssh), judged against the roles of
the last trusted commit. Real git, real ssh-keygen signatures, `reconcile --once`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import reconcile
from tests.support.trust_repo import SignedGitRepo

pytestmark = pytest.mark.integration


class SignedRepo(SignedGitRepo):
    """Team prod (alice admin, bob operator; mallory has a key and no role), one local machine
    and task `hello`, under git.verify: range."""

    def __init__(self, root: Path):
        super().__init__(root, ("alice", "bob", "mallory"))
        self.write("inventory/reconciler.yaml", "git: {verify: range}\n")
        self.team(admins=["alice"], operators=["bob"])
        self.write("inventory/machines/box.yaml", "name: box\nteam: prod\ntransport: local\n")
        self.write(
            "inventory/tasks/prod/hello.yaml", "name: hello\nmachines: [box]\ncommand: echo hello\n"
        )

    def team(self, admins: list[str], operators: list[str]) -> None:
        members = [f"  - {{name: {n}, role: admin, ssh: {self.public(n)}}}\n" for n in admins]
        members += [
            f"  - {{name: {n}, role: operator, ssh: {self.public(n)}}}\n" for n in operators
        ]
        self.write("inventory/teams/prod.yaml", "name: prod\nmembers:\n" + "".join(members))

    def once(self, code: int, *extra: str) -> str:
        state = f"sqlite:///{self.root / 'state.db'}"
        return reconcile("--once", "--state", state, *extra, cwd=self.work, check_code=code).err


@pytest.fixture
def repo(tmp_path):
    repo = SignedRepo(tmp_path)
    repo.commit("alice", "initial")  # first use: signed by the admin key named as the anchor
    repo.once(0, "--trust-anchor", repo.fingerprint("alice"))
    return repo


def test_first_commit_needs_an_anchor_given_outside_the_repository(tmp_path):
    repo = SignedRepo(tmp_path)
    repo.commit("alice", "initial")
    assert "--trust-anchor" in repo.once(3)


def test_anchor_key_must_be_an_admin_the_first_commit_names(tmp_path):
    repo = SignedRepo(tmp_path)
    repo.commit("bob", "initial")  # bob is only an operator
    assert "does not name that key as an admin" in repo.once(
        3, "--trust-anchor", repo.fingerprint("bob")
    )


def test_anchor_may_be_the_admin_public_key_file(tmp_path):
    repo = SignedRepo(tmp_path)
    repo.commit("alice", "initial")
    repo.once(0, "--trust-anchor", str(repo.keys["alice"].with_suffix(".pub")))


def test_unsigned_commit_is_refused_and_runs_nothing(repo):
    repo.write("inventory/tasks/prod/new.yaml", "name: new\nmachines: [box]\ncommand: echo new\n")
    repo.commit(None)
    err = repo.once(3)
    assert "is not signed" in err and "Traceback" not in err


def test_commit_signed_by_an_unknown_key_is_refused(repo):
    repo.write("inventory/tasks/prod/new.yaml", "name: new\nmachines: [box]\ncommand: echo new\n")
    repo.commit("mallory")
    assert "no team member's ssh: key" in repo.once(3)


def test_operator_may_change_tasks_but_not_the_team_file(repo):
    repo.write("inventory/tasks/prod/new.yaml", "name: new\nmachines: [box]\ncommand: echo new\n")
    repo.commit("bob")
    repo.once(0)
    repo.team(admins=["alice"], operators=["bob", "mallory"])
    repo.commit("bob")
    err = repo.once(3)
    assert "lacks the role" in err and "admin of team prod (inventory/teams/prod.yaml)" in err


def test_a_commit_cannot_make_its_own_signer_an_admin(repo):
    repo.team(admins=["alice", "mallory"], operators=["bob"])
    repo.commit("mallory", "make me admin")
    assert "no team member's ssh: key" in repo.once(3)
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.team(admins=["alice", "bob"], operators=[])
    repo.commit("bob", "promote myself")
    assert "lacks the role" in repo.once(3)


def test_an_admin_may_change_the_team(repo):
    repo.team(admins=["alice"], operators=["bob", "mallory"])
    repo.commit("alice")
    repo.once(0)


def test_range_mode_checks_every_commit_since_the_last_reconciled(repo):
    repo.write("inventory/tasks/prod/a.yaml", "name: a\nmachines: [box]\ncommand: echo a\n")
    repo.commit(None, "unsigned in the middle")
    repo.write("inventory/tasks/prod/b.yaml", "name: b\nmachines: [box]\ncommand: echo b\n")
    repo.commit("alice", "signed on top")
    assert "is not signed" in repo.once(3)
