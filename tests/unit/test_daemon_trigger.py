"""The daemon loop's wakes (pipeline/daemon.py): `trigger()` cuts the poll wait short, and a
wake the tick could not serve (it returned False: the last pass still planning) is tried
again soon, not at the end of the next poll interval."""

from __future__ import annotations

import threading

from reconciler.pipeline.daemon import Daemon
from tests.support.waiting import wait_until

HOUR = 3600.0


def run(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.serve, daemon=True)
    thread.start()
    return thread


def test_a_trigger_ticks_at_once_instead_of_after_the_interval():
    ticks = []
    daemon = Daemon(lambda: ticks.append(1) or True, lambda: HOUR)
    thread = run(daemon)
    wait_until(lambda: len(ticks) == 1, message="the first tick")
    daemon.trigger()
    wait_until(lambda: len(ticks) == 2, timeout=5, message="the triggered tick")
    daemon.stop.set()
    daemon.wake.set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_wake_the_tick_had_to_defer_is_served_by_a_tick_soon_after():
    planning = threading.Event()  # set: the last pass is still planning
    served = []

    def tick():
        if planning.is_set():
            planning.clear()  # the pass finishes planning just after this tick looked
            return False  # deferred
        served.append(1)
        return True

    daemon = Daemon(tick, lambda: HOUR)
    thread = run(daemon)
    wait_until(lambda: served, message="the first tick")
    planning.set()
    daemon.trigger()
    wait_until(lambda: len(served) == 2, timeout=5, message="the trigger to be served")
    daemon.stop.set()
    daemon.wake.set()
    thread.join(5)


def test_pass_ended_is_on_the_monotonic_clock():
    daemon = Daemon(lambda: True, lambda: HOUR)
    assert daemon.last_pass_end is None
    daemon.pass_ended()
    assert daemon.last_pass_end >= daemon.started
