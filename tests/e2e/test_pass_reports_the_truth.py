"""What a `--once` pass reports is what the store holds and what it did (issue 12: items 12,
16, 17, 20; issue 18 item 8). Real processes on a SQLite store; no sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from tests.support.cli import spawn
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until


def _row(project, task: str):
    rows = store_rows(
        project.state,
        "SELECT id, status, attempt, not_before FROM runs WHERE task = ? ORDER BY id DESC",
        task,
        while_starting=True,
    )
    return rows[0] if rows else None


def _retry_wait(project, task: str):
    row = _row(project, task)
    return row if row and row[1] == "pending" and row[2] == 2 else None


def test_queue_cancel_during_a_retry_wait_is_what_the_pass_reports(project):
    project.task(
        "flaky", f"retry: {{count: 1, delay: 30s}}\ncommand: {project.record('tried')}; exit 1\n"
    )
    proc = spawn("--once", "--format", "json", "-q", cwd=project.root)
    try:
        waiting = wait_until(
            lambda: _retry_wait(project, "ops/flaky") or proc.poll() is not None,
            timeout=30,
            message="the run to wait for its retry",
        )
        assert proc.poll() is None, proc.communicate()
        project.run("queue", "cancel", str(waiting[0]), code=0)
        cancelled_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
        ended_after = time.monotonic() - cancelled_at
    finally:
        proc.kill()
    [run] = json.loads(out)["runs"]
    assert (run["id"], run["status"]) == (waiting[0], "cancelled"), err
    assert _row(project, "ops/flaky")[1] == "cancelled"
    assert proc.returncode == 0, err
    assert ended_after < 10, ended_after  # it noticed, rather than waiting out the 30 s delay
    assert project.ledger_lines() == ["tried"]


class _Stderr:
    """Collects a child's stderr lines from a thread, so a test can wait on one of them."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc) -> None:
        for line in proc.stderr:
            self.lines.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        self.thread.join(timeout=10)
        return "".join(self.lines)


def _blocking_task(project, name: str, go) -> None:
    """A priority-1 task that records `name-started`, waits for `go`, records `name-done`."""
    project.task(
        name,
        f"priority: 1\ncommand: {project.record(name + '-started')}; "
        f'while [ ! -f "{go}" ]; do sleep 0.05; done; {project.record(name + "-done")}\n',
    )


def _claimed_runs(project) -> list[int]:
    out = project.run("audit", "export", code=0).out
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]  # JSON lines
    return [e["detail"]["run"] for e in entries if e.get("action") == "run.claimed"]


def test_sigterm_to_once_lets_the_running_run_finish_claims_nothing_more_and_exits_143(project):
    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    go = project.root / "go"
    _blocking_task(project, "first", go)
    for name in ("later1", "later2"):
        project.task(name, f"priority: 5\ncommand: {project.record(name)}\n")
    proc = spawn("--once", "--format", "json", cwd=project.root)
    stderr = _Stderr(proc)
    try:
        wait_until(
            lambda: "first-started" in project.ledger_lines() or proc.poll() is not None,
            timeout=30,
            message="the first run to start",
        )
        proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: stderr.has("SIGTERM") or proc.poll() is not None,
            timeout=10,
            message="the pass to acknowledge SIGTERM",
        )
        go.touch()  # the running run ends within the grace period
        out = proc.stdout.read()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    err = stderr.text()
    data = json.loads(out)
    statuses = {r["task"]: r["status"] for r in data["runs"]}
    assert statuses == {
        "ops/first": "succeeded",
        "ops/later1": "pending",
        "ops/later2": "pending",
    }, err
    assert code == 143, err  # 128 + SIGTERM: stopped with work left behind
    left = {r["task"] for r in data["runs"] if r["id"] in data["left_behind"]}
    assert left == {"ops/later1", "ops/later2"}
    assert data["stopped_by"] == "SIGTERM"
    assert project.ledger_lines() == ["first-started", "first-done"]
    first = next(r["id"] for r in data["runs"] if r["task"] == "ops/first")
    assert _claimed_runs(project) == [first]  # nothing claimed after the signal
    assert "Traceback" not in err


def test_sigterm_text_summary_lists_the_runs_left_behind(project):
    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    go = project.root / "go"
    _blocking_task(project, "first", go)
    project.task("later", f"priority: 5\ncommand: {project.record('later')}\n")
    proc = spawn("--once", cwd=project.root)
    stderr = _Stderr(proc)
    try:
        wait_until(
            lambda: "first-started" in project.ledger_lines() or proc.poll() is not None,
            timeout=30,
            message="the first run to start",
        )
        proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: stderr.has("SIGTERM") or proc.poll() is not None,
            timeout=10,
            message="the pass to acknowledge SIGTERM",
        )
        go.touch()
        out = proc.stdout.read()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert code == 143, stderr.text()
    assert "stopped by SIGTERM: 1 run left behind" in out, out
    assert "pending    ops/later on box" in out, out


def test_a_run_outliving_the_grace_after_sigterm_is_stopped_and_recorded_unknown(project):
    project.task("slow", f"command: {project.record('started')}; sleep 60\n")
    proc = spawn("--once", "--grace", "1s", "--format", "json", cwd=project.root)
    stderr = _Stderr(proc)
    try:
        wait_until(
            lambda: "started" in project.ledger_lines() or proc.poll() is not None,
            timeout=30,
            message="the run to start",
        )
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    [run] = json.loads(out)["runs"]
    assert run["status"] == "unknown" and "grace" in run["error"], run
    assert code == 143, stderr.text()
    assert "Traceback" not in stderr.text()


def test_sigint_then_sigterm_then_sigkill_leaves_unknown_after_the_next_pass_and_no_traceback(
    project,
):
    project.task(
        "slow", f'command: echo $$ >> "{project.ledger}"; {project.record("started")}; sleep 60\n'
    )
    proc = spawn("--once", cwd=project.root)
    stderr = _Stderr(proc)
    try:
        wait_until(
            lambda: "started" in project.ledger_lines() or proc.poll() is not None,
            timeout=30,
            message="the run to start",
        )
        proc.send_signal(signal.SIGINT)
        wait_until(
            lambda: stderr.has("SIGINT") or proc.poll() is not None,
            timeout=10,
            message="the pass to acknowledge SIGINT",
        )
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        try:
            os.killpg(int(project.ledger_lines()[0]), signal.SIGKILL)
        except (ProcessLookupError, IndexError):
            pass
    first_err = stderr.text()
    second = project.run("--once", "--format", "json")
    runs = project.run("queue", "list", "--format", "json", code=0).json()
    assert [(r["task"], r["status"]) for r in runs] == [("ops/slow", "unknown")], second.err
    assert project.ledger_lines().count("started") == 1
    assert "Traceback" not in first_err + second.err, first_err + second.err


def test_once_json_shows_each_held_run_with_its_hold_reason_as_the_text_summary_does(project):
    project.write(
        "teams/ops.yaml", "name: ops\nwindows:\n  - deny: '* * * * *'\n    duration: 2m\n"
    )
    project.task("urgent", f"priority: 1\ncommand: {project.record('urgent')}\n")
    project.task("routine", f"priority: 3\ncommand: {project.record('routine')}\n")
    runs = {r["task"]: r for r in project.run("--once", "--format", "json", code=0).json()["runs"]}
    assert runs["ops/routine"]["status"] == "pending"
    assert runs["ops/routine"]["held"].startswith("deny window until "), runs["ops/routine"]
    assert runs["ops/urgent"]["held"] is None
    assert {r["trigger"] for r in runs.values()} == {"plan"}
    text = project.run("--once", code=0).out  # the next pass holds it too, and says so
    assert "held by deny window until" in text
