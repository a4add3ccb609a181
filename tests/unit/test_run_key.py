"""`run_key`: what tells a run from another store's run of the same id, in a marker's digest."""

from datetime import UTC, datetime, timedelta, timezone

from reconciler.adapters.transport.base import run_key
from reconciler.adapters.transport.wrapper import digest
from reconciler.core.state import Run, RunStatus


def _run(run_id: int, created: datetime | None) -> Run:
    return Run(run_id, "t/deploy", "web", "v1", 0, RunStatus.RUNNING, created_at=created)


def test_the_key_is_the_instant_the_store_created_the_run_in_any_time_zone():
    at = datetime(2026, 12, 7, 3, 4, 5, 123456, tzinfo=UTC)
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert run_key(_run(1, at)) == run_key(_run(1, paris)) == "1@2026-12-07T03:04:05.123456"
    assert run_key(_run(1, at + timedelta(microseconds=1))) != run_key(_run(1, at))
    assert run_key(_run(2, at)) != run_key(_run(1, at))
    assert run_key(_run(1, None)) == ""


def test_another_stores_run_of_the_same_id_and_command_has_another_digest():
    ours = run_key(_run(1, datetime(2026, 12, 7, 3, 0, tzinfo=UTC)))
    theirs = run_key(_run(1, datetime(2026, 12, 6, 9, 0, tzinfo=UTC)))
    assert digest("make deploy", ours) != digest("make deploy", theirs)
    assert digest("make deploy", ours) != digest("make deploy")  # an earlier version's
    assert digest("make deploy", "") == digest("make deploy")
