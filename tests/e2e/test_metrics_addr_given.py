"""`--metrics-addr` is judged by whether it was given, not by its truth (issue 19, second
review): an empty address — `--metrics-addr "$ADDR"` in a unit file with ADDR unset — is
refused before anything runs, by the daemon as by `--once`, instead of serving nothing; and
the address served is said at start, the port the kernel picked for `:0` included."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import clean_environment, reaped
from tests.support.waiting import wait_until


@pytest.mark.parametrize("addr", ["", "  "], ids=["empty", "blank"])
@pytest.mark.parametrize("args", [(), ("--once",)], ids=["daemon", "once"])
def test_an_empty_metrics_addr_is_refused_before_anything_runs(project, addr, args):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--metrics-addr", addr, *args, code=2)
    assert "--metrics-addr is empty" in result.err and "Traceback" not in result.err, result
    assert project.ledger_lines() == [] and not project.state.exists()


def _served(log: Path) -> dict | None:
    for line in log.read_text().splitlines():
        if line.startswith("{") and "serving metrics" in line:
            return json.loads(line)
    return None


def test_a_port_of_zero_is_said_in_the_json_logs_even_quiet(project, tmp_path):
    """`--metrics-addr 127.0.0.1:0`: the kernel picks the port, and the daemon says which (a
    JSON object under --log-format json, even under -q): a scrape at that address answers."""
    project.task("hello", f"command: {project.record('hello')}\n")
    log = tmp_path / "daemon.log"
    args = ["--watch-files", "-q", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    with reaped(daemon) as proc:
        served = wait_until(lambda: _served(log), timeout=60, message="the address served")
        host, port = served["address"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0, served
        assert served["event"] == f"serving metrics at http://{served['address']}/metrics"
        url = f"http://{served['address']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b"reconciler_passes_total" in response.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
