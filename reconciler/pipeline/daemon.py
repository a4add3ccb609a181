"""The continuous loop: sync the source, a pass, a jittered wait, again, until asked to stop.

This is the only place in the reconciler that waits on the clock. A tick that fails (a bad
commit, a refused force-push, a store hiccup) is logged and the loop goes on: a typo in one
commit must not kill the daemon that will apply its fix.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable

from reconciler.core.errors import ReconcilerError

log = logging.getLogger(__name__)

# The longest the main thread sleeps in one piece. The kernel hands a process's signal to any
# of its threads that does not block it (the file watcher's, a pass's), and Python runs the
# handler only when the *main* thread next executes Python code: a main thread asleep in one
# long wait slept through SIGTERM (the poll interval, an hour). Waking this often is free and
# bounds how late a stop or a reload is noticed.
SIGNAL_CHECK_SECONDS = 0.5
# How soon a tick that had to wait for the last pass to plan is tried again.
DEFERRED_RETRY_SECONDS = 0.1


def wait_or_wake(event: threading.Event, seconds: float | None) -> bool:
    """`event.wait(seconds)` (None: no limit) in slices, so that signal handlers run on time
    whichever thread caught the signal; True when the event was set."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not event.is_set():
        left = SIGNAL_CHECK_SECONDS if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return False
        event.wait(min(left, SIGNAL_CHECK_SECONDS))
    return True


def join_awake(thread: threading.Thread) -> None:
    """`thread.join()` in slices (see SIGNAL_CHECK_SECONDS): a second SIGTERM/SIGINT sent
    while the daemon waits for its passes must still be handled."""
    while thread.is_alive():
        thread.join(SIGNAL_CHECK_SECONDS)


class Daemon:
    """Calls `tick` every `interval()` seconds (±10% jitter) until `stop` is set.

    `wake` cuts a wait short (a push, a file changed, SIGHUP); `interval` is asked again at
    every wait, so a reload of the settings takes effect at once. `tick` returns False when
    it could not serve the wake yet (the last pass still planning): the loop then comes back
    within DEFERRED_RETRY_SECONDS, not a whole interval later, so a reload or a push that
    came while a pass planned is not lost until the next poll.
    """

    def __init__(self, tick: Callable[[], bool], interval: Callable[[], float]):
        self.tick = tick
        self.interval = interval
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.reload = threading.Event()
        self.started = time.monotonic()
        self.last_pass_end: float | None = None  # monotonic; read by /healthz

    def trigger(self) -> None:
        """Pull and plan now (a push was announced), not at the end of the wait."""
        self.wake.set()

    def pass_ended(self) -> None:
        self.last_pass_end = time.monotonic()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: claim nothing new, let running runs finish (within the grace
        period), then exit. SIGHUP: re-read the settings and run a pass now."""

        def stop(signum, frame):
            log.warning(
                "received %s: finishing running runs, then stopping", signal.Signals(signum).name
            )
            self.stop.set()
            self.wake.set()

        def hangup(signum, frame):
            log.warning("received SIGHUP: reloading settings")
            self.reload.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hangup)

    def serve(self) -> None:
        while not self.stop.is_set():
            served = True
            try:
                served = self.tick()
            except ReconcilerError as exc:
                log.error("%s", exc)
            if self.stop.is_set():
                break
            wait = self.interval() * random.uniform(0.9, 1.1)
            if not served:
                wait = min(wait, DEFERRED_RETRY_SECONDS)
            wait_or_wake(self.wake, wait)
            self.wake.clear()


def watch_files(folder: str, daemon: Daemon) -> threading.Thread:
    """Wake the daemon whenever a file under `folder` changes (watchfiles), until it stops."""

    def run() -> None:
        from watchfiles import watch

        for _changes in watch(
            folder, stop_event=daemon.stop, debounce=200, rust_timeout=500, yield_on_timeout=False
        ):
            daemon.wake.set()

    thread = threading.Thread(target=run, name="watch-files", daemon=True)
    thread.start()
    return thread
