"""The pure policy around a command: judging its result and spacing retries (SPEC §2)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from reconciler.executor import Outcome, judge, next_attempt_at
from reconciler.model import RetryPolicy
from reconciler.state import Run, RunStatus
from reconciler.transport.base import Completed

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _run(attempt: int) -> Run:
    return Run(id=1, task="t/a", machine="m", version="v", priority=3,
               status=RunStatus.RUNNING, attempt=attempt)


@pytest.mark.parametrize("attempt, seconds", [(1, 30), (2, 60), (3, 120), (4, 240), (5, 300)])
def test_nth_retry_waits_delay_times_backoff_to_the_n_minus_1_capped_at_max_delay(attempt, seconds):
    policy = RetryPolicy(count=10, delay=30, backoff=2, max_delay=300)
    failed = Outcome(RunStatus.FAILED, exit_code=1)
    assert next_attempt_at(policy, _run(attempt), failed, NOW) == NOW + timedelta(seconds=seconds)


def test_backoff_one_is_a_fixed_delay():
    policy = RetryPolicy(count=3, delay=7, backoff=1, max_delay=600)
    failed = Outcome(RunStatus.FAILED, exit_code=1)
    assert [next_attempt_at(policy, _run(n), failed, NOW) - NOW for n in (1, 2, 3)] == \
        [timedelta(seconds=7)] * 3


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
