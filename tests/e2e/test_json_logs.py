"""With `--log-format json` every line a pass writes on stderr is one JSON object, progress
lines included, so a log shipper can parse all of it (issue 12.20)."""

from __future__ import annotations

import json
import signal

from tests.support.cli import spawn
from tests.support.waiting import wait_until


def _objects(stderr: str) -> list[dict]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    objects = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\nall of stderr:\n{stderr}") from None
        assert isinstance(value, dict), line
        objects.append(value)
    return objects


def test_once_with_log_format_json_writes_only_json_objects_on_stderr(project):
    project.task("ok", f"command: {project.record('ok')}\n")
    project.task("flaky", "retry: {count: 1, delay: 1s}\ncommand: echo no; exit 3\n")
    project.write("stray.yaml", "x: 1\n")  # a file that is not read: a warning
    result = project.run("--once", "--log-format", "json", code=1)
    objects = _objects(result.err)
    kinds = {o.get("kind") for o in objects}
    assert {"enqueued", "started", "retrying", "finished"} <= kinds, objects
    finished = {o["task"]: o["status"] for o in objects if o.get("kind") == "finished"}
    assert finished == {"ops/ok": "succeeded", "ops/flaky": "failed"}
    assert any(o["level"] == "warning" for o in objects)  # the stray file


def test_an_error_with_log_format_json_is_one_json_object(project):
    project.task("ok", f"command: {project.record('ok')}\n")
    result = project.run("--once", "--log-format", "json", "--lock-timeout", "soon", code=2)
    [error] = _objects(result.err)
    assert error["level"] == "error" and "--lock-timeout" in error["event"], error


def test_daemon_with_log_format_json_writes_only_json_objects_on_stderr(project):
    project.write("reconciler.yaml", "poll_interval: 1s\n")
    project.task("first", f"command: {project.record('first')}\n")
    proc = spawn("--watch-files", "--log-format", "json", cwd=project.root)
    try:
        wait_until(lambda: "first" in project.ledger_lines(), timeout=30, message="first task")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    objects = _objects(err)
    assert any(o.get("kind") == "finished" and o.get("status") == "succeeded" for o in objects), (
        objects
    )
