"""Git webhook deliveries: is this one signed with our secret, and have we seen it before?

GitHub signs the body: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
GitLab sends the secret itself: `X-Gitlab-Token: <secret>`. Either is compared in constant
time. Each delivery carries an id (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`); a delivery
whose id was already accepted is a replay and triggers nothing. A signed delivery without an
id is refused: the id is not covered by the signature, so a captured delivery replayed with
its id left out would otherwise start a pass each time. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_DELIVERY = "X-GitHub-Delivery"
GITHUB_EVENT = "X-GitHub-Event"
GITLAB_TOKEN = "X-Gitlab-Token"
GITLAB_DELIVERY = "X-Gitlab-Event-UUID"
GITLAB_EVENT = "X-Gitlab-Event"
# A delivery id longer than this is not one a git host sends (they are UUIDs).
MAX_DELIVERY_ID = 128


@dataclass(frozen=True)
class Verdict:
    """`accepted`: signed with the secret. `reason` says why not (never quoting a secret or
    a signature); `provider`, `delivery` and `event` describe the delivery."""

    accepted: bool
    reason: str
    provider: str | None = None
    delivery: str | None = None
    event: str | None = None
    # Refused for want of a delivery id (a malformed delivery), not for its signature.
    without_id: bool = False

    @property
    def triggers(self) -> bool:
        """Whether an accepted delivery should start a pass: every event but GitHub's
        `ping` (sent once when the webhook is created, before any push)."""
        return self.accepted and not (self.provider == "github" and self.event == "ping")


def github_signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body` (also for tests and tools)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def judge_headers(headers: Mapping[str, str], secret: str) -> Verdict | None:
    """The refusal the headers alone decide, before the body is read: no signature header,
    a GitLab token that does not match or no GitLab delivery id (GitLab's token does not
    depend on the body). None when the body is needed (GitHub signs it: its signature is
    judged first, then its id, as `judge` does) or nothing is wrong."""
    if headers.get(GITHUB_SIGNATURE) is not None:
        return None
    verdict = judge(headers, b"", secret)
    return None if verdict.accepted else verdict


def judge(headers: Mapping[str, str], body: bytes, secret: str) -> Verdict:
    """Whether the delivery (`headers` looked up case-insensitively by the caller's mapping)
    is signed with `secret` and carries its id."""
    signature = headers.get(GITHUB_SIGNATURE)
    token = headers.get(GITLAB_TOKEN)
    if signature is not None:
        provider, ids_header = "github", GITHUB_DELIVERY
        delivery, event = headers.get(GITHUB_DELIVERY), headers.get(GITHUB_EVENT)
        expected = github_signature(secret, body)
        good = hmac.compare_digest(signature.strip().encode(), expected.encode())
        reason = "signed" if good else "the X-Hub-Signature-256 signature does not match"
    elif token is not None:
        provider, ids_header = "gitlab", GITLAB_DELIVERY
        delivery, event = headers.get(GITLAB_DELIVERY), headers.get(GITLAB_EVENT)
        good = hmac.compare_digest(token.strip().encode(), secret.encode())
        reason = "signed" if good else "the X-Gitlab-Token does not match"
    else:
        return Verdict(False, "no X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab) header")
    delivery = _printable(delivery)
    if good and delivery is None:
        return _without_id(provider, ids_header, event)
    return Verdict(good, reason, provider, delivery, _printable(event))


def _without_id(provider: str, ids_header: str, event: str | None) -> Verdict:
    return Verdict(
        False,
        f"no {ids_header} header: a delivery without its id could be replayed at will",
        provider,
        None,
        _printable(event),
        without_id=True,
    )


def _printable(value: str | None) -> str | None:
    """A header value fit for a log line and a memory key: stripped, bounded, no controls."""
    if value is None:
        return None
    value = value.strip()[:MAX_DELIVERY_ID]
    return "".join(c for c in value if c.isprintable()) or None


class ReplayGuard:
    """The ids of the last `capacity` accepted deliveries: bounded memory, oldest forgotten
    first. Not thread-safe (the caller holds a lock)."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, provider: str, delivery: str | None) -> bool:
        """True the first time (`provider`, `delivery`) is offered, False for a replay. A
        delivery without an id cannot be told from another: always a first time (`judge`
        refuses such deliveries before they get here)."""
        if not delivery:
            return True
        key = f"{provider}:{delivery}"
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)
