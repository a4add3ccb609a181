"""The pure policy around a command: judging its result and spacing retries (SPEC §2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.adapters.transport.base import Completed
from reconciler.core.model import RetryPolicy
from reconciler.core.state import Run, RunStatus
from reconciler.pipeline.executor import Outcome, judge, next_attempt_at

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _run(attempt: int) -> Run:
    return Run(
        id=1,
        task="t/a",
        machine="m",
        version="v",
        priority=3,
        status=RunStatus.RUNNING,
        attempt=attempt,
    )


@pytest.mark.parametrize("attempt, seconds", [(1, 30), (2, 60), (3, 120), (4, 240), (5, 300)])
def test_nth_retry_waits_at_least_delay_times_backoff_to_the_n_minus_1_capped(attempt, seconds):
    policy = RetryPolicy(count=10, delay=30, backoff=2, max_delay=300)
    failed = Outcome(RunStatus.FAILED, exit_code=1)
    wait = (next_attempt_at(policy, _run(attempt), failed, NOW) - NOW).total_seconds()
    low = seconds if seconds < 300 else 150  # at the cap the spread reaches down to half of it
    assert low <= wait <= min(3 * seconds, 300)
    assert policy.delay_after(attempt) == seconds  # without a seed: the bare schedule


def test_retry_waits_are_spread_across_runs_and_the_same_for_the_same_run_and_attempt():
    policy = RetryPolicy(count=3, delay=60, backoff=2, max_delay=3600)
    failed = Outcome(RunStatus.FAILED, exit_code=1)

    def wait(run_id: int, attempt: int) -> float:
        run = Run(
            id=run_id,
            task="t/a",
            machine="m",
            version="v",
            priority=3,
            status=RunStatus.RUNNING,
            attempt=attempt,
        )
        return (next_attempt_at(policy, run, failed, NOW) - NOW).total_seconds()

    waits = [wait(run_id, 1) for run_id in range(1, 201)]
    assert all(60 <= w <= 180 for w in waits)
    assert len({round(w) for w in waits}) > 80  # 200 runs failing together do not retry together
    assert max(waits) - min(waits) > 100
    assert wait(7, 1) == wait(7, 1) and wait(7, 1) != wait(7, 2)


def test_at_the_cap_retries_stay_spread_and_never_exceed_max_delay():
    policy = RetryPolicy(count=20, delay=60, backoff=2, max_delay=600)
    waits = [policy.delay_after(10, f"{run_id}:10") for run_id in range(100)]
    assert all(300 <= w <= 600 for w in waits) and max(waits) - min(waits) > 200


def test_a_zero_delay_stays_zero():
    assert RetryPolicy(count=2, delay=0).delay_after(1, "1:1") == 0


def test_count_retries_follow_the_first_attempt_then_the_failure_is_final():
    policy = RetryPolicy(count=2, delay=1)
    failed = Outcome(RunStatus.FAILED, exit_code=1)
    assert next_attempt_at(policy, _run(2), failed, NOW) is not None
    assert next_attempt_at(policy, _run(3), failed, NOW) is None


def test_success_and_non_retryable_failures_never_retry():
    policy = RetryPolicy(count=5, delay=1)
    assert next_attempt_at(policy, _run(1), Outcome(RunStatus.SUCCEEDED), NOW) is None
    assert next_attempt_at(policy, _run(1), Outcome(RunStatus.SKIPPED), NOW) is None
    assert next_attempt_at(policy, _run(1), Outcome(RunStatus.FAILED, retryable=False), NOW) is None


def test_judge_maps_exit_codes_and_timeouts():
    assert judge(Completed(0, "ok\n", 0.1), 60).status is RunStatus.SUCCEEDED
    failed = judge(Completed(3, "boom\n", 0.1), 60)
    assert (failed.status, failed.exit_code, failed.error) == (RunStatus.FAILED, 3, "exit code 3")
    timed_out = judge(Completed(None, "partial", 60.0, timed_out=True), 90)
    assert timed_out.status is RunStatus.FAILED and timed_out.exit_code is None
    assert timed_out.error.startswith("timed out after 1m30s")
