"""Review of issue 16 (follow, kill, run now) through the CLI on local machines and the
SQLite store: each test shows one defect found in review and is expected to fail until the
defect is fixed (strict xfail: a fix makes it pass and the marker must go)."""

from __future__ import annotations

import base64
import os
import signal

import pytest

from tests.support.cli import reaped, spawn
from tests.support.line_reader import follow_lines
from tests.support.planning import record_plan
from tests.support.processes import pids_in, running
from tests.support.ssh_project import ssh_project
from tests.support.vault_project import vault_set
from tests.support.waiting import wait_until


def test_kill_leaves_nothing_running_not_even_a_daemon_the_command_started_with_setsid(project):
    p = project
    pids = p.root / "pids"
    p.task(
        "spawner",
        f"command: setsid sh -c 'echo $$ > \"{pids}\"; exec sleep 1000' "
        "</dev/null >/dev/null 2>&1 & echo started; sleep 1000\n",
    )
    with reaped(spawn("--once", "-q", cwd=p.root)) as once:
        wait_until(lambda: pids.exists() and pids_in(pids), timeout=30)
        [daemon] = pids_in(pids)
        try:
            p.run("queue", "kill", "1", "--grace", "1s", "--reason", "runaway", code=0)
            assert once.wait(timeout=60) == 1
            assert p.run("queue", "show", "1", "--format", "json", code=0).json()["status"] == (
                "killed"
            )
            assert not running(daemon), "the run is recorded killed but its daemon still runs"
        finally:
            if running(daemon):  # leave nothing behind on this host either way
                os.kill(daemon, signal.SIGKILL)


@pytest.mark.integration
def test_kill_of_a_remote_run_on_a_worker_leaves_no_setsid_daemon_on_the_target(
    tmp_path, sshd, client_key, postgres_url
):
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key)
    pids = tmp_path / "pids"
    p.task(
        "spawner",
        f"command: setsid sh -c 'echo $$ > \"{pids}\"; exec sleep 1000' "
        "</dev/null >/dev/null 2>&1 & echo started; sleep 1000\n",
    )
    [run_id] = record_plan(p.inventory, postgres_url)
    worker = spawn("worker", "--state", postgres_url, "-q", "--identity", str(p.key), cwd=p.root)
    with reaped(worker):
        wait_until(lambda: pids.exists() and pids_in(pids), timeout=60)
        [daemon] = pids_in(pids)
        try:
            killed = p.run(
                "queue",
                "kill",
                str(run_id),
                "--grace",
                "1s",
                "--state",
                postgres_url,
                "--format",
                "json",
            )
            assert killed.code == 0 and killed.json()["status"] == "killed", killed.err
            assert not running(daemon), "the remote run is recorded killed but its daemon runs"
        finally:
            if running(daemon):
                os.kill(daemon, signal.SIGKILL)
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)


LONG_SECRET = "long-Secret-0123456789-abcdefghij-KLMNOPQRST-uvwxyz-987654321"


def test_stream_masks_a_wrapped_base64_secret_whose_lines_come_in_separate_flushes(vaulted):
    p = vaulted
    vault_set(p, "ops", "LONG", LONG_SECRET + "\n", p.alice)
    go, printed = p.root / "go", p.root / "printed"
    p.task(
        "leaky",
        "env: {PW: {vault: LONG}}\n"
        'command: printf %s "$PW" | base64 | head -n 1; '
        f'touch "{printed}"; while [ ! -f "{go}" ]; do sleep 0.05; done; '
        'printf %s "$PW" | base64 | tail -n +2\n',
    )
    # A second run prints a line once the first line of the secret's form is out: the
    # flush that shows it has taken that first line too (both runs' lines go in one flush).
    # (It runs on until `go`, so that its line goes out in a flush, not at its end.)
    p.task(
        "ticker",
        f'command: while [ ! -f "{printed}" ]; do sleep 0.05; done; echo tick; '
        f'while [ ! -f "{go}" ]; do sleep 0.05; done\n',
    )
    first, rest = base64.encodebytes(LONG_SECRET.encode()).decode().splitlines()
    with reaped(spawn("--once", "--stream", "--identity", str(p.alice), cwd=p.root)) as once:
        _, err = follow_lines(once)
        wait_until(lambda: any(line.endswith("] tick") for line in err.lines), timeout=30)
        go.touch()
        assert once.wait(timeout=60) == 0
    streamed = "\n".join(err.finish())
    stored = p.run("queue", "show", "1", "--format", "json", code=0).json()["output"]
    assert first not in stored  # the stored output is redacted whole: masked
    assert first not in streamed, streamed


def test_a_malformed_param_is_quoted_as_typed(project):
    project.task("echoer", "command: echo hi\nparams:\n  A: {default: x}\n")
    refused = project.run("run", "ops/echoer", "--param", "=x", "--reason", "r", code=2)
    assert "--param '=x'" in refused.err, refused.err


def test_a_reason_with_a_newline_and_an_escape_cannot_forge_a_row_of_queue_list(project):
    p = project
    p.task("echoer", "command: echo hi\n")
    forged = "why\n7    ops/other  box  succeeded  3  1  0  2026-12-07T00:00:00Z\x1b[2K"
    refused = p.run("run", "ops/echoer", "--reason", forged, code=2)
    assert "--reason holds the control character '\\n'" in refused.err, refused.err
    assert "Traceback" not in refused.err
    assert p.run("queue", "list", code=0).out.strip() == "No runs."


def test_queue_show_escapes_control_characters_in_a_recorded_error(project):
    """Defence in depth: a kill reason (kept in the run's error) holding a newline and an
    escape is shown escaped by `queue show`, on one line."""
    p = project
    p.task("echoer", "command: echo hi\n")
    p.run("run", "ops/echoer", "--reason", "now", code=0)
    killed = p.run("queue", "kill", "1", "--reason", "why\nforged: line\x1b[2K", code=0)
    assert "\x1b" not in killed.out and len(killed.out.splitlines()) == 1, killed.out
    shown = p.run("queue", "show", "1", code=0).out
    assert "\x1b" not in shown, shown
    [error] = [line for line in shown.splitlines() if line.startswith("error:")]
    assert "why\\nforged: line\\x1b[2K" in error, shown


def test_a_run_killed_between_attempts_is_not_run_again_by_the_next_pass(project):
    p = project
    p.task("flaky", f"command: {p.record('ran')}; exit 1\nretry: {{count: 2, delay: 30s}}\n")
    with reaped(spawn("--once", "-q", cwd=p.root)) as once:

        def waiting_to_retry():
            if not p.state.exists():
                return None
            shown = p.run("queue", "show", "1", "--format", "json")
            return shown.code == 0 and shown.json()["attempt"] == 2

        wait_until(waiting_to_retry, timeout=60, message="run 1 to wait for its attempt 2")
        killed = p.run("queue", "kill", "1", "--grace", "1s", "--reason", "stop the loop", code=0)
        assert "killed" in killed.out and "had not started" not in killed.out, killed.out
        once.wait(timeout=60)
    assert p.run("queue", "show", "1", "--format", "json", code=0).json()["status"] == "killed"
    assert p.ledger_lines() == ["ran"]
    assert p.run("plan", "--format", "json", code=0).json()["enqueue"] == []


def test_sigterm_to_run_wait_stops_its_run_and_records_it_as_once_does(project):
    """SIGTERM to `run --wait` ends it as it ends `--once`: the running run gets the grace,
    then is stopped and recorded `unknown` (not left `running` until its lease runs out), and
    the command exits 143 with its status lines."""
    p = project
    started = p.root / "started"
    p.task("slow", f"command: 'touch \"{started}\"; sleep 1000'\n")
    with reaped(
        spawn("--grace", "1s", "run", "ops/slow", "--reason", "now", "--wait", cwd=p.root)
    ) as waiting:
        wait_until(started.exists, timeout=60, message="the run to start")
        waiting.send_signal(signal.SIGTERM)
        out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 143, (waiting.returncode, out, err)
    shown = p.run("queue", "show", "1", "--format", "json", code=0).json()
    assert shown["status"] == "unknown", shown
    assert "run 1 ops/slow on box: unknown" in out, out
