"""Review of issue 17 §2-3 (the daemon's HTTP listener, its access rule, `/hooks/git`),
through a real daemon over real HTTP on 127.0.0.1 with real git repositories. Each test is
a defect found by the review, each now fixed (they were xfail(strict) until then)."""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from reconciler.core.webhooks import github_signature
from tests.support.git_repos import GIT_ENV, Repos
from tests.support.http_daemon import http_daemon
from tests.support.raw_http import (
    answer_before_the_body_ends,
    chunked,
    exchange,
    request,
    statuses,
)
from tests.support.sshd import free_port
from tests.support.vault_project import vault_set, vaulted_http
from tests.support.waiting import wait_until

SECRET = "review-hook-secret-61c2"
TOKEN = "review-token-0f3a9e"
# What a request's body holds when it is itself a request: it must never be answered.
SMUGGLED = request("GET", "/healthz")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon with a token and a webhook secret, polling slowly (only hooks wake it)."""
    repos = Repos(tmp_path_factory.mktemp("review17"))
    repos.write("inventory/reconciler.yaml", "poll_interval: 5m\n")
    repos.push("poll slowly")
    env = {**GIT_ENV, "RECONCILE_HOOK_SECRET": SECRET, "RECONCILE_HTTP_TOKEN": TOKEN}
    with http_daemon(repos.daemon, env=env) as served:
        wait_until(lambda: "a" in repos.ledger_lines(), timeout=60, message="the first pass")
        yield served


def signed_push(delivery: str | None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": github_signature(SECRET, body),
    }
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return body, headers


@pytest.mark.parametrize(
    ("method", "path", "refused_with"),
    [
        ("POST", "/healthz", 405),  # a known path, another method
        ("GET", "/hooks/git", 405),  # a body on a GET: nginx's `location /hooks/git` lets it in
        # Under the access rule, no token (GET: a POST to /metrics is 405, the method being
        # judged before the access; the body is what matters here).
        ("GET", "/metrics", 401),
        ("POST", "/hooks/gitx", 404),  # no route
    ],
)
def test_a_refused_requests_body_is_never_answered_as_a_request(daemon, method, path, refused_with):
    sent = request(method, path, {"Connection": "keep-alive"}, body=SMUGGLED)
    received = exchange(daemon.address, sent)
    # One request, one answer: the body's bytes are a body, whatever they look like.
    assert statuses(received) == [refused_with], received.decode(errors="replace")


def test_a_keep_alive_client_gets_its_answer_after_a_refused_post(daemon):
    """The refused request's body is read: a client that reuses its connection (Prometheus,
    a browser, `requests.Session`) gets a real answer to its next request (control: a
    request whose body the listener does read)."""
    body, headers = signed_push(None)
    sent = request("POST", "/hooks/git", {**headers, "X-Hub-Signature-256": "sha256=0"}, body)
    received = exchange(daemon.address, sent + request("GET", "/healthz"))
    assert statuses(received) == [401, 200], received.decode(errors="replace")


def test_a_signed_push_sent_chunked_is_accepted_or_refused_as_chunked(daemon):
    body, headers = signed_push(str(uuid.uuid4()))
    sent = request("POST", "/hooks/git", {**headers, "Transfer-Encoding": "chunked"})
    received = exchange(daemon.address, sent + chunked(body))
    # Either the body is read (202) or chunked bodies are refused as such (411 Length
    # Required): never a signature said not to match, never a second answer.
    assert statuses(received) in ([202], [411]), received.decode(errors="replace")


def test_a_captured_delivery_replayed_without_its_id_does_not_start_passes(daemon):
    body, headers = signed_push(None)
    first = daemon.ask("POST", "/hooks/git", body=body, headers=headers)[0]
    again = daemon.ask("POST", "/hooks/git", body=body, headers=headers)[0]
    # GitHub and GitLab always send an id: one missing is refused, or the body's replay
    # is recognised; either way the replay does not start another pass.
    assert again != 202, (first, again, daemon.log_text()[-2000:])


def test_healthz_says_the_store_does_not_answer_without_saying_where_it_is(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    port = free_port()
    store = f"postgresql://svc_reconciler_r17@127.0.0.1:{port}/reconciler_r17"
    env = {"RECONCILE_STATE": store, "RECONCILE_HTTP_TOKEN": TOKEN}
    with http_daemon(project.root, "--watch-files", env=env) as served:
        status, _, body = wait_until(
            lambda: (found := served.ask("GET", "/healthz"))[0] == 503 and found,
            timeout=60,
            message="/healthz to see the store",
        )
        answer = json.loads(body)
        assert answer["reason"].startswith("the state store does not answer"), answer
        # Who asks without the token learns that the store does not answer, not its address
        # or account (those are in the daemon's log, for the operator).
        for detail in ("svc_reconciler_r17", str(port), "reconciler_r17"):
            assert detail not in answer["reason"], answer


def test_a_token_rotated_in_the_vault_takes_effect_on_reload(vaulted):
    project = vaulted
    old, new = "console-token-old-5a1", "console-token-new-9d7"
    old_hook, new_hook = "hook-secret-old-3c8", "hook-secret-new-7e2"
    env = vaulted_http(project, old, old_hook)
    with http_daemon(project.root, "--watch-files", env=env) as served:

        def admitted(token: str) -> bool:
            headers = {"Authorization": f"Bearer {token}"}
            return served.ask("GET", "/metrics", headers=headers)[0] == 200

        def hook_status(secret: str) -> int:
            body = b"{}"
            headers = {
                "X-GitHub-Event": "ping",  # accepted, starts no pass
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": github_signature(secret, body),
            }
            return served.ask("POST", "/hooks/git", body=body, headers=headers)[0]

        assert admitted(old) and hook_status(old_hook) == 200
        # The old token leaked: the operator rotates it and tells the daemon to reload.
        vault_set(project, "ops", "CONSOLE_TOKEN", new, project.alice)
        vault_set(project, "ops", "GIT_HOOK", new_hook, project.alice)
        served.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloading settings" in served.log_text(), message="the reload")
        wait_until(lambda: admitted(new), timeout=30, message="the new token to be admitted")
        assert not admitted(old)
        assert hook_status(new_hook) == 200 and hook_status(old_hook) == 401
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) == 0, served.log_text()
    for value in (old, new, old_hook, new_hook):
        assert value not in served.log_text()


@pytest.mark.parametrize(
    "signature",
    [{}, {"X-Gitlab-Token": "not-the-secret"}],
    ids=["no-signature-header", "wrong-gitlab-token"],
)
def test_an_unsigned_delivery_is_refused_before_its_body_is_awaited(daemon, signature):
    head = request(
        "POST",
        "/hooks/git",
        {**signature, "Content-Length": str(1024 * 1024)},
        body=b"x" * 1024,  # the first KiB of a MiB that is never sent in full
    )
    received = answer_before_the_body_ends(daemon.address, head, timeout=10)
    assert statuses(received) == [401], received
