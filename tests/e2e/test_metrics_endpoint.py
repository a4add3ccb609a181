"""`/metrics` of a real daemon over HTTP on 127.0.0.1, checked by Prometheus's own tools: the
exposition parsed by prometheus_client's parser and linted by `promtool check metrics`
(Debian's `prometheus` package; `.ci/run` installs it). Issue 19: every known label value has
its series at 0 from the first scrape, the last successful pass has no series until there is
one (never 0, the epoch), and `--once` refuses `--metrics-addr` instead of ignoring it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import reaped, spawn
from tests.support.sshd import free_port
from tests.support.waiting import wait_until

LAST_PASS = "reconciler_last_successful_pass_timestamp_seconds"
FINAL = ("succeeded", "failed", "skipped", "cancelled", "blocked", "unknown")


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def samples(text: str) -> dict[tuple, float]:
    """Every sample, parsed by prometheus_client: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def promtool_check(text: str) -> None:
    """`promtool check metrics`: no error and no lint problem."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("RECONCILER_REQUIRE_INTEGRATION") == "1":
            pytest.fail("promtool is missing (.ci/run installs Debian's prometheus package)")
        return  # the parser above still checked the exposition
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_first_scrape_has_every_known_series_at_zero_and_no_last_pass_time(project):
    project.write("teams/web.yaml", "name: web\n")
    project.write("machines/front.yaml", "name: front\nteam: web\ntransport: local\n")
    project.write("reconciler.yaml", "local_machines: {allow_shared_user: true}\n")
    gate = project.root / "go"
    # The first pass waits for the test (its task waits for a file the test writes), so the
    # scrapes before it see the daemon with no pass ended yet.
    project.task("waits", f"command: 'while [ ! -e {gate} ]; do sleep 0.05; done'\n")
    port = free_port()
    with reaped(
        spawn("--watch-files", "-q", "--metrics-addr", f"127.0.0.1:{port}", cwd=project.root)
    ) as proc:
        first = wait_until(lambda: scrape(port), timeout=30, message="/metrics to answer")
        promtool_check(first)
        before = samples(first)
        assert not any(name == LAST_PASS for name, _ in before), first
        for result in ("ok", "problems", "error"):
            assert before[("reconciler_passes_total", (("result", result),))] == 0
        for team in ("ops", "web"):
            for status in FINAL:
                key = (("status", status), ("team", team))
                assert before[("reconciler_runs_finished_total", key)] == 0, (status, team)
            assert before[("reconciler_alert_delivery_failures_total", (("team", team),))] == 0
            assert before[("reconciler_run_duration_seconds_count", (("team", team),))] == 0
        assert before[("reconciler_alerts_total", (("event", "failed"),))] == 0

        gate.write_text("")
        after = wait_until(
            lambda: (found := samples(scrape(port) or "")).get((LAST_PASS, ())) and found,
            timeout=60,
            message="a pass to end",
        )
        assert after[(LAST_PASS, ())] > 1e9
        assert after[("reconciler_passes_total", (("result", "ok"),))] == 1
        ran = (("status", "succeeded"), ("team", "ops"))
        assert after[("reconciler_runs_finished_total", ran)] == 1
        promtool_check(scrape(port))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.communicate()


@pytest.mark.parametrize(
    "args",
    [("--once",), ("--once", "--dry-run"), ("status",), ("worker",)],
    ids=["once", "dry-run", "status", "worker"],
)
def test_metrics_addr_outside_the_daemon_is_refused_before_anything_runs(project, args):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--metrics-addr", "127.0.0.1:0", *args, code=2)
    assert "--metrics-addr" in result.err and "Traceback" not in result.err
    assert project.ledger_lines() == [] and not project.state.exists()
