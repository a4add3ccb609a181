"""The metrics consumer: engine events and the pass around them, as counters and durations.

The only consumer that touches the `Metrics` object: the runs this process ended, the end of
each pass (and its success), and the failures the other consumers report to it (audit
entries not written, alert deliveries that failed, alerts raised). Never raises.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.core import alerts
from reconciler.core.errors import StoreError
from reconciler.core.model import DesiredState
from reconciler.pipeline.events import Event, Kind
from reconciler.pipeline.metrics import Metrics


class MetricsConsumer:
    """Counts for one pass (or worker) on `store`. `owner` must equal the engine's, so that
    runs other workers ended (which a pass on a shared queue also reports) are counted by
    those workers, not twice."""

    def __init__(self, metrics: Metrics, store, desired: Callable[[], DesiredState], *, owner: str):
        self.metrics = metrics
        self.store = store
        self.desired = desired
        self.owner = owner

    def bind(self) -> None:
        """Read the queue's status numbers from the store (a pass or a worker begins)."""
        self.metrics.bind(self.store, self.desired())

    def pass_ended(self, exit_code: int | None, *, refresh: bool = False) -> None:
        """A pass ended with `exit_code` (None: it did not complete, or lost audit entries);
        `refresh` re-reads the status numbers for the scrape that follows."""
        self.metrics.pass_ended(exit_code)
        if refresh:
            self.metrics.refresh()

    def close(self) -> None:
        """Stop reading the store (before it is closed)."""
        self.metrics.unbind(self.store)

    def __call__(self, event: Event) -> None:
        if self._ended_here(event):
            self.metrics.run_finished(event.run)

    def _ended_here(self, event: Event) -> bool:
        """Whether this process gave the run its final status: it finished or blocked it, or
        recovered it as unknown. A pass on a shared queue also reports runs that workers
        ended: the worker counts those."""
        run = event.run
        if event.kind is Kind.RECOVERED:
            return run.status.is_final
        mine = run.owner is None or run.owner == self.owner
        return event.kind in (Kind.FINISHED, Kind.BLOCKED, Kind.HALTED) and mine

    # --- what the other consumers report ---

    def audit_failed(self, error: StoreError) -> None:
        self.metrics.audit_failures.inc()

    def delivery_failed(self, delivery: alerts.Delivery, error: str) -> None:
        self.metrics.delivery_failures.labels(delivery.team).inc()

    def alert_raised(self, alert: alerts.Alert) -> None:
        self.metrics.alerts.labels(alert.event).inc()


__all__ = ["MetricsConsumer"]
