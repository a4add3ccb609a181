"""One `git commit --amend` must not lock a store out for good (issue 12 item 10): the refusal
says what to do, and `reconcile accept-history COMMIT --reason T` accepts a new line of
history explicitly — audited, and under git.verify only with an admin's signature."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import reconcile
from tests.support.trust_repo import TrustRepo

pytestmark = pytest.mark.integration


def _amend(repo: TrustRepo, signer: str | None, task: str) -> str:
    repo.task("prod", task)
    repo.git("add", "-A")
    repo.git(
        *repo.signing(signer),
        "commit",
        "-q",
        "--amend",
        "-m",
        "amended",
        *(["-S"] if signer else ["--no-gpg-sign"]),
    )
    return repo.git("rev-parse", "HEAD")


def _accept(repo: TrustRepo, commit: str, code: int):
    return reconcile(
        "accept-history",
        commit,
        "--reason",
        "amended the last commit",
        "--state",
        f"sqlite:///{repo.root / 'state.db'}",
        cwd=repo.work,
        check_code=code,
    )


def _audit(repo: TrustRepo) -> list[dict]:
    out = reconcile(
        "audit",
        "export",
        "--state",
        f"sqlite:///{repo.root / 'state.db'}",
        cwd=repo.work,
        check_code=0,
    ).out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_amended_commit_refusal_says_how_to_accept_it_and_accepting_is_audited(tmp_path):
    repo = TrustRepo(tmp_path, verify="none")
    repo.commit(None, "initial")
    repo.once(0)
    amended = _amend(repo, None, "fixed")
    err = repo.once(3)
    assert f"reconcile accept-history {amended[:12]} --reason" in err
    assert not repo.marker("fixed").exists()
    _accept(repo, amended, 0)
    repo.once(0)
    assert repo.marker("fixed").exists()
    accepted = [
        e
        for e in _audit(repo)
        if e.get("kind", e.get("event")) == "history.accepted"
        or "history.accepted" in json.dumps(e)
    ]
    assert accepted and "amended the last commit" in json.dumps(accepted[0])
    repo.task("prod", "later")
    repo.commit(None, "on top")
    repo.once(0)
    assert repo.marker("later").exists()


def test_under_verify_accepting_needs_an_admin_signature(repo):
    amended = _amend(repo, "bob", "fixed")  # a prod operator rewrites the reconciled commit
    assert "accept-history" in repo.once(3)
    assert "needs an admin's signature" in _accept(repo, amended, 3).err
    unsigned = _amend(repo, None, "fixed")
    assert "is not signed" in _accept(repo, unsigned, 3).err
    repo.once(3)
    assert not repo.marker("fixed").exists()
    signed = _amend(repo, "alice", "fixed")
    _accept(repo, signed, 0)
    repo.once(0)
    assert repo.marker("fixed").exists()


def test_an_admin_of_another_team_cannot_accept_a_change_to_prod(repo):
    amended = _amend(repo, "dana", "evil")  # dev's admin, changing prod's tasks
    err = _accept(repo, amended, 3).err
    assert "admin or operator of team prod" in err
    repo.once(3)
    assert not repo.marker("evil").exists()


@pytest.fixture
def repo(tmp_path):
    repo = TrustRepo(tmp_path)
    repo.start()
    return repo


def test_a_reason_that_is_not_utf8_is_refused_and_nothing_is_accepted(tmp_path):
    repo = TrustRepo(tmp_path, verify="none")
    repo.commit(None, "initial")
    repo.once(0)
    amended = _amend(repo, None, "fixed")
    refused = reconcile(
        "accept-history",
        amended,
        "--reason",
        "amended \udcff",  # the byte 0xff, passed to the command as typed
        "--state",
        f"sqlite:///{repo.root / 'state.db'}",
        cwd=repo.work,
        check_code=2,
    )
    assert "--reason is not valid UTF-8 (byte 0xff at character 9)" in refused.err, refused.err
    assert not any("history.accepted" in json.dumps(e) for e in _audit(repo))
    repo.once(3)  # still refused: nothing was accepted
