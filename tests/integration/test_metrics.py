"""The metrics endpoint, scraped over HTTP on 127.0.0.1, and `status_numbers` (the same
numbers as `reconcile status`)."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.core.errors import InfrastructureError, UsageError
from reconciler.core.plan import make_plan
from reconciler.pipeline.metrics import Metrics, status_numbers
from reconciler.web import listener as web
from reconciler.web.listener import parse_addr
from reconciler.web.prometheus import add_metrics
from tests.support.in_process import InProcessProject

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    """`GET /metrics` as samples: `name{labels}` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.fixture
def metrics():
    return Metrics()


def serve(addr: str, metrics: Metrics) -> web.Listener:
    routes = web.Routes()
    add_metrics(routes, metrics)
    return web.start(addr, routes, web.Access())


@pytest.fixture
def server(metrics):
    running = serve("127.0.0.1:0", metrics)
    yield running
    running.close()


@pytest.fixture
def project(tmp_path) -> InProcessProject:
    p = InProcessProject(tmp_path)
    p.write("teams/web.yaml", "name: web\n")
    p.write("reconciler.yaml", "local_machines: {allow_shared_user: true}\n")  # two teams, one host
    p.write("machines/front.yaml", "name: front\nteam: web\ntransport: local\n")
    p.task("fail", "exit 3")
    p.task("ok", "true", "priority: 1\n")
    p.write("tasks/web/page.yaml", "name: page\nmachines: [front]\ncommand: 'true'\npriority: 5\n")
    return p


def test_queue_depth_by_priority_and_team_is_scraped_while_runs_wait(project, metrics, server):
    store = open_store(project.url)
    try:
        now = datetime.now(UTC)
        store.record_plan(make_plan(project.desired(), store.snapshot(), now), None, now)
        metrics.bind(store, project.desired())
        samples = scrape(server.port)
        assert samples['reconciler_queue_depth{priority="3",team="ops"}'] == 1
        assert samples['reconciler_queue_depth{priority="1",team="ops"}'] == 1
        assert samples['reconciler_queue_depth{priority="5",team="web"}'] == 1
        assert samples['reconciler_queue_depth{priority="2",team="web"}'] == 0
        assert samples["reconciler_runs_running"] == 0
        assert samples['reconciler_runs{status="pending"}'] == 3
        assert samples['reconciler_machine_up{machine="box",team="ops"}'] == 1
        numbers = status_numbers(store, project.desired(), now).to_json()
        assert numbers["queue_depth"] == {"1": 1, "2": 0, "3": 1, "4": 0, "5": 1}
        assert numbers["by_team"] == {"ops": 2, "web": 1}
        assert [m["pending"] for m in numbers["machines"]] == [2, 1]
        metrics.unbind()
    finally:
        store.close()
    assert scrape(server.port)['reconciler_queue_depth{priority="3",team="ops"}'] == 1  # kept


def test_a_pass_shows_in_runs_durations_and_the_last_successful_pass(project, metrics, server):
    store = open_store(project.url)
    try:
        from reconciler.adapters.transport.local import LocalTransport
        from reconciler.core.redact import Redactor
        from reconciler.pipeline.engine import Engine
        from reconciler.pipeline.sinks import build_sinks

        desired = project.desired()
        sinks = build_sinks(
            store, None, desired, Redactor(), None, commit="c0ffee", metrics=metrics
        )
        engine = Engine(store, {"local": LocalTransport(project.root / "m")}, on_event=sinks)
        sinks.pass_started("c0ffee")
        sinks.pass_finished(engine.run_pass(desired, "c0ffee", 10))
        sinks.close(10)
    finally:
        store.close()
    samples = scrape(server.port)
    assert samples['reconciler_runs_finished_total{status="failed",team="ops"}'] == 1
    assert samples['reconciler_runs_finished_total{status="succeeded",team="ops"}'] == 1
    assert samples['reconciler_runs_finished_total{status="succeeded",team="web"}'] == 1
    assert samples['reconciler_run_duration_seconds_count{team="ops"}'] == 2
    assert samples['reconciler_passes_total{result="problems"}'] == 1
    assert samples["reconciler_last_successful_pass_timestamp_seconds"] > 0
    assert samples['reconciler_queue_depth{priority="3",team="ops"}'] == 0
    assert samples["reconciler_runs_failed_last_24h"] == 1
    assert samples["reconciler_audit_write_failures_total"] == 0


def test_metrics_addresses():
    assert parse_addr("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_addr("[::1]:9100") == ("::1", 9100)
    assert parse_addr(":9100") == ("0.0.0.0", 9100)
    for bad in ("9100", "host:", "host:99999", "a:b:c"):
        with pytest.raises(UsageError):
            parse_addr(bad)


def test_a_port_in_use_is_an_infrastructure_error(metrics):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InfrastructureError):
            serve(f"127.0.0.1:{taken.getsockname()[1]}", metrics)


def test_the_example_dashboard_queries_only_metrics_that_exist(metrics, project):
    import json
    import re
    from pathlib import Path

    store = open_store(project.url)
    try:
        metrics.bind(store, project.desired())
        metrics.runs_finished.labels("failed", "ops").inc()
        metrics.run_duration.labels("ops").observe(1)
        metrics.alerts.labels("failed").inc()
        metrics.delivery_failures.labels("ops").inc()
        metrics.pass_ended(0)
        exported = set(re.findall(r"^(reconciler_\w+)", metrics.text(), re.MULTILINE))
    finally:
        store.close()
    dashboard = json.loads(
        (Path(__file__).parents[2] / "examples" / "grafana-dashboard.json").read_text()
    )
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"reconciler_\w+", target["expr"])
    }
    assert queried and queried <= exported
