"""SIGTERM and SIGHUP end any command as Ctrl-C does (issue 19, item 4): the `stopped` line on
stderr, under `--format json` the `stopped` document, exit 128 + the signal; a signal the
process was started ignoring (`nohup` ignores SIGHUP) stays ignored. The command waits on a
store that accepts the connection and never answers (a listening socket of the test's own),
so the signal arrives while it waits, as a `kill` of a hung command would."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from tests.support.cli import clean_environment, reaped
from tests.support.waiting import wait_until


@pytest.fixture
def silent_store():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    accepted: list[socket.socket] = []

    def connected() -> bool:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return False
        accepted.append(conn)
        return True

    port = listener.getsockname()[1]
    try:
        yield f"postgresql://admin@127.0.0.1:{port}/reconciler?connect_timeout=60", connected
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def _start(project, url: str, *args: str, ignore_hangup: bool = False) -> subprocess.Popen:
    def ignore() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts a command

    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--state", url, "status", *args],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore if ignore_hangup else None,
    )


def test_sighup_gives_the_stopped_document(project, silent_store):
    url, connected = silent_store
    proc = _start(project, url, "--format", "json")
    with reaped(proc):
        wait_until(connected, timeout=60, message="a connection")
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, (proc.returncode, err)
    document = json.loads(out)
    assert (document["kind"], document["exit_code"]) == ("stopped", 129), document
    assert document["errors"][0]["message"] == "stopped by SIGHUP", document
    assert "Traceback" not in err and "stopped by SIGHUP" in err, err


def test_sigterm_in_text_format_says_so_on_stderr(project, silent_store):
    url, connected = silent_store
    proc = _start(project, url)
    with reaped(proc):
        wait_until(connected, timeout=60, message="a connection")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert out == "" and "Traceback" not in err, (out, err)
    assert "stopped by SIGTERM" in err, err


def test_a_hangup_ignored_at_start_stays_ignored(project, silent_store):
    url, connected = silent_store
    proc = _start(project, url, "--format", "json", ignore_hangup=True)
    with reaped(proc):
        wait_until(connected, timeout=60, message="a connection")
        proc.send_signal(signal.SIGHUP)
        # Still waiting on its store: SIGTERM (sent after SIGHUP, so SIGHUP was handled
        # first if at all) is what ends it.
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert json.loads(out)["errors"][0]["message"] == "stopped by SIGTERM", out


def test_sighup_stops_a_pass_as_sigterm_does(project, tmp_path):
    """A closed terminal stops `--once` gracefully: nothing more starts, the running run gets
    the grace period, then is stopped; the summary lists it (not a bare `stopped` error)."""
    started = tmp_path / "started"
    project.task("slow", f"command: 'touch {started}; sleep 60'\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--once", "--grace", "1s", "--format", "json"],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped(proc):
        wait_until(started.exists, timeout=60, message="the run to start")
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, (proc.returncode, err)
    document = json.loads(out)
    assert document["stopped_by"] == "SIGHUP", document
    assert [run["task"] for run in document["runs"]] == ["ops/slow"], document
    assert document["left_behind"] == [document["runs"][0]["id"]], document
