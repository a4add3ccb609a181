"""`build_sinks`: the consumers composed, on a real SQLite store and courier. Each event goes
to the audit first: a `started` it refuses reaches no other consumer, so nothing is logged,
counted or alerted for a dispatch that does not happen."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.adapters.audit.writer import AuditWriter
from reconciler.adapters.notify.courier import Courier
from reconciler.core import alerts
from reconciler.core.errors import StoreError
from reconciler.core.redact import Redactor
from reconciler.core.state import RunStatus
from reconciler.pipeline.consumers.logs import LOGGER
from reconciler.pipeline.engine import PassReport
from reconciler.pipeline.events import Event, Kind
from reconciler.pipeline.metrics import Metrics
from reconciler.pipeline.sinks import Journal, build_sinks
from tests.support.event_stream import KeptNotifier, actions, planned, refuse_audit
from tests.support.in_process import InProcessProject


@pytest.fixture
def project(tmp_path):
    p = InProcessProject(tmp_path)
    p.write("teams/ops.yaml", "name: ops\nalerts:\n  - json://127.0.0.1:9/hook\n")
    p.task("first", "true")
    p.task("second", "true")
    return p


def sinks_on(store, desired, notifier, metrics, owner="me"):
    return build_sinks(
        store,
        None,
        desired,
        Redactor(),
        None,
        commit="c0ffee",
        metrics=metrics,
        notifier=notifier,
        owner=owner,
    )


def test_a_start_the_audit_refuses_reaches_no_other_consumer(project, store, caplog):
    desired, (first, second) = planned(project, store)
    refuse_audit(project, "run.claimed")
    notifier, metrics = KeptNotifier(), Metrics()
    sinks = sinks_on(store, desired, notifier, metrics)
    assert isinstance(sinks.audit, AuditWriter) and isinstance(sinks.courier, Courier)
    assert sinks.metrics is metrics and sinks.desired is desired
    assert isinstance(sinks.journal, Journal)
    sinks.pass_started()
    failed = replace(second, status=RunStatus.FAILED, exit_code=4, owner="me")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(StoreError):
            sinks(Event(Kind.STARTED, first))
        sinks(Event(Kind.FINISHED, failed, "exit 4"))  # an end is recorded even so
        with pytest.raises(StoreError, match="could not be written during this pass"):
            sinks.pass_finished(PassReport(plan=None, commit="c0ffee", runs={failed.id: failed}))
    assert sinks.close(10)

    logged = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert not [line for line in logged if line.startswith("started")]
    assert [line for line in logged if line.startswith("finished")]
    assert notifier.titles() == ["reconciler: ops/second failed on box"]
    assert "run.claimed" not in actions(store) and "run.finished" in actions(store)
    text = metrics.text()
    assert 'reconciler_passes_total{result="error"} 1.0' in text  # lost entries: not a success
    assert "reconciler_audit_write_failures_total 1.0" in text
    assert 'reconciler_runs_finished_total{status="failed",team="ops"} 1.0' in text
    assert 'reconciler_alerts_total{event="failed"} 1.0' in text


def test_a_worker_sends_what_waits_in_the_outbox_when_its_runs_start(project, store):
    desired, (first, _) = planned(project, store)
    alert = alerts.unreachable("box", "ops", "refused")
    rows = alerts.deliveries(alert, alerts.targets_for(desired.teams["ops"], alert.event))
    assert store.record_alert(alert, rows, "a-process-that-died", datetime.now(UTC))
    store.release_deliveries("a-process-that-died")
    notifier = KeptNotifier()
    sinks = sinks_on(store, desired, notifier, Metrics(), owner="worker")
    sinks(Event(Kind.STARTED, first, audited=True))  # a worker has no pass to retry at
    assert sinks.close(10)
    assert notifier.titles() == ["reconciler: machine unreachable on box"]
    assert store.outbox_pending() == 0
