"""`POST /hooks/git`: a GitHub or GitLab push webhook that starts a pass now.

The delivery is checked against the webhook secret (reconciler.core.webhooks), not the
listener's access rule: a git host has no bearer token. A bad or missing signature is 401
and logged (who sent it and why, never the secret or the signature); a delivery without an
id is 400; a delivery whose id was already accepted is answered 200 and triggers nothing; an
accepted one 202 once `trigger()` has been called. What the headers alone refuse (no
signature header, a wrong GitLab token, no id) is refused before the body is read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from reconciler.core.webhooks import ReplayGuard, Verdict, judge, judge_headers
from reconciler.web.listener import Request, Response, Routes

log = logging.getLogger(__name__)

PATH = "/hooks/git"


def add_git_hook(
    routes: Routes, secret: Callable[[], str | None], trigger: Callable[[], None]
) -> None:
    """Route `POST /hooks/git`; `secret()` is the webhook secret as now configured (asked at
    each delivery: a reload may rotate it). Without one it answers 404 saying how to
    configure one."""
    guard, lock = ReplayGuard(), threading.Lock()

    def precheck(request: Request) -> Response | None:
        current = secret()
        if current is None:
            return _unconfigured()
        verdict = judge_headers(request.headers, current)
        return None if verdict is None else _refused(request, verdict)

    def hook(request: Request) -> Response:
        current = secret()
        if current is None:
            return _unconfigured()
        verdict = judge(request.headers, request.body, current)
        if not verdict.accepted:
            return _refused(request, verdict)
        with lock:
            first = guard.first_time(verdict.provider, verdict.delivery)
        if not first:
            log.warning(
                "git webhook: %s delivery %s was already received; ignored",
                verdict.provider,
                verdict.delivery,
            )
            return Response.json(
                200, {"triggered": False, "replayed": True, "delivery": verdict.delivery}
            )
        if not verdict.triggers:
            return Response.json(200, {"triggered": False, "event": verdict.event})
        # At the daemon's notice level (as SIGHUP's reload): who started this pass, and why.
        log.warning(
            "git webhook: %s %s delivery %s: starting a pass",
            verdict.provider,
            verdict.event or "event",
            verdict.delivery or "without an id",
        )
        trigger()
        return Response.json(202, {"triggered": True, "delivery": verdict.delivery})

    routes.add("POST", PATH, hook, auth="self", precheck=precheck)


def _unconfigured() -> Response:
    return Response.json(
        404,
        {
            "error": "no webhook secret is configured: set http.hook_secret in "
            "reconciler.yaml or RECONCILE_HOOK_SECRET on the host"
        },
    )


def _refused(request: Request, verdict: Verdict) -> Response:
    status = 400 if verdict.without_id else 401
    log.warning(
        "git webhook refused (%d) from %s: %s (delivery %s)",
        status,
        request.client,
        verdict.reason,
        verdict.delivery or "without an id",
    )
    return Response.json(status, {"error": verdict.reason})
