"""A daemon pass that fails before its engine starts is counted (issue 19, second review):
`reconciler_passes_total{result="error"}` rises when the store does not answer (here a closed
port on 127.0.0.1), so an alert on it fires; the review's test covers an inventory that
became invalid."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import clean_environment, reaped
from tests.support.waiting import wait_until


def _address(log: Path) -> str | None:
    for line in log.read_text().splitlines():
        if line.startswith("{") and "serving metrics" in line:
            return json.loads(line)["address"]
    return None


def _errors(address: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "reconciler_passes_total" and sample.labels == {"result": "error"}:
                return sample.value
    return 0.0


def test_a_pass_whose_store_does_not_answer_counts_as_an_error(project, tmp_path):
    project.task("hello", f"command: {project.record('hello')}\n")
    log = tmp_path / "daemon.log"
    args = ["--watch-files", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"]
    args += ["--state", "postgresql://admin@127.0.0.1:1/reconciler?connect_timeout=5"]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    with reaped(daemon) as proc:
        address = wait_until(lambda: _address(log), timeout=60, message="the address served")
        wait_until(lambda: "cannot open state store" in log.read_text(), timeout=60)
        errors = wait_until(lambda: _errors(address) or None, timeout=30, message="an error")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert errors >= 1, log.read_text()
    assert project.ledger_lines() == []
