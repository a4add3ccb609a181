"""`--http-addr` (issue 17): the daemon's one listener, on loopback unless access is
configured; a configured bearer token guards every page, /metrics included, and never shows
in the daemon's output; `--metrics-addr` keeps serving /metrics alone, as before."""

from __future__ import annotations

import http.client
import signal
from pathlib import Path

import pytest

from reconciler.core.webhooks import github_signature
from tests.support.cli import reaped, spawn
from tests.support.http_daemon import http_daemon, served_address
from tests.support.sshd import free_port
from tests.support.vault_project import vaulted_http
from tests.support.waiting import wait_until

TOKEN = "tok-9f2c4e7a1b"


@pytest.mark.parametrize("addr", ["0.0.0.0:0", ":0", "[::]:0", "203.0.113.7:8080"])
def test_a_non_loopback_address_without_access_is_refused_before_anything_runs(project, addr):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--http-addr", addr, code=2)
    assert "not a loopback address" in result.err and "RECONCILE_HTTP_TOKEN" in result.err
    assert "Traceback" not in result.err
    assert project.ledger_lines() == [] and not project.state.exists()


@pytest.mark.parametrize("args", [("--once",), ("status",)], ids=["once", "status"])
def test_http_addr_outside_the_daemon_is_refused(project, args):
    result = project.run("--http-addr", "127.0.0.1:0", *args, code=2)
    assert "--http-addr serves its pages in continuous mode only" in result.err, result


def test_a_bad_or_empty_http_addr_is_a_usage_error(project):
    assert "--http-addr must be HOST:PORT" in project.run("--http-addr", "8080", code=2).err
    assert "--http-addr is empty" in project.run("--http-addr", " ", code=2).err


def test_metrics_on_loopback_without_access(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    with http_daemon(project.root, "--watch-files") as daemon:
        status, headers, body = daemon.ask("GET", "/metrics")
        assert status == 200 and b"reconciler_passes_total" in body
        assert headers["Content-Type"].startswith("text/plain")
        assert daemon.ask("HEAD", "/metrics")[2] == b""
        assert daemon.ask("POST", "/metrics")[0] == 405
        assert daemon.ask("GET", "/no-such-page")[0] == 404
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log_text()


def test_a_configured_token_guards_metrics_and_never_shows(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    env = {"RECONCILE_HTTP_TOKEN": TOKEN}
    with http_daemon(project.root, "--watch-files", env=env) as daemon:
        assert daemon.ask("GET", "/metrics")[0] == 401
        wrong = {"Authorization": f"Bearer {TOKEN[:-1]}x"}
        assert daemon.ask("GET", "/metrics", headers=wrong)[0] == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        status, _, body = daemon.ask("GET", "/metrics", headers=right)
        assert status == 200 and b"reconciler_passes_total" in body
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log_text()
        assert TOKEN not in daemon.log_text()


def test_metrics_addr_and_http_addr_side_by_side(project, tmp_path):
    """--metrics-addr serves /metrics with no token (Prometheus as before), while the token
    guards --http-addr's pages."""
    project.task("hello", f"command: {project.record('hello')}\n")
    env = {"RECONCILE_HTTP_TOKEN": TOKEN}
    args = ("--watch-files", "--metrics-addr", "127.0.0.1:0")
    with http_daemon(project.root, *args, env=env) as daemon:
        metrics_at = wait_until(
            lambda: served_address(daemon.log, "serving metrics at"), message="metrics address"
        )
        assert metrics_at != daemon.address
        open_metrics = type(daemon)(daemon.proc, metrics_at, daemon.log)
        assert open_metrics.ask("GET", "/metrics")[0] == 200
        assert daemon.ask("GET", "/metrics")[0] == 401


def test_both_flags_on_one_address_make_one_listener(project):
    """The same HOST:PORT for both flags: one listener, the full one, under the access rule
    (a second one on the same port could not be bound)."""
    project.task("hello", f"command: {project.record('hello')}\n")
    addr = f"127.0.0.1:{free_port()}"
    env = {"RECONCILE_HTTP_TOKEN": TOKEN}
    args = ("--watch-files", "--http-addr", addr, "--metrics-addr", addr)
    with reaped(spawn(*args, cwd=project.root, env=env)) as proc:
        host, port = addr.rsplit(":", 1)

        def status() -> int | None:
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                connection.request("GET", "/metrics")
                return connection.getresponse().status
            except OSError:
                return None
            finally:
                connection.close()

        assert wait_until(status, timeout=60, message="the listener") == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.communicate()


def test_the_token_and_the_hook_secret_can_come_from_a_team_vault(vaulted):
    """`http.token` and `http.hook_secret` in reconciler.yaml name keys of a team vault,
    read with the daemon's identity; neither value shows in its output."""
    project = vaulted
    hook_secret = "vault-hook-81c2"
    env = vaulted_http(project, TOKEN, hook_secret)
    with http_daemon(project.root, "--watch-files", env=env) as daemon:
        assert daemon.ask("GET", "/metrics")[0] == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert daemon.ask("GET", "/metrics", headers=right)[0] == 200
        signed = {
            "X-Hub-Signature-256": github_signature(hook_secret, b"{}"),
            "X-GitHub-Delivery": "d-vault-1",  # a delivery without its id is refused (400)
        }
        assert daemon.ask("POST", "/hooks/git", body=b"{}", headers=signed)[0] == 202
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log_text()
    assert TOKEN not in daemon.log_text() and hook_secret not in daemon.log_text()


def test_an_unreadable_vault_token_refuses_to_start(vaulted):
    project = vaulted
    project.write("reconciler.yaml", "http:\n  token: {vault: NO_SUCH_KEY, team: ops}\n")
    env = {"RECONCILE_IDENTITY_FILE": str(project.alice)}
    result = project.run("--http-addr", "127.0.0.1:0", env=env, code=2)
    assert "NO_SUCH_KEY" in result.err and "Traceback" not in result.err, result
    assert not project.state.exists()


def test_the_environment_token_is_taken_out_of_the_daemons_environment(project):
    """Like the identity, RECONCILE_HTTP_TOKEN is handed over at start-up: a local task of
    the same user reading /proc/PID/environ does not find it."""
    project.task("hello", f"command: {project.record('hello')}\n")
    env = {"RECONCILE_HTTP_TOKEN": TOKEN, "RECONCILE_HOOK_SECRET": "hook-x-1"}
    with http_daemon(project.root, "--watch-files", env=env) as daemon:
        environ = Path(f"/proc/{daemon.proc.pid}/environ").read_bytes()
        assert TOKEN.encode() not in environ and b"hook-x-1" not in environ
        assert daemon.ask("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
