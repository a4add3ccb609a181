"""`GET /metrics`: the process's Prometheus registry in the text exposition format."""

from __future__ import annotations

from reconciler.pipeline.metrics import Metrics
from reconciler.web.listener import Request, Response, Routes


def add_metrics(routes: Routes, metrics: Metrics, auth: str = "access") -> None:
    """Route `/metrics` to `metrics` (its collectors read the store at each scrape); `auth`
    as for `Routes.add`."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    def scrape(request: Request) -> Response:
        return Response(
            200, {"Content-Type": CONTENT_TYPE_LATEST}, generate_latest(metrics.registry)
        )

    routes.add("GET", "/metrics", scrape, auth=auth)
