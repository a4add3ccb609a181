"""Git webhook signatures and replays (reconciler.core.webhooks), without HTTP: GitHub's
HMAC-SHA256 of the body, GitLab's token, and the bounded memory of delivery ids."""

from __future__ import annotations

import hashlib
import hmac

from reconciler.core.webhooks import ReplayGuard, github_signature, judge, judge_headers

SECRET = "It's a Secret to Everybody"
BODY = b'{"ref":"refs/heads/main"}'


def test_github_signature_is_hmac_sha256_of_the_body_in_hex():
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert github_signature(SECRET, BODY) == "sha256=" + expected
    # GitHub's documented example (webhooks "validating deliveries"): secret, body, digest.
    assert github_signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_a_good_github_delivery_is_accepted_with_its_id_and_event():
    headers = {
        "X-Hub-Signature-256": github_signature(SECRET, BODY),
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "push",
    }
    verdict = judge(headers, BODY, SECRET)
    assert verdict.accepted and verdict.triggers and verdict.provider == "github"
    assert verdict.delivery == "72d3162e-cc78-11e3-81ab-4c9367dc0958" and verdict.event == "push"


def test_a_github_ping_is_accepted_but_starts_no_pass():
    headers = {
        "X-Hub-Signature-256": github_signature(SECRET, BODY),
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "d-ping",
    }
    verdict = judge(headers, BODY, SECRET)
    assert verdict.accepted and not verdict.triggers


def test_a_body_changed_after_signing_or_another_secret_is_refused():
    signature = github_signature(SECRET, BODY)
    for headers, body, secret in (
        ({"X-Hub-Signature-256": signature}, BODY + b" ", SECRET),
        ({"X-Hub-Signature-256": signature}, BODY, SECRET + "x"),
        ({"X-Hub-Signature-256": signature.replace("sha256=", "sha1=")}, BODY, SECRET),
        ({"X-Hub-Signature-256": ""}, BODY, SECRET),
    ):
        verdict = judge(headers, body, secret)
        assert not verdict.accepted and not verdict.triggers
        assert "does not match" in verdict.reason and SECRET not in verdict.reason


def test_gitlab_sends_the_token_itself():
    headers = {"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "u1"}
    verdict = judge(headers, BODY, SECRET)
    assert verdict.accepted and verdict.triggers and verdict.provider == "gitlab"
    assert verdict.delivery == "u1"
    wrong = judge({**headers, "X-Gitlab-Token": "guess"}, BODY, SECRET)
    assert not wrong.accepted and "X-Gitlab-Token does not match" in wrong.reason


def test_no_signature_at_all_is_refused_saying_what_was_expected():
    verdict = judge({"X-GitHub-Delivery": "d"}, BODY, SECRET)
    assert not verdict.accepted
    assert "X-Hub-Signature-256" in verdict.reason and "X-Gitlab-Token" in verdict.reason


def test_a_signed_delivery_without_an_id_is_refused_as_such():
    """The id is not signed: without one, a captured delivery could be replayed at will."""
    github = {"X-Hub-Signature-256": github_signature(SECRET, BODY), "X-GitHub-Event": "push"}
    gitlab = {"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Push Hook"}
    for headers, needed in ((github, "X-GitHub-Delivery"), (gitlab, "X-Gitlab-Event-UUID")):
        verdict = judge(headers, BODY, SECRET)
        assert not verdict.accepted and verdict.without_id and needed in verdict.reason
    # A bad signature is said first, id or not (401, not 400).
    forged = judge({**github, "X-Hub-Signature-256": "sha256=0"}, BODY, SECRET)
    assert not forged.accepted and not forged.without_id


def test_what_the_headers_alone_refuse_is_refused_without_the_body():
    assert "X-Hub-Signature-256" in judge_headers({}, SECRET).reason
    wrong = judge_headers({"X-Gitlab-Token": "guess", "X-Gitlab-Event-UUID": "u"}, SECRET)
    assert "X-Gitlab-Token does not match" in wrong.reason
    assert judge_headers({"X-Gitlab-Token": SECRET}, SECRET).without_id
    assert judge_headers({"X-Gitlab-Token": SECRET, "X-Gitlab-Event-UUID": "u"}, SECRET) is None
    # GitHub signs the body: only the body can tell, whatever the signature header holds.
    assert judge_headers({"X-Hub-Signature-256": "sha256=0"}, SECRET) is None


def test_a_delivery_id_is_bounded_and_stripped_of_control_characters():
    headers = {"X-Gitlab-Token": SECRET, "X-Gitlab-Event-UUID": "a\nb" + "c" * 500}
    delivery = judge(headers, BODY, SECRET).delivery
    assert "\n" not in delivery and len(delivery) <= 128


def test_a_replayed_delivery_is_seen_once_and_memory_stays_bounded():
    guard = ReplayGuard(capacity=3)
    assert guard.first_time("github", "d1")
    assert not guard.first_time("github", "d1")
    assert guard.first_time("gitlab", "d1")  # another host's ids are another space
    for n in range(2, 10):
        assert guard.first_time("github", f"d{n}")
    assert len(guard) == 3
    assert guard.first_time("github", "d1")  # forgotten, oldest first
    assert not guard.first_time("github", "d9")


def test_a_delivery_without_an_id_always_counts():
    guard = ReplayGuard()
    assert guard.first_time("gitlab", None) and guard.first_time("gitlab", None)
    assert len(guard) == 0
