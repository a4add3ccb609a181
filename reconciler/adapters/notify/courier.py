"""The courier: delivers outbox rows from one background thread, never from a pass.

A pass records an alert and its deliveries in the store (the outbox) and hands them to the
courier, which returns at once. The courier's thread resolves each target (a `{vault: NAME}`
URL through the resolver, at every attempt: the URL is never stored), sends it with a timeout,
and records the result: delivered, or failed with the error and the attempt counted, the
claim released so that the next pass (`retry_outbox`) sends it again under the same id. A
delivery that failed `MAX_ATTEMPTS` times is abandoned (logged as an error).

`close(wait_seconds)` waits for the queue to drain at most that long (`--once` waits 10 s);
what is left is released for the next pass. Nothing here raises into a pass: failures are
logged, counted (`on_failure`) and kept.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.adapters.notify.base import DEFAULT_TIMEOUT, Notifier
from reconciler.adapters.store.base import AlertOutbox
from reconciler.adapters.store.common import redact_url
from reconciler.core.alerts import SEVERITY, Delivery
from reconciler.core.errors import NotifyError, ReconcilerError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50  # with one retry per pass: a day of 30 s passes is far more than enough
CLAIM_BATCH = 100

# (team, target descriptor) -> the URL to send to; raises ReconcilerError (VaultError, ...).
TargetResolver = Callable[[str, str], str]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Courier:
    """Sends deliveries in the background; see the module docstring. Thread-safe."""

    def __init__(
        self,
        store: AlertOutbox,
        notifier: Notifier,
        resolve: TargetResolver,
        *,
        owner: str,
        redact: Callable[[str], str] = lambda text: text,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] = utc_now,
        on_failure: Callable[[Delivery, str], None] = lambda d, e: None,
        on_success: Callable[[Delivery], None] = lambda d: None,
    ):
        self.store, self.notifier, self.resolve = store, notifier, resolve
        self.owner, self.redact, self.timeout, self.clock = owner, redact, timeout, clock
        self.on_failure, self.on_success = on_failure, on_success
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy = 0  # queued or being sent
        self._idle = threading.Condition(self._lock)
        self._closed = False

    # --- handing work over ---

    def submit(self, deliveries: list[Delivery]) -> None:
        """Queue deliveries this process claimed (just recorded, or claimed from the outbox)."""
        with self._lock:
            if self._closed or not deliveries:
                return
            self._busy += len(deliveries)
            if self._thread is None:  # started on first use: a pass without alerts has none
                self._thread = threading.Thread(target=self._work, name="alerts", daemon=True)
                self._thread.start()
        for item in deliveries:
            self._queue.put(item)

    def retry_outbox(self) -> int:
        """Claim what waits in the outbox (failed earlier, or left by a process that exited)
        and queue it; returns how many. A store error is logged: alerts never fail a pass."""
        try:
            claimed = self.store.claim_deliveries(self.owner, CLAIM_BATCH)
        except ReconcilerError as exc:
            log.error("cannot read the alert outbox: %s", self.redact(str(exc)))
            return 0
        self.submit(claimed)
        return len(claimed)

    def wait(self, seconds: float) -> bool:
        """Wait until everything queued was attempted, at most `seconds`; True if it was."""
        deadline = time.monotonic() + max(seconds, 0.0)
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, wait_seconds: float = 10.0) -> bool:
        """Wait for the queue at most `wait_seconds`, then stop taking work and release what
        is left for the next pass. True when everything queued was attempted."""
        drained = self.wait(wait_seconds)
        with self._lock:
            self._closed = True
            left = self._busy
        self._queue.put(None)
        if not drained:
            log.warning(
                "%d alert deliveries not attempted before exit; they stay in the "
                "outbox for the next pass",
                left,
            )
            try:
                self.store.release_deliveries(self.owner)
            except ReconcilerError as exc:
                log.error("cannot release alert deliveries: %s", self.redact(str(exc)))
        return drained

    # --- the thread ---

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if not self._closed:
                    self._deliver(item)
            except Exception as exc:  # the courier's top guard: a bug must not stop alerts
                log.error(
                    "alert %s: internal error while delivering: %s", item.id, self.redact(str(exc))
                )
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _deliver(self, item: Delivery) -> None:
        """One attempt: resolve, send, record."""
        try:
            url = self.resolve(item.team, item.target)
            self.notifier.send(
                url, item.title, item.body, severity=_severity(item.event), timeout=self.timeout
            )
        except NotifyError as exc:
            self._failed(item, self.redact(str(exc)) or type(exc).__name__)
            return
        except ReconcilerError as exc:  # the target itself: a missing secret, no identity
            self._failed(item, self.redact(str(exc)) or type(exc).__name__, level=logging.ERROR)
            return
        self._record(lambda: self.store.delivery_done(item.id, self.clock()), item)
        self.on_success(item)

    def _failed(self, item: Delivery, error: str, level: int = logging.WARNING) -> None:
        attempts = item.attempts + 1
        give_up = attempts >= MAX_ATTEMPTS
        target = _shown(item.target)
        if give_up:
            log.error(
                "alert %s (%s) to %s of team %s: giving up after %d attempts: %s",
                item.id,
                item.title,
                target,
                item.team,
                attempts,
                error,
            )
        else:
            log.log(
                level,
                "alert %s (%s) to %s of team %s not delivered (attempt %d): %s; "
                "kept in the outbox for the next pass",
                item.id,
                item.title,
                target,
                item.team,
                attempts,
                error,
            )
        self._record(
            lambda: self.store.delivery_failed(item.id, error, self.clock(), give_up), item
        )
        self.on_failure(item, error)

    def _record(self, write: Callable[[], None], item: Delivery) -> None:
        try:
            write()
        except ReconcilerError as exc:  # e.g. the store closed under a late delivery
            log.warning("alert %s: cannot record its delivery: %s", item.id, self.redact(str(exc)))


def _severity(event: str) -> str:
    return SEVERITY.get(event, "failure")


def _shown(target: str) -> str:
    """A target as logs name it: `{vault: NAME}`, or the URL with any password masked."""
    if target.startswith("vault:"):
        return f"{{vault: {target[len('vault:') :]}}}"
    return redact_url(target[len("url:") :] if target.startswith("url:") else target)


__all__ = ["Courier", "MAX_ATTEMPTS", "TargetResolver"]
