"""`GET /healthz` of a real daemon over real HTTP (issue 17 §3): 200 while passes keep ending
and the store answers; 503 with the reason when the store does not answer or the passes
stall (the `before_pass=hang` failpoint holds every pass before it starts). Open to anyone,
even with a token configured."""

from __future__ import annotations

import json
import signal

from tests.support.http_daemon import http_daemon, served_address
from tests.support.sshd import free_port
from tests.support.waiting import wait_until


def health(daemon) -> tuple[int, dict]:
    status, headers, body = daemon.ask("GET", "/healthz")
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def test_a_daemon_whose_passes_end_is_healthy_and_says_so_without_a_token(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    env = {"RECONCILE_HTTP_TOKEN": "tok-2b7f"}
    with http_daemon(project.root, "--watch-files", env=env) as daemon:
        wait_until(lambda: project.ledger_lines(), timeout=60, message="the first pass")
        status, answer = wait_until(
            lambda: (found := health(daemon))[1]["reason"].startswith("the last pass") and found,
            timeout=30,
            message="a pass to end",
        )
        assert status == 200 and answer["healthy"] is True
        assert answer["poll_interval_seconds"] == 30
        assert daemon.ask("HEAD", "/healthz")[0] == 200
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log_text()


def test_a_store_that_does_not_answer_is_503_with_the_reason(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    port, password = free_port(), "pw-healthz-4e1b7"
    closed = f"postgresql://postgres:{password}@127.0.0.1:{port}/reconciler"
    with http_daemon(project.root, "--watch-files", env={"RECONCILE_STATE": closed}) as daemon:
        status, answer = wait_until(
            lambda: (found := health(daemon))[0] == 503 and found,
            timeout=60,
            message="/healthz to see the store",
        )
        assert answer["healthy"] is False
        assert answer["reason"] == "the state store does not answer", answer
        # Where and why are for the operator: in the daemon's log, the password masked.
        logged = wait_until(
            lambda: (
                "/healthz: the state store does not answer: " in daemon.log_text()
                and daemon.log_text()
            ),
            message="the store's problem in the log",
        )
        line = next(x for x in logged.splitlines() if "/healthz: the state store" in x)
        assert str(port) in line and password not in logged, line


def test_passes_that_stall_make_it_503_within_three_poll_intervals(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    project.write("reconciler.yaml", "poll_interval: 2s\n")
    env = {"RECONCILER_FAILPOINTS": "before_pass=hang"}
    with http_daemon(project.root, "--watch-files", env=env) as daemon:
        status, answer = health(daemon)
        assert status == 200 and answer["reason"] == "starting: no pass has ended yet", answer
        status, answer = wait_until(
            lambda: (found := health(daemon))[0] == 503 and found,
            timeout=30,
            message="the stall to show",
        )
        assert answer["reason"].startswith("no pass has ended since the daemon started"), answer
        assert "at most 3 poll intervals, 6s" in answer["reason"]
        assert project.ledger_lines() == []


def test_metrics_addr_serves_healthz_too(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    with http_daemon(project.root, "--watch-files", "--metrics-addr", "127.0.0.1:0") as daemon:
        at = wait_until(lambda: served_address(daemon.log, "serving metrics at"), message="addr")
        metrics_listener = type(daemon)(daemon.proc, at, daemon.log)
        status, _, body = metrics_listener.ask("GET", "/healthz")
        assert status == 200 and json.loads(body)["healthy"] is True
        assert metrics_listener.ask("POST", "/hooks/git", body=b"{}")[0] == 404
