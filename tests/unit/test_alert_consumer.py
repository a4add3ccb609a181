"""The alert consumer on a real SQLite store, with a real courier and outbox (the notifier
keeps what it is sent): what alerts, and how often."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.adapters.audit.writer import AuditWriter
from reconciler.adapters.notify.courier import Courier
from reconciler.core.state import RunStatus
from reconciler.pipeline.consumers.alerts import AlertConsumer, AlertTargets
from reconciler.pipeline.events import Event, Kind
from tests.support.event_stream import KeptNotifier, actions, planned
from tests.support.in_process import InProcessProject

HOOK = "json://127.0.0.1:9/hook"


@pytest.fixture
def project(tmp_path):
    p = InProcessProject(tmp_path)
    p.write("teams/ops.yaml", f"name: ops\nalerts:\n  - {HOOK}\n")
    p.task("migrate", "true")
    return p


@pytest.fixture
def notifier():
    return KeptNotifier()


@pytest.fixture
def consumer(project, store, notifier):
    writer = AuditWriter(store, actor="test")
    courier = Courier(store, notifier, AlertTargets(writer, None), owner="test-owner")
    raised = []
    consumer = AlertConsumer(store, project.desired, courier, writer, on_alert=raised.append)
    consumer.raised = raised
    yield consumer
    courier.close(10)


def sent(consumer, notifier) -> list[str]:
    assert consumer.courier.wait(10), "deliveries still pending after 10 s"
    return notifier.titles()


def test_an_unreachable_machine_alerts_once_until_a_run_on_it_answers(
    project, store, consumer, notifier
):
    _, [run] = planned(project, store)
    consumer(Event(Kind.UNREACHABLE, run, "connection refused"))
    consumer(Event(Kind.UNREACHABLE, run, "connection refused"))  # every other run on it
    assert sent(consumer, notifier) == ["reconciler: machine unreachable on box"]
    consumer.machine_unreachable("box", "connection refused")  # the transport says so too
    assert sent(consumer, notifier) == ["reconciler: machine unreachable on box"]
    assert actions(store).count("alert.unreachable") == 1
    assert len(consumer.raised) == 1  # what the metrics count
    assert store.unreachable_machines() == {"box"}

    # A run that came back with an exit code: the machine answers again.
    answered = replace(run, status=RunStatus.SUCCEEDED, exit_code=0, owner="test-owner")
    consumer(Event(Kind.FINISHED, answered))
    assert store.unreachable_machines() == set()
    consumer.machine_unreachable("box", "timed out")
    assert sent(consumer, notifier) == ["reconciler: machine unreachable on box"] * 2


def test_a_failed_run_alerts_once_even_when_its_end_is_seen_twice(
    project, store, consumer, notifier
):
    _, [run] = planned(project, store)
    consumer.commit = "c0ffee"
    failed = replace(run, status=RunStatus.FAILED, exit_code=4, error="exit 4", owner="x")
    consumer(Event(Kind.STARTED, run))  # not an end: nothing to say
    consumer(Event(Kind.FINISHED, failed, "exit 4"))
    consumer(Event(Kind.FINISHED, failed, "exit 4"))  # a restart, another reconciler
    assert sent(consumer, notifier) == ["reconciler: ops/migrate failed on box"]
    assert store.outbox_pending() == 0  # delivered, not left for a later pass


def test_a_refused_commit_alerts_once_and_each_refusal_is_audited(store, consumer, notifier):
    consumer.commit_refused("badc0ffee", "not signed by an admin")
    consumer.commit_refused("badc0ffee", "not signed by an admin")  # the next poll
    consumer.commit_refused(None, "no commit: nothing to alert about")
    assert sent(consumer, notifier) == ["reconciler: commit badc0ffee refused"]
    assert actions(store).count("commit.refused") == 2
