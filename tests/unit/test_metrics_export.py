"""`Metrics` counts in plain Python and exports through prometheus_client only when asked:
what a scrape reads must be what prometheus_client's own Counter, Histogram and Gauge would
have written for the same observations (names, labels, buckets, `_created` series)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from reconciler.pipeline.metrics import (
    ALERT_EVENT_LABELS,
    DURATION_BUCKETS,
    PASS_RESULTS,
    Metrics,
)


def _reference() -> tuple[CollectorRegistry, dict]:
    """prometheus_client's own metrics, declared as Metrics declared them before."""
    registry = CollectorRegistry()
    families = {
        "runs_finished": Counter(
            "reconciler_runs_finished",
            "Runs that reached a final status in this process, by status and team",
            ["status", "team"],
            registry=registry,
        ),
        "run_duration": Histogram(
            "reconciler_run_duration_seconds",
            "Duration of a run's last attempt, from claim to its final status",
            ["team"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        ),
        "alerts": Counter(
            "reconciler_alerts", "Alerts raised, by event", ["event"], registry=registry
        ),
        "delivery_failures": Counter(
            "reconciler_alert_delivery_failures",
            "Failed alert delivery attempts, by team",
            ["team"],
            registry=registry,
        ),
        "audit_failures": Counter(
            "reconciler_audit_write_failures",
            "Audit entries that could not be written",
            registry=registry,
        ),
        "passes": Counter(
            "reconciler_passes",
            "Passes by result: ok (exit 0), problems (exit 1), error (did not complete)",
            ["result"],
            registry=registry,
        ),
        "last_success": Gauge(
            "reconciler_last_successful_pass_timestamp_seconds",
            "Unix time at which the last completed pass ended (no series before the first)",
            registry=registry,
        ),
    }
    # The label values known from the start have their series at 0 (issue 19), as
    # prometheus_client's own `labels()` without an increment gives them.
    for result in PASS_RESULTS:
        families["passes"].labels(result)
    for event in ALERT_EVENT_LABELS:
        families["alerts"].labels(event)
    return registry, families


# No series before the first completed pass (prometheus_client's Gauge always has one, at 0).
NO_LAST_PASS = re.compile(r"^reconciler_last_successful_pass_timestamp_seconds \S+\n", re.MULTILINE)


def _observe(families) -> None:
    families["runs_finished"].labels("failed", "ops").inc()
    families["runs_finished"].labels("succeeded", "web").inc(2)
    families["runs_finished"].labels(status="succeeded", team="ops").inc()
    for seconds in (0, 1, 1.5, 59.9, 60, 7200.1):
        families["run_duration"].labels("ops").observe(seconds)
    families["run_duration"].labels("web").observe(3)
    families["alerts"].labels("failed").inc()
    families["delivery_failures"].labels("ops").inc()
    families["audit_failures"].inc()
    families["passes"].labels("ok").inc()
    families["passes"].labels("problems").inc(3)
    families["last_success"].set(1_800_000_000.5)


def _without_created_times(text: str) -> str:
    return re.sub(r"^(\w+_created(\{[^}]*\})?) \S+$", r"\1 T", text, flags=re.MULTILINE)


def _status_lines_dropped(text: str) -> str:
    """Only the families the sinks count (the status numbers are collected apart)."""
    kept, keep = [], True
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            keep = not name.startswith(
                (
                    "reconciler_queue_depth",
                    "reconciler_runs_running",
                    "reconciler_runs_failed_last_24h",
                    "reconciler_machine_up",
                    "reconciler_alert_outbox_pending",
                )
            ) and not re.fullmatch(r"reconciler_runs", name)
        if keep:
            kept.append(line)
    return "\n".join(kept)


def test_the_exposition_is_prometheus_clients_own():
    registry, families = _reference()
    metrics = Metrics()
    _observe(families)
    _observe(metrics.__dict__)
    expected = _without_created_times(generate_latest(registry).decode())
    exported = _without_created_times(_status_lines_dropped(metrics.text()))
    assert exported == expected.rstrip("\n")
    assert "reconciler_run_duration_seconds_created" in exported


def test_nothing_observed_is_exported_as_prometheus_client_exports_it():
    registry, _ = _reference()
    expected = NO_LAST_PASS.sub("", _without_created_times(generate_latest(registry).decode()))
    assert _without_created_times(_status_lines_dropped(Metrics().text())) == expected.rstrip("\n")


def test_observations_before_the_first_export_are_kept():
    metrics = Metrics()
    metrics.runs_finished.labels("failed", "ops").inc()
    metrics.pass_ended(1)
    assert 'reconciler_runs_finished_total{status="failed",team="ops"} 1.0' in metrics.text()
    assert 'reconciler_passes_total{result="problems"} 1.0' in metrics.text()
    metrics.runs_finished.labels("failed", "ops").inc()  # after it: the same registry counts
    assert 'reconciler_runs_finished_total{status="failed",team="ops"} 2.0' in metrics.text()


def test_labels_and_counters_are_checked_as_prometheus_client_checks_them():
    metrics = Metrics()
    with pytest.raises(ValueError):
        metrics.runs_finished.labels("failed")  # two labels
    with pytest.raises(ValueError):
        metrics.runs_finished.inc()  # labelled: labels() first
    with pytest.raises(ValueError):
        metrics.audit_failures.labels("x")  # not labelled
    with pytest.raises(ValueError):
        metrics.audit_failures.inc(-1)


def test_a_registry_given_exports_at_once():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.audit_failures.inc()
    assert metrics.registry is registry
    assert "reconciler_audit_write_failures_total 1.0" in generate_latest(registry).decode()
