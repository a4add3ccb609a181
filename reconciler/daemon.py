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
from typing import Callable

from .errors import ReconcilerError

log = logging.getLogger(__name__)


class Daemon:
    """Calls `tick` every `interval()` seconds (±10% jitter) until `stop` is set.

    `wake` cuts a wait short (a file changed, SIGHUP); `interval` is asked again at every
    wait, so a reload of the settings takes effect at once.
    """

    def __init__(self, tick: Callable[[], object], interval: Callable[[], float]):
        self.tick = tick
        self.interval = interval
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.reload = threading.Event()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: claim nothing new, let running runs finish (within the grace
        period), then exit. SIGHUP: re-read the settings and run a pass now."""
        def stop(signum, frame):
            log.warning("received %s: finishing running runs, then stopping",
                        signal.Signals(signum).name)
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
            try:
                self.tick()
            except ReconcilerError as exc:
                log.error("%s", exc)
            if self.stop.is_set():
                break
            self.wake.wait(self.interval() * random.uniform(0.9, 1.1))
            self.wake.clear()


def watch_files(folder: str, daemon: Daemon) -> threading.Thread:
    """Wake the daemon whenever a file under `folder` changes (watchfiles), until it stops."""
    def run() -> None:
        from watchfiles import watch

        for _changes in watch(folder, stop_event=daemon.stop, debounce=200, rust_timeout=500,
                              yield_on_timeout=False):
            daemon.wake.set()
    thread = threading.Thread(target=run, name="watch-files", daemon=True)
    thread.start()
    return thread
