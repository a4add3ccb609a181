"""The metrics consumer on a real SQLite store: which runs it counts, and what a scrape shows
of passes and of the failures other consumers report."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.core.errors import StoreError
from reconciler.core.state import RunStatus
from reconciler.pipeline.consumers.metrics import MetricsConsumer
from reconciler.pipeline.events import Event, Kind
from reconciler.pipeline.metrics import Metrics
from tests.support.event_stream import planned
from tests.support.in_process import InProcessProject


@pytest.fixture
def project(tmp_path):
    p = InProcessProject(tmp_path)
    for name in ("a", "b", "c", "d"):
        p.task(name, "true")
    return p


def test_it_counts_the_runs_this_process_ended_and_no_other(project, store):
    _, (a, b, c, d) = planned(project, store)
    metrics = Metrics()
    consumer = MetricsConsumer(metrics, store, project.desired, owner="me")
    consumer.bind()
    assert 'reconciler_runs{status="pending"} 4.0' in metrics.text()  # read from the store

    consumer(Event(Kind.FINISHED, replace(a, status=RunStatus.SUCCEEDED, owner="me")))
    consumer(Event(Kind.FINISHED, replace(b, status=RunStatus.FAILED, owner="worker2")))
    consumer(Event(Kind.RETRYING, replace(c, status=RunStatus.PENDING, owner="me")))
    consumer(Event(Kind.RECOVERED, replace(d, status=RunStatus.UNKNOWN, owner="dead")))
    consumer(Event(Kind.RECOVERED, replace(c, status=RunStatus.PENDING, owner="dead")))
    finished = sorted(
        line
        for line in metrics.text().splitlines()
        if line.startswith("reconciler_runs_finished_total") and not line.endswith(" 0.0")
    )
    # worker2 ended b (worker2 counts it); a retry and a requeue are not ends (the other
    # series of the team are there, at 0)
    assert finished == [
        'reconciler_runs_finished_total{status="succeeded",team="ops"} 1.0',
        'reconciler_runs_finished_total{status="unknown",team="ops"} 1.0',
    ]
    consumer.close()


def test_a_pass_that_lost_audit_entries_is_an_error_and_the_failures_are_counted(store):
    metrics = Metrics()
    consumer = MetricsConsumer(metrics, store, lambda: None, owner="me")
    consumer.pass_ended(0)
    consumer.pass_ended(None)  # did not complete, or lost an audit entry
    consumer.audit_failed(StoreError("disk full"))
    text = metrics.text()
    assert 'reconciler_passes_total{result="ok"} 1.0' in text
    assert 'reconciler_passes_total{result="error"} 1.0' in text
    assert "reconciler_audit_write_failures_total 1.0" in text
