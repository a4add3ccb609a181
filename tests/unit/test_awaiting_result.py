"""Which `unknown` runs a pass still asks their target about (engine.awaiting_result)."""

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.state import Run, RunStatus
from reconciler.pipeline.engine import NOTHING_KEPT, awaiting_result

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=1)


def run(**fields) -> Run:
    values = dict(
        id=1,
        task="ops/t",
        machine="m",
        version="v",
        priority=3,
        status=RunStatus.UNKNOWN,
        finished_at=NOW - timedelta(hours=1),
        error="connection lost",
    )
    values.update(fields)
    return Run(**values)


def test_a_recent_unknown_run_is_asked_about():
    assert awaiting_result(run(), SINCE)


@pytest.mark.parametrize(
    "fields",
    [
        {"status": RunStatus.FAILED},
        {"finished_at": SINCE - timedelta(seconds=1)},  # its markers are gone by now
        {"finished_at": None},
        {"error": "connection lost" + NOTHING_KEPT},  # the target already said it kept nothing
        {"exit_code": 3},
    ],
)
def test_others_are_not(fields):
    assert not awaiting_result(run(**fields), SINCE)
