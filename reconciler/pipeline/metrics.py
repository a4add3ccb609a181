"""Metrics: the numbers of `reconcile status`, and the same numbers for Prometheus.

`status_numbers(store, desired, now)` computes what `reconcile status` shows (queue depth by
priority and team, running runs, recent failures, runs by status, machines and whether they
are reachable, deny-window holds, the alert outbox). `Metrics` exports those numbers, read
from the store at every scrape while a store is bound (during a pass, or a worker's life) and
kept from the last reading between passes, plus what only a running process sees: runs
finished by final status, run durations, alerts and failed deliveries, audit write failures,
passes and the time of the last successful one. `reconciler.web.prometheus` answers
`GET /metrics` with them on the daemon's listener (`--http-addr`, `--metrics-addr`).

Exported (all `reconciler_*`):

    reconciler_queue_depth{priority,team}                    gauge: pending runs
    reconciler_runs_running                                  gauge: running runs
    reconciler_runs{status}                                  gauge: runs in the store by status
    reconciler_runs_failed_last_24h                          gauge: failed/blocked/unknown in 24 h
    reconciler_machine_up{machine,team}                      gauge: 0 after an unreachable alert
    reconciler_alert_outbox_pending                          gauge: deliveries waiting
    reconciler_runs_finished_total{status,team}              counter: final statuses seen here
    reconciler_run_duration_seconds{team}                    histogram: start to end of a run
    reconciler_alerts_total{event}                           counter: alerts raised
    reconciler_alert_delivery_failures_total{team}           counter: failed delivery attempts
    reconciler_audit_write_failures_total                    counter
    reconciler_passes_total{result}                          counter: ok | problems | error
    reconciler_last_successful_pass_timestamp_seconds        gauge: end of the last pass that
                                                             completed (exit 0 or 1)

Every label value known in advance has its series from the start, at 0 (issue 19): results
and alert events at once, statuses and teams as soon as an inventory is known (`know`), so
`increase()` and `rate()` see the first event of a series as an increase rather than as the
series appearing. The last successful pass has no series until there is one: Prometheus
reads an absent series as "no data", never as the epoch (alert with `absent()` on it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.adapters.store.base import StateStore
from reconciler.core.alerts import EVENTS as ALERT_EVENTS
from reconciler.core.dispatch import held_dependents, prioritised
from reconciler.core.errors import ReconcilerError
from reconciler.core.holds import Hold, HoldKind, hold_of
from reconciler.core.model import DesiredState
from reconciler.core.plan import rollout_stands
from reconciler.core.state import Run, RunStatus

log = logging.getLogger(__name__)

PRIORITIES = ("1", "2", "3", "4", "5")
PASS_RESULTS = ("ok", "problems", "error")
# Alert events: the runs' and machines' (core.alerts.EVENTS) and a refused commit's.
ALERT_EVENT_LABELS = (*ALERT_EVENTS, "refused")
# The statuses a run can end with (`reconciler_runs_finished_total{status}`).
FINAL_STATUSES = tuple(s.value for s in RunStatus if s.is_final)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- the numbers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusNumbers:
    """What `reconcile status` reports; `to_json` is its JSON (SPEC §4, fields added only)."""

    queue_depth: dict[tuple[str, str], int] = field(default_factory=dict)  # (priority, team)
    running: int = 0
    failed_last_24h: int = 0
    runs: dict[str, int] = field(default_factory=dict)  # by status
    held: list[dict[str, Any]] = field(default_factory=list)
    machines: list[dict[str, Any]] = field(default_factory=list)
    outbox_pending: int = 0
    rollouts: list[dict[str, Any]] = field(default_factory=list)  # not done: `Stand.to_json`

    def depth_by_priority(self) -> dict[str, int]:
        depth = {p: 0 for p in PRIORITIES}
        for (priority, _), n in self.queue_depth.items():
            depth[priority] = depth.get(priority, 0) + n
        return depth

    def depth_by_team(self) -> dict[str, int]:
        teams: dict[str, int] = {}
        for (_, team), n in self.queue_depth.items():
            teams[team] = teams.get(team, 0) + n
        return dict(sorted(teams.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "queue_depth": self.depth_by_priority(),
            "by_team": self.depth_by_team(),
            "running": self.running,
            "failed_last_24h": self.failed_last_24h,
            "held": self.held,
            "machines": self.machines,
            "runs": dict(self.runs),
            "alert_outbox": self.outbox_pending,
            "rollouts": self.rollouts,
        }


def status_numbers(store: StateStore | None, desired: DesiredState, now: datetime) -> StatusNumbers:
    """The numbers of `reconcile status` (a store of None: no runs yet). Raises `StoreError`."""
    pending: list[Run] = []
    running: list[Run] = []
    failed, counts, down, outbox = 0, {s.value: 0 for s in RunStatus}, set(), 0
    if store is not None:
        pending, running = store.pending(), store.running()
        failed = store.failed_since(now - timedelta(hours=24))
        counts = store.counts()
        down = store.unreachable_machines()
        outbox = store.outbox_pending()
    # Each pending run at the priority the dispatcher uses: its task's priority in git now,
    # inherited along `after` (not the priority stored when it was enqueued).
    depth: dict[tuple[str, str], int] = {}
    priorities: dict[int, int] = {}
    holds: dict[int, Hold] = {}
    for run, priority in prioritised(pending, desired):
        key = (str(priority), run.team)
        depth[key] = depth.get(key, 0) + 1
        priorities[run.id] = priority
        hold = hold_of(run.task, run.machine, priority, desired, now)
        if hold is not None and hold.kind is not HoldKind.RETRY:
            holds[run.id] = hold
    stands = _rollouts(store, desired, now)
    for run in pending:  # a run of a rollout's later batch, or of one in its pause
        stand = stands.get(run.task)
        if run.id not in holds and stand is not None:
            hold = stand.halted_hold() if stand.halted else stand.hold_for(run.machine)
            if hold is not None:
                holds[run.id] = hold
    if holds:  # a run waiting for a held dependency is held too
        holds = held_dependents(pending, holds, desired)
    held = [
        {
            "run": run.id,
            "task": run.task,
            "machine": run.machine,
            "priority": priorities[run.id],
            "until": _iso(hold.until) if hold.until is not None else None,
            "kind": hold.kind.value,
            "reason": hold.describe(),
        }
        for run in pending
        if (hold := holds.get(run.id)) is not None
    ]
    held.sort(key=lambda h: h["run"])
    return StatusNumbers(
        depth,
        len(running),
        failed,
        counts,
        held,
        _machines(desired, pending, running, down),
        outbox,
        [stands[task].to_json() for task in sorted(stands) if not stands[task].done],
    )


def _rollouts(store: StateStore | None, desired: DesiredState, now: datetime) -> dict:
    """Where the rollout of each task that has one stands (read only when one has)."""
    tasks = [task for task, spec in desired.tasks.items() if spec.rollout is not None]
    if store is None or not tasks:
        return {}
    return rollout_stands(tasks, desired, store.snapshot(), now)


def _machines(
    desired: DesiredState, pending: list[Run], running: list[Run], down: set[str]
) -> list[dict[str, Any]]:
    on_machine: dict[str, list[int]] = {}
    for index, runs in enumerate((running, pending)):
        for run in runs:
            on_machine.setdefault(run.machine, [0, 0])[index] += 1
    return [
        {
            "name": m.name,
            "team": m.team,
            "transport": m.transport,
            "running": on_machine.get(m.name, [0, 0])[0],
            "pending": on_machine.get(m.name, [0, 0])[1],
            "up": m.name not in down,
        }
        for m in sorted(desired.machines.values(), key=lambda m: m.name)
    ]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- Prometheus ---------------------------------------------------------------------------------------


class Metrics:
    """One process's metrics, in a registry of its own (tests make as many as they like).

    What the sinks observe is counted in plain Python (`_Family`); prometheus_client, and the
    http.server its exposition loads, are imported only when the numbers are exported: the
    registry is built by `serve` or `text` (or a `registry` given here). A `--once` pass
    counts its runs but never exports them, and so never pays the ~40 ms of that import."""

    def __init__(self, registry=None, clock: Callable[[], datetime] = utc_now):
        self.clock = clock
        self._lock = threading.Lock()
        self._numbers = StatusNumbers()
        self._source: tuple[StateStore, DesiredState] | None = None
        self._registry = None
        self.runs_finished = _Family(
            "counter",
            "reconciler_runs_finished",
            "Runs that reached a final status in this process, by status and team",
            ("status", "team"),
        )
        self.run_duration = _Family(
            "histogram",
            "reconciler_run_duration_seconds",
            "Duration of a run's last attempt, from claim to its final status",
            ("team",),
            buckets=DURATION_BUCKETS,
        )
        self.alerts = _Family("counter", "reconciler_alerts", "Alerts raised, by event", ("event",))
        self.delivery_failures = _Family(
            "counter",
            "reconciler_alert_delivery_failures",
            "Failed alert delivery attempts, by team",
            ("team",),
        )
        self.audit_failures = _Family(
            "counter", "reconciler_audit_write_failures", "Audit entries that could not be written"
        )
        self.passes = _Family(
            "counter",
            "reconciler_passes",
            "Passes by result: ok (exit 0), problems (exit 1), error (did not complete)",
            ("result",),
        )
        self.last_success = _Family(
            "gauge",
            "reconciler_last_successful_pass_timestamp_seconds",
            "Unix time at which the last completed pass ended (no series before the first)",
            unset=True,
        )
        self.passes.seed((result,) for result in PASS_RESULTS)
        self.alerts.seed((event,) for event in ALERT_EVENT_LABELS)
        self._families = (
            self.runs_finished,
            self.run_duration,
            self.alerts,
            self.delivery_failures,
            self.audit_failures,
            self.passes,
            self.last_success,
        )
        if registry is not None:
            self._register(registry)

    @property
    def registry(self):
        """The prometheus_client registry exporting these metrics (built on first use)."""
        with self._lock:
            registry = self._registry
        if registry is None:
            from prometheus_client import CollectorRegistry

            registry = self._register(CollectorRegistry())
        return registry

    def _register(self, registry):
        with self._lock:
            if self._registry is None:
                registry.register(_CountedCollector(self._families))
                registry.register(_StatusCollector(self))
                self._registry = registry
            return self._registry

    # --- the store-derived numbers ---

    def know(self, desired: DesiredState) -> None:
        """Give every series of the inventory's teams a value (0) before their first event:
        runs finished by final status, run durations, failed deliveries. Series of teams that
        left the inventory stay (a counter never goes back)."""
        teams = sorted(desired.teams)
        self.runs_finished.seed((status, team) for status in FINAL_STATUSES for team in teams)
        self.run_duration.seed((team,) for team in teams)
        self.delivery_failures.seed((team,) for team in teams)

    def bind(self, store: StateStore, desired: DesiredState) -> None:
        """Read the status numbers from `store` at each scrape (until `unbind`)."""
        self.know(desired)
        with self._lock:
            self._source = (store, desired)
        self.refresh()

    def unbind(self, store: StateStore | None = None) -> None:
        """Keep the last numbers; the store is about to close. With `store`, only if it is
        the bound one (the daemon's passes overlap: a later pass may have bound its own)."""
        self.refresh()
        with self._lock:
            if store is None or (self._source is not None and self._source[0] is store):
                self._source = None

    def refresh(self) -> StatusNumbers:
        """Re-read the numbers from the bound store (if any); a store error keeps the last."""
        with self._lock:
            source = self._source
        if source is not None:
            try:
                numbers = status_numbers(source[0], source[1], self.clock())
            except ReconcilerError as exc:
                log.warning("metrics: cannot read the state store: %s", exc)
            else:
                with self._lock:
                    self._numbers = numbers
        with self._lock:
            return self._numbers

    # --- what the sinks observe ---

    def run_finished(self, run: Run) -> None:
        self.runs_finished.labels(run.status.value, run.team).inc()
        if run.started_at is not None and run.finished_at is not None:
            seconds = (run.finished_at - run.started_at).total_seconds()
            self.run_duration.labels(run.team).observe(max(seconds, 0.0))

    def pass_ended(self, exit_code: int | None) -> None:
        """A pass ended: exit code 0 or 1 (completed), or None (it failed)."""
        self.passes.labels({0: "ok", 1: "problems"}.get(exit_code, "error")).inc()
        if exit_code is not None:
            self.last_success.set(self.clock().timestamp())

    def text(self) -> str:
        """The exposition text, as a scrape would get it."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")


class _Value:
    """One labelled series of a `_Family`: a counter's or gauge's value, or a histogram's
    sum and per-bucket counts; `created` as prometheus_client stamps its series."""

    __slots__ = ("family", "value", "counts", "created")

    def __init__(self, family: _Family):
        self.family = family
        self.value = 0.0  # a counter's or gauge's value; a histogram's sum
        self.counts = [0] * len(family.buckets)  # a histogram's observations per bucket
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if self.family.kind == "counter" and amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        with self.family.lock:
            self.value += amount

    def set(self, value: float) -> None:
        with self.family.lock:
            self.value = float(value)

    def observe(self, amount: float) -> None:
        buckets = self.family.buckets
        with self.family.lock:
            self.value += amount
            for index, bound in enumerate(buckets):
                if amount <= bound:
                    self.counts[index] += 1
                    break


class _Family:
    """A counter, gauge or histogram with the API of prometheus_client's (`labels(...)`,
    `inc`, `set`, `observe`) that keeps its numbers in plain Python until they are exported
    (`_CountedCollector`, with the same names, samples and created times)."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = (),
        *,
        unset: bool = False,
    ):
        """`unset`: an unlabelled family with no series until its first `set`/`inc` (a
        value that does not exist yet, such as the time of a pass that never ran)."""
        self.kind, self.name, self.documentation = kind, name, documentation
        self.labelnames, self.buckets = labelnames, buckets
        self.lock = threading.Lock()
        self.series: dict[tuple[str, ...], _Value] = (
            {} if labelnames or unset else {(): _Value(self)}
        )

    def labels(self, *values: Any, **named: Any) -> _Value:
        if named:
            values = tuple(named[label] for label in self.labelnames)
        if not self.labelnames or len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, not {values}")
        key = tuple(str(value) for value in values)
        with self.lock:
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = _Value(self)
        return series

    def seed(self, keys) -> None:
        """Create the series of each label tuple of `keys` that does not exist yet, at 0."""
        for key in keys:
            self.labels(*key)

    def _only(self) -> _Value:
        if self.labelnames:
            raise ValueError(f"{self.name} is labelled {self.labelnames}: call labels() first")
        with self.lock:
            series = self.series.get(())
            if series is None:
                series = self.series[()] = _Value(self)
        return series

    def inc(self, amount: float = 1) -> None:
        self._only().inc(amount)

    def set(self, value: float) -> None:
        self._only().set(value)

    def observe(self, amount: float) -> None:
        self._only().observe(amount)

    def snapshot(self) -> list[tuple[tuple[str, ...], float, list[int], float]]:
        with self.lock:
            return [(k, v.value, list(v.counts), v.created) for k, v in self.series.items()]


def _created_series() -> bool:
    """Whether `_created` series are exported (prometheus_client's own switch)."""
    from prometheus_client import metrics

    return getattr(metrics, "_use_created", True)


class _CountedCollector:
    """Exports the `_Family` numbers as prometheus_client's own metrics would."""

    def __init__(self, families: tuple[_Family, ...]):
        self.families = families

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        created = _created_series()
        for family in self.families:
            labels = list(family.labelnames)
            series = family.snapshot()
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.documentation, labels=labels)
                for key, value, _, stamp in series:
                    metric.add_metric(list(key), value, created=stamp if created else None)
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(family.name, family.documentation, labels=labels)
                for key, value, _, _ in series:
                    metric.add_metric(list(key), value)
            else:
                metric = HistogramMetricFamily(family.name, family.documentation, labels=labels)
                for key, total, counts, stamp in series:
                    cumulative, buckets = 0, []
                    for bound, count in zip(family.buckets, counts):
                        cumulative += count
                        buckets.append((floatToGoString(bound), cumulative))
                    metric.add_metric(list(key), buckets, total)
                    if created:
                        metric.add_sample(family.name + "_created", dict(zip(labels, key)), stamp)
            yield metric


class _StatusCollector:
    """Exports the status numbers (fresh from the bound store, else the last ones)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        numbers = self.metrics.refresh()
        depth = GaugeMetricFamily(
            "reconciler_queue_depth",
            "Pending runs by priority and team",
            labels=["priority", "team"],
        )
        teams = sorted(
            {team for _, team in numbers.queue_depth} | {m["team"] for m in numbers.machines}
        )
        for priority in PRIORITIES:
            for team in teams:
                depth.add_metric([priority, team], numbers.queue_depth.get((priority, team), 0))
        yield depth
        yield GaugeMetricFamily("reconciler_runs_running", "Running runs", value=numbers.running)
        runs = GaugeMetricFamily(
            "reconciler_runs", "Runs in the state store by status", labels=["status"]
        )
        for status, n in sorted(numbers.runs.items()):
            runs.add_metric([status], n)
        yield runs
        yield GaugeMetricFamily(
            "reconciler_runs_failed_last_24h",
            "Runs that ended failed, blocked or unknown in the last 24 hours",
            value=numbers.failed_last_24h,
        )
        up = GaugeMetricFamily(
            "reconciler_machine_up",
            "1 unless the machine's last contact failed (an unreachable alert not yet cleared)",
            labels=["machine", "team"],
        )
        for machine in numbers.machines:
            up.add_metric([machine["name"], machine["team"]], 1 if machine["up"] else 0)
        yield up
        yield GaugeMetricFamily(
            "reconciler_alert_outbox_pending",
            "Alert deliveries waiting in the outbox",
            value=numbers.outbox_pending,
        )


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process's metrics (created on first use: no import-time side effects)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default


__all__ = [
    "Metrics",
    "StatusNumbers",
    "default_metrics",
    "status_numbers",
]
