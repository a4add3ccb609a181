"""The continuous loop: a pass, a jittered wait, again, until asked to stop.

This is the only place in the reconciler that waits on the clock. A pass that fails on bad
input or a store problem is logged and retried at the next tick: a typo in one commit must not
kill the daemon that will apply its fix.
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
    """Calls `run_once` every `interval` seconds (±10% jitter) until `stop` is set."""

    def __init__(self, run_once: Callable[[threading.Event], object], interval: float):
        self.run_once = run_once
        self.interval = interval
        self.stop = threading.Event()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT: claim nothing new, let running runs finish, then exit."""
        def handler(signum, frame):
            log.warning("received %s: finishing running runs, then stopping",
                        signal.Signals(signum).name)
            self.stop.set()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                self.run_once(self.stop)
            except ReconcilerError as exc:
                log.error("pass failed: %s", exc)
            self.stop.wait(self.interval * random.uniform(0.9, 1.1))
