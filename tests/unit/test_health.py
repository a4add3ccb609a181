"""`/healthz`'s rule (reconciler.core.health), on a made-up clock: healthy while a pass ended
within 3 poll intervals (or the daemon is younger than that) and the store answers."""

from __future__ import annotations

from reconciler.core.health import judge

INTERVAL = 30.0


def test_a_recent_pass_and_an_answering_store_are_healthy():
    health = judge(now=1000, started=0, last_pass_end=990, interval=INTERVAL, store_problem=None)
    assert health.healthy and health.reason == "the last pass ended 10s ago"


def test_a_young_daemon_without_a_pass_yet_is_healthy_then_not():
    assert judge(50, 0, None, INTERVAL, None).healthy
    late = judge(91, 0, None, INTERVAL, None)
    assert not late.healthy
    assert late.reason.startswith("no pass has ended since the daemon started 1m31s ago")


def test_no_pass_for_more_than_three_intervals_is_unhealthy():
    assert judge(1000, 0, 910, INTERVAL, None).healthy  # exactly 3 intervals
    stalled = judge(1000, 0, 909, INTERVAL, None)
    assert not stalled.healthy
    assert stalled.reason == "the last pass ended 1m31s ago (more than 3 poll intervals, 1m30s)"


def test_a_store_that_does_not_answer_is_unhealthy_even_with_fresh_passes():
    health = judge(1000, 0, 999, INTERVAL, "connection refused")
    assert not health.healthy
    # The reason is public (/healthz answers anyone): the store's own error is not in it.
    assert health.reason == "the state store does not answer"
