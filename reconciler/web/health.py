"""`GET /healthz`: 200 while the daemon is healthy, 503 with the reason otherwise (a JSON
body: `healthy`, `reason`, and what the probe adds). Open to anyone: it tells whether passes
keep ending and the store answers, nothing more."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.core.health import Health
from reconciler.web.listener import Request, Response, Routes


def add_health(routes: Routes, probe: Callable[[], tuple[Health, dict]]) -> None:
    def healthz(request: Request) -> Response:
        health, details = probe()
        body = {**details, "healthy": health.healthy, "reason": health.reason}
        return Response.json(200 if health.healthy else 503, body)

    routes.add("GET", "/healthz", healthz, auth="open")
