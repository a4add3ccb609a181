"""The log consumer: one line per event, with the fields `--log-format json` prints."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.core.state import RunStatus
from reconciler.pipeline.consumers.logs import LOGGER, LogConsumer
from reconciler.pipeline.events import Event, Kind
from tests.support.event_stream import planned
from tests.support.in_process import InProcessProject


@pytest.fixture
def run(tmp_path):
    project = InProcessProject(tmp_path)
    project.task("migrate", "true")
    store = open_store(project.url)
    try:
        _, [run] = planned(project, store)
    finally:
        store.close()
    return run


def test_each_event_is_one_line_with_its_fields_a_wait_or_an_outage_none(run, caplog):
    logs = LogConsumer("c0ffee")
    failed = replace(run, status=RunStatus.FAILED, attempt=2, exit_code=4, commit=None)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        logs(Event(Kind.HELD, run, "2030-01-01T00:00:00+00:00"))
        logs(Event(Kind.UNREACHABLE, run, "refused"))  # logged once per machine, with its alert
        logs(Event(Kind.FINISHED, failed, "exit 4"))
    [record] = caplog.records
    assert record.name == "reconciler.pipeline.sinks"  # what JSON lines print as `logger`
    assert record.getMessage() == f"finished ops/migrate on box (run {run.id}, attempt 2): exit 4"
    fields = {k: getattr(record, k) for k in ("task", "machine", "run", "attempt", "status")}
    assert fields == {
        "task": "ops/migrate",
        "machine": "box",
        "run": run.id,
        "attempt": 2,
        "status": "failed",
    }
    assert record.commit == "c0ffee"  # the pass's, for a run that has none of its own


def test_a_run_with_a_commit_of_its_own_is_logged_with_it(run, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        LogConsumer("later").__call__(Event(Kind.ENQUEUED, replace(run, commit="abc123")))
    [record] = caplog.records
    assert record.commit == "abc123" and record.getMessage().startswith("enqueued ops/migrate")
