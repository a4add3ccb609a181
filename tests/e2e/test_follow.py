"""Following runs as they happen (issue 16 §1), through the CLI on the SQLite store:
`queue show RUN --follow` from another process and `--once --stream` print each line while
the command still runs (it waits on a file the test creates only after seeing the line),
secrets masked, then the status; the exit code says how the run ended."""

from __future__ import annotations

import json
import signal
import sqlite3

from tests.support.cli import reaped, spawn
from tests.support.line_reader import Lines, follow_lines
from tests.support.vault_project import SECRET
from tests.support.waiting import wait_until


def _waiting_task(p, name: str, before: str, after: str, code: int = 0) -> None:
    """A task that prints `before`, waits for the file `go`, prints `after`, exits `code`."""
    go = p.root / "go"
    p.task(
        name,
        "env: {PW: {vault: DB_PASSWORD}}\n"
        f'command: echo "{before}"; while [ ! -f "{go}" ]; do sleep 0.05; done; '
        f'echo "{after}"; exit {code}\n',
    )


def _running(p) -> int:
    def running():
        if not p.state.exists():
            return None
        with sqlite3.connect(p.state) as db:
            try:
                row = db.execute("SELECT id FROM runs WHERE status = 'running'").fetchone()
            except sqlite3.OperationalError:  # the pass is still creating the store
                return None
        return row[0] if row else None

    return wait_until(running, timeout=30, message="a run to start")


def test_follow_prints_lines_as_they_come_masked_then_the_status_and_exit_1(vaulted):
    p = vaulted
    _waiting_task(p, "migrate", "first pw=$PW", "second", code=3)
    with reaped(spawn("--once", "-q", "--identity", str(p.alice), cwd=p.root)) as once:
        run_id = _running(p)
        with reaped(spawn("queue", "show", str(run_id), "--follow", cwd=p.root)) as follower:
            out, err = follow_lines(follower)
            out.wait_for("first")  # shown while the command still waits for `go`
            (p.root / "go").touch()
            assert follower.wait(timeout=60) == 1, err.finish()
            lines = out.finish()
        assert once.wait(timeout=60) == 1
    assert lines == [
        "first pw=***",
        "second",
        f"run {run_id} (ops/migrate on box, attempt 1) failed, exit 3: exit code 3",
    ]
    assert SECRET not in "\n".join(lines + err.finish())


def test_follow_of_an_ended_run_prints_it_whole_as_json_lines_and_exit_0(vaulted):
    p = vaulted
    p.task("hello", 'env: {PW: {vault: DB_PASSWORD}}\ncommand: echo "a $PW"; echo b\n')
    p.run("--once", "-q", "--identity", str(p.alice), code=0)
    result = p.run("queue", "show", "1", "--follow", "--format", "json", code=0)
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert lines[:2] == [
        {"event": "output", "run": 1, "attempt": 1, "line": "a ***"},
        {"event": "output", "run": 1, "attempt": 1, "line": "b"},
    ]
    assert lines[2]["event"] == "end" and lines[2]["status"] == "succeeded"
    assert lines[2]["id"] == 1 and len(lines) == 3


def test_follow_of_a_run_that_does_not_exist_is_exit_2(project):
    project.task("hello", "command: echo hi\n")
    project.run("--once", "-q", code=0)
    result = project.run("queue", "show", "99", "--follow", code=2)
    assert "run 99 does not exist" in result.err and "Traceback" not in result.err


def test_once_stream_prints_each_line_as_it_comes_prefixed_and_masked(vaulted):
    p = vaulted
    _waiting_task(p, "slow", "first pw=$PW", "second")
    with reaped(spawn("--once", "--stream", "--identity", str(p.alice), cwd=p.root)) as once:
        out, err = follow_lines(once)
        err.wait_for("[ops/slow@box] first pw=***")  # while the command waits for `go`
        (p.root / "go").touch()
        assert once.wait(timeout=60) == 0
    lines = err.finish()
    assert "[ops/slow@box] second" in lines
    assert lines.index("[ops/slow@box] second") < next(
        i for i, line in enumerate(lines) if line.startswith("succeeded")
    )
    assert SECRET not in "\n".join(lines + out.finish())


def test_once_stream_with_json_format_writes_json_lines_on_stderr(project):
    project.task("hello", "command: echo hi; echo there\n")
    with reaped(spawn("--once", "--stream", "--format", "json", cwd=project.root)) as once:
        out, err = Lines(once.stdout), Lines(once.stderr)
        assert once.wait(timeout=60) == 0
    streamed = [json.loads(line) for line in err.finish() if line.startswith('{"run"')]
    assert [(s["task"], s["machine"], s["line"]) for s in streamed] == [
        ("ops/hello", "box", "hi"),
        ("ops/hello", "box", "there"),
    ]
    assert json.loads("\n".join(out.finish()))["counts"] == {"succeeded": 1}


def test_a_chatty_run_keeps_at_most_its_last_64_kib_as_chunks_and_a_late_follower_is_told(
    project,
):
    p = project
    go = p.root / "go"
    p.task(
        "chatty",
        'command: i=0; while [ $i -lt 4000 ]; do echo "line $i of a chatty command ......."; '
        f'i=$((i+1)); done; while [ ! -f "{go}" ]; do sleep 0.05; done; echo done\n',
    )

    def chunks() -> list[tuple[int, str]]:
        if not p.state.exists():
            return []
        with sqlite3.connect(p.state) as db:
            try:
                return db.execute("SELECT start, body FROM run_output ORDER BY seq").fetchall()
            except sqlite3.OperationalError:  # the pass is still creating the store
                return []

    with reaped(spawn("--once", "-q", cwd=p.root)) as once:
        wait_until(
            lambda: chunks() and "line 3999 " in chunks()[-1][1],
            timeout=30,
            message="the last line to be written as a chunk",
        )
        kept = chunks()
        assert sum(len(body.encode()) for _, body in kept) <= 64 * 1024
        assert kept[0][0] > 0  # the head was dropped
        with reaped(spawn("queue", "show", "1", "--follow", cwd=p.root)) as follower:
            out, _ = follow_lines(follower)
            out.wait_for("line 3999 ")
            go.touch()
            assert follower.wait(timeout=60) == 0
        assert once.wait(timeout=60) == 0
    lines = out.finish()
    assert lines[0] == f"[... {kept[0][0]} bytes of earlier output dropped ...]"
    assert lines[-2:] == ["done", "run 1 (ops/chatty on box, attempt 1) succeeded, exit 0"]
    assert not any(line.startswith("line 0 ") for line in lines)
    assert chunks() == []  # dropped once the run's end is recorded


def test_the_daemon_with_stream_prints_each_line_as_it_comes(project):
    p = project
    _go = p.root / "go"
    p.task(
        "slow",
        f'command: echo first; while [ ! -f "{_go}" ]; do sleep 0.05; done; echo second\n',
    )
    with reaped(spawn("--watch-files", "--stream", "-q", cwd=p.root)) as daemon:
        out, err = follow_lines(daemon)
        err.wait_for("[ops/slow@box] first")  # while the command waits for `go`
        _go.touch()
        err.wait_for("[ops/slow@box] second")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
