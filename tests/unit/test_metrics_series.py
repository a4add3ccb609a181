"""The series `Metrics` exports before any event (issue 19): every known label value at 0, a
team's as soon as an inventory names it, and no last-pass time before a pass completed."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from reconciler.pipeline.metrics import Metrics

LAST_PASS = "reconciler_last_successful_pass_timestamp_seconds"


def _samples(metrics: Metrics) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text())
        for s in family.samples
    }


def test_a_team_the_inventory_names_later_gets_its_series_at_zero():
    metrics = Metrics()
    metrics.know(SimpleNamespace(teams={"ops": None}))
    metrics.runs_finished.labels("failed", "ops").inc()
    metrics.know(SimpleNamespace(teams={"web": None}))  # ops left, web came
    samples = _samples(metrics)
    failed = "reconciler_runs_finished_total"
    assert samples[(failed, (("status", "failed"), ("team", "ops")))] == 1  # kept
    assert samples[(failed, (("status", "failed"), ("team", "web")))] == 0
    assert samples[(failed, (("status", "unknown"), ("team", "web")))] == 0
    assert (
        "reconciler_runs_finished_total",
        (("status", "pending"), ("team", "web")),
    ) not in samples
    assert samples[("reconciler_run_duration_seconds_count", (("team", "web"),))] == 0


def test_the_last_pass_time_appears_with_the_first_completed_pass_only():
    metrics = Metrics()
    assert not any(name == LAST_PASS for name, _ in _samples(metrics))
    metrics.pass_ended(None)  # did not complete
    assert not any(name == LAST_PASS for name, _ in _samples(metrics))
    assert _samples(metrics)[("reconciler_passes_total", (("result", "error"),))] == 1
    metrics.pass_ended(1)
    assert _samples(metrics)[(LAST_PASS, ())] > 1e9
