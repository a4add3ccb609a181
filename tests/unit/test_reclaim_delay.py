"""After a claim was refused part of what it asked for, a drain looks again at once, then
backs off (issue 13 row d: an idle worker whose claim lost the race to the other workers woken
by the same plan waited a whole poll interval with free slots)."""

from __future__ import annotations

from reconciler.pipeline.engine import EAGER_POLL_SECONDS, POLL_SECONDS, _reclaim_delay


def test_the_first_refusal_looks_again_at_once():
    assert _reclaim_delay(1) == 0.0


def test_refusals_in_a_row_back_off_to_the_poll_interval():
    delays = [_reclaim_delay(n) for n in range(2, 12)]
    assert delays[0] == EAGER_POLL_SECONDS
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert delays[-1] == POLL_SECONDS
