"""`POST /hooks/git` on a real daemon over real HTTP, with real git repositories (issue 17
§3): a push announced by a signed GitHub or GitLab delivery is pulled and planned at once,
though the poll interval is 5 minutes; a bad or missing signature is 401 and logged without
the secret; a replayed delivery starts nothing."""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from reconciler.core.webhooks import github_signature
from tests.support.git_repos import GIT_ENV, Repos
from tests.support.http_daemon import http_daemon
from tests.support.waiting import wait_until

SECRET = "hook-secret-5e1d0c"
# The daemon must act well before its poll: the whole test would wait 5 minutes otherwise.
DEADLINE = 10.0


@pytest.fixture
def repos(tmp_path):
    repos = Repos(tmp_path)
    repos.write("inventory/reconciler.yaml", "poll_interval: 5m\n")
    repos.push("poll slowly")
    return repos


def github_post(daemon, body: bytes, delivery: str, secret: str = SECRET, event="push"):
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(secret, body),
    }
    return daemon.ask("POST", "/hooks/git", body=body, headers=headers)


def push_event(commit: str) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": commit}).encode()


def started_passes(daemon) -> int:
    return daemon.log_text().count("starting a pass")


def test_a_signed_github_push_is_passed_at_once_and_a_replay_is_not(repos):
    env = {**GIT_ENV, "RECONCILE_HOOK_SECRET": SECRET}
    with http_daemon(repos.daemon, env=env) as daemon:
        wait_until(lambda: "a" in repos.ledger_lines(), timeout=60, message="the first pass")
        repos.task("b")
        commit = repos.push("add b")
        delivery = str(uuid.uuid4())
        sent = time.monotonic()
        status, _, body = github_post(daemon, push_event(commit), delivery)
        assert status == 202 and json.loads(body) == {"triggered": True, "delivery": delivery}
        wait_until(lambda: "b" in repos.ledger_lines(), timeout=DEADLINE, message="task b")
        took = time.monotonic() - sent
        print(f"push to run: {took:.2f}s")  # shown with -s; the figure of the report
        # The same delivery again (a replay, or GitHub's "redeliver"): answered, ignored.
        repos.task("c")
        commit = repos.push("add c")
        status, _, body = github_post(daemon, push_event(commit), delivery)
        assert status == 200 and json.loads(body)["triggered"] is False
        assert json.loads(body)["replayed"] is True
        assert started_passes(daemon) == 1, daemon.log_text()
        # A new delivery id does trigger.
        status, _, _ = github_post(daemon, push_event(commit), str(uuid.uuid4()))
        assert status == 202
        wait_until(lambda: "c" in repos.ledger_lines(), timeout=DEADLINE, message="task c")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log_text()
    assert repos.ledger_lines() == ["a", "b", "c"]
    assert SECRET not in daemon.log_text()


def test_a_gitlab_push_with_the_token_is_passed_at_once(repos):
    env = {**GIT_ENV, "RECONCILE_HOOK_SECRET": SECRET}
    with http_daemon(repos.daemon, env=env) as daemon:
        wait_until(lambda: "a" in repos.ledger_lines(), timeout=60, message="the first pass")
        repos.task("b")
        repos.push("add b")
        headers = {
            "X-Gitlab-Event": "Push Hook",
            "X-Gitlab-Token": SECRET,
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        }
        status, _, _ = daemon.ask("POST", "/hooks/git", body=b"{}", headers=headers)
        assert status == 202
        wait_until(lambda: "b" in repos.ledger_lines(), timeout=DEADLINE, message="task b")


def test_bad_or_missing_signatures_are_401_logged_and_start_nothing(repos):
    env = {**GIT_ENV, "RECONCILE_HOOK_SECRET": SECRET}
    with http_daemon(repos.daemon, env=env) as daemon:
        wait_until(lambda: "a" in repos.ledger_lines(), timeout=60, message="the first pass")
        body = push_event("0" * 40)
        status, _, answer = github_post(daemon, body, "d-wrong", secret="not-the-secret")
        assert status == 401 and b"does not match" in answer
        status, _, answer = daemon.ask("POST", "/hooks/git", body=body)
        assert status == 401 and b"X-Hub-Signature-256" in answer
        gitlab = {"X-Gitlab-Token": SECRET[:-1]}
        assert daemon.ask("POST", "/hooks/git", body=body, headers=gitlab)[0] == 401
        assert daemon.ask("GET", "/hooks/git")[0] == 405
        refused = wait_until(
            lambda: daemon.log_text().count("git webhook refused (401)") == 3 or None,
            timeout=DEADLINE,
            message="three refusals logged",
        )
        assert refused and started_passes(daemon) == 0
        # A bad delivery id cannot be used up by a forger: the same id, signed, still counts.
        status, _, _ = github_post(daemon, body, "d-wrong")
        assert status == 202
    log = daemon.log_text()
    assert SECRET not in log and SECRET[:-1] not in log and "not-the-secret" not in log


def test_without_a_secret_the_hook_says_how_to_configure_one(repos):
    with http_daemon(repos.daemon, env=GIT_ENV) as daemon:
        status, _, body = daemon.ask("POST", "/hooks/git", body=b"{}")
        assert status == 404 and b"RECONCILE_HOOK_SECRET" in body and b"http.hook_secret" in body
