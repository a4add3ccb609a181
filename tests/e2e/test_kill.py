"""`reconcile queue kill` (issue 16 §2) through the CLI on the SQLite store: a run of a pass in
another process is stopped with its whole process group (a child that ignores TERM included,
KILL after the grace), recorded `killed` with who and why, never retried, its dependents
blocked, audited; a pending run is cancelled; a finished or unknown run is refused."""

from __future__ import annotations

import json

from tests.support.cli import reaped, spawn
from tests.support.planning import record_plan
from tests.support.processes import pids_in, running
from tests.support.waiting import wait_until

RUNAWAY = (
    'command: trap "" TERM; sleep 1000 & echo "$$ $!" > "{pids}"; echo started; wait; '
    "echo never\n"
    "retry: {{count: 2, delay: 1s}}\n"
)


def test_kill_stops_the_whole_group_records_killed_and_blocks_what_comes_after(project):
    p = project
    pids = p.root / "pids"
    p.task("runaway", RUNAWAY.format(pids=pids))
    p.task("after", "after: [runaway]\ncommand: echo after\n")
    with reaped(spawn("--once", "-q", "--format", "json", cwd=p.root)) as once:
        wait_until(lambda: pids.exists() and len(pids_in(pids)) == 2, timeout=30)
        shell, child = pids_in(pids)
        killed = p.run(
            "queue", "kill", "1", "--grace", "1s", "--reason", "runaway loop", "--format", "json"
        )
        assert killed.code == 0, killed.err
        assert not running(shell) and not running(child)  # the child ignored TERM: KILL
        out, _ = once.communicate(timeout=60)
        assert once.returncode == 1
    assert killed.json()["status"] == "killed"
    runs = {r["task"]: r for r in json.loads(out)["runs"]}
    assert runs["ops/runaway"]["status"] == "killed" and runs["ops/runaway"]["attempt"] == 1
    assert "runaway loop" in runs["ops/runaway"]["error"]
    assert runs["ops/after"]["status"] == "blocked"
    assert "ops/runaway was killed" in runs["ops/after"]["error"]
    shown = p.run("queue", "show", "1", "--format", "json", code=0).json()
    assert shown["output"] == "started\n"  # what it printed until it was stopped
    entries = [json.loads(line) for line in p.run("audit", "export", code=0).out.splitlines()]
    [asked] = [e for e in entries if e.get("action") == "queue.kill"]
    assert asked["detail"]["reason"] == "runaway loop" and asked["detail"]["grace"] == "1s"
    assert asked["actor"].split("@")[0] and asked["actor"] in runs["ops/runaway"]["error"]
    again = p.run("--once", "-q", "--format", "json", code=0).json()
    assert again["runs"] == []  # never retried: the version that was killed stays killed


def test_kill_of_a_pending_run_cancels_it_and_is_audited(project):
    p = project
    p.task("waiting", "command: echo hi\n")
    [run_id] = record_plan(p.inventory, f"sqlite:///{p.state}")
    result = p.run("queue", "kill", str(run_id), "--reason", "not today", code=0)
    assert "cancelled" in result.out
    shown = p.run("queue", "show", str(run_id), "--format", "json", code=0).json()
    assert shown["status"] == "cancelled" and "not today" in shown["error"]
    actions = p.run("audit", "export", code=0).out
    assert '"queue.kill"' in actions and "not today" in actions


def test_kill_refuses_a_finished_run_an_unknown_run_and_a_bad_grace_with_exit_2(project):
    p = project
    p.task("quick", "command: echo hi\n")
    p.run("--once", "-q", code=0)
    finished = p.run("queue", "kill", "1", code=2)
    assert "already ended succeeded" in finished.err
    unknown = p.run("queue", "kill", "42", "--format", "json", code=2)
    assert "run 42 does not exist" in unknown.out + unknown.err
    bad = p.run("queue", "kill", "1", "--grace", "soon", code=2)
    assert "--grace" in bad.err and "Traceback" not in bad.err


def test_a_killed_run_alerts_its_team_killed_with_who_and_why(project, receiver):
    p = project
    p.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url('/all')}]\n")
    pids = p.root / "pids"
    p.task("stuck", f'command: echo "$$" > "{pids}"; sleep 1000\n')
    with reaped(spawn("--once", "-q", cwd=p.root)) as once:
        wait_until(lambda: pids.exists() and pids_in(pids), timeout=30)
        p.run("queue", "kill", "1", "--grace", "1s", "--reason", "holds the lock", code=0)
        assert once.wait(timeout=60) == 1
    [title] = wait_until(lambda: receiver.titles("killed"), timeout=30)
    assert title == "reconciler: ops/stuck killed on box"
    [body] = [b["message"] for b in receiver.bodies if b["title"] == title]
    assert "holds the lock" in body and "run: 1" in body


def test_a_kill_during_the_check_stops_the_check_and_the_command_never_starts(project):
    p = project
    pids = p.root / "pids"
    p.task(
        "checked",
        f'check: sleep 1000 & echo "$$ $!" > "{pids}"; wait\ncommand: {p.record("ran")}\n',
    )
    with reaped(spawn("--once", "-q", cwd=p.root)) as once:
        wait_until(lambda: pids.exists() and len(pids_in(pids)) == 2, timeout=30)
        shell, child = pids_in(pids)
        p.run("queue", "kill", "1", "--grace", "1s", code=0)
        assert not running(shell) and not running(child)
        assert once.wait(timeout=60) == 1
    assert p.run("queue", "show", "1", "--format", "json", code=0).json()["status"] == "killed"
    assert p.ledger_lines() == []


def test_a_run_killed_between_attempts_blocks_what_comes_after_and_alerts(project, receiver):
    p = project
    p.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url('/all')}]\n")
    p.task("flaky", "command: exit 1\nretry: {count: 2, delay: 30s}\n")
    p.task("after", "after: [flaky]\ncommand: echo after\n")
    with reaped(spawn("--once", "-q", "--format", "json", cwd=p.root)) as once:

        def waiting_to_retry():
            if not p.state.exists():
                return None
            shown = p.run("queue", "show", "1", "--format", "json")
            return shown.code == 0 and shown.json()["attempt"] == 2

        wait_until(waiting_to_retry, timeout=60, message="run 1 to wait for its attempt 2")
        killed = p.run("queue", "kill", "1", "--reason", "stop retrying", "--format", "json")
        assert killed.code == 0 and killed.json()["status"] == "killed", killed.err
        out, _ = once.communicate(timeout=60)
        assert once.returncode == 1
    runs = {r["task"]: r for r in json.loads(out)["runs"]}
    assert runs["ops/flaky"]["status"] == "killed", runs
    assert "stop retrying" in runs["ops/flaky"]["error"]
    assert runs["ops/after"]["status"] == "blocked", runs
    [title] = wait_until(lambda: receiver.titles("killed"), timeout=30)
    assert title == "reconciler: ops/flaky killed on box"
