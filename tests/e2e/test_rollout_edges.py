"""Rollouts (issue 15 §1) at their edges, as a tired operator meets them: through `reconcile`
on local machines, alerts to a real HTTP receiver (apprise `json://`)."""

from __future__ import annotations

import json

import pytest

from tests.support.alert_receiver import AlertReceiver
from tests.support.cli import reaped, spawn
from tests.support.git_repos import git
from tests.support.waiting import wait_until


@pytest.fixture
def receiver():
    made = AlertReceiver()
    yield made
    made.close()


def _machines(project, *names: str, frozen: str = "") -> None:
    for name in names:
        freeze = 'suspend: {reason: "INC-9 failover"}\n' if name == frozen else ""
        project.write(
            f"machines/{name}.yaml", f"name: {name}\nteam: ops\ntransport: local\n{freeze}"
        )


def test_a_missed_slot_its_rollout_batch_holds_says_so_in_the_alert(project, receiver):
    p = project
    p.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url('/all')}]\n")
    _machines(p, "m1", "m2", frozen="m1")
    p.write(
        "tasks/ops/backup.yaml",
        f"name: backup\nmachines: [m1, m2]\ncommand: {p.record('backup')}\n"
        "schedule: '* * * * *'\ngrace: 0s\nrollout: {batches: [1, 100%]}\n",
    )
    p.run("--once", code=0)
    p.run("--once", code=0)

    missed = {
        b["title"]: b["message"]
        for b in receiver.bodies
        if b["title"].split(" ")[2:3] == ["missed"]
    }
    assert set(missed) == {
        "reconciler: ops/backup missed on m1",
        "reconciler: ops/backup missed on m2",
    }
    assert (
        "held: freeze on machine m1 (INC-9 failover)"
        in missed["reconciler: ops/backup missed on m1"]
    )
    assert (
        "held: rollout: batch 2 of 2 waits for batch 1"
        in missed["reconciler: ops/backup missed on m2"]
    )
    assert p.ledger_lines() == []


def test_killing_a_hung_canary_halts_the_rollout_instead_of_starting_the_rest(project, receiver):
    p = project
    p.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url('/all')}]\n")
    _machines(p, "m1", "m2", "m3", "m4")
    # The canary (m1) hangs: an operator kills it rather than wait for its timeout.
    p.write(
        "tasks/ops/deploy.yaml",
        "name: deploy\nmachines: [m1, m2, m3, m4]\n"
        f"command: '{p.record('$RECONCILE_MACHINE')}; "
        'if [ "$RECONCILE_MACHINE" = m1 ]; then sleep 60; fi\'\n'
        "rollout: {batches: [1, 100%]}\n",
    )
    with reaped(spawn("--once", "--format", "json", "-q", cwd=p.root)) as proc:
        wait_until(lambda: p.ledger_lines() == ["m1"], timeout=30, message="the canary to start")
        p.run("queue", "kill", "1", "--reason", "canary hangs", code=0)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    statuses = {r["machine"]: r["status"] for r in json.loads(out)["runs"]}
    assert statuses == {"m1": "killed", "m2": "halted", "m3": "halted", "m4": "halted"}
    assert p.ledger_lines() == ["m1"]  # nothing more started
    assert [t for t in receiver.titles() if t.endswith("rollout halted")] == [
        "reconciler: ops/deploy rollout halted"
    ]


def test_the_pr_comment_shows_a_verify_with_backticks_and_several_lines_in_its_row(project):
    p = project
    _machines(p, "m1", "m2")
    task = "name: deploy\nmachines: [m1, m2]\ncommand: {command}\n"
    p.write("tasks/ops/deploy.yaml", task.format(command="'true'"))
    git(p.root, "init", "-q")
    git(p.root, "add", "-A")
    git(p.root, "commit", "-q", "--no-gpg-sign", "-m", "base")
    p.write(
        "tasks/ops/deploy.yaml",
        task.format(command="'echo v2'")
        + "rollout:\n  batches: [1, 100%]\n  verify: |\n"
        + "    curl -sf http://127.0.0.1/health | grep -q `hostname`\n"
        + "    test -e /etc/ready\n",
    )
    git(p.root, "add", "-A")
    git(p.root, "commit", "-q", "--no-gpg-sign", "-m", "head")

    out = p.run("diff", "HEAD~1", "HEAD", "--format", "markdown", code=0).out
    [row] = [line for line in out.splitlines() if line.startswith("| `ops/deploy` | 1. ")]
    # One row, six cells; each line of the verify a code span that its backticks do not end.
    assert row.endswith(
        "| `` curl -sf http://127.0.0.1/health \\| grep -q `hostname` ``<br>`test -e /etc/ready` |  |"
    )
    assert "test -e /etc/ready" not in out.replace(row, "")
    text = p.run("diff", "HEAD~1", "HEAD", code=0).out
    assert (
        "(max_failed 0, pause 0s, verify curl -sf http://127.0.0.1/health | grep -q `hostname`"
        " ⏎ test -e /etc/ready)"
    ) in text


def test_asking_twice_to_resume_a_halted_rollout_says_the_same_thing(project):
    p = project
    _machines(p, "m1", "m2", "m3", "m4")
    p.write(
        "tasks/ops/deploy.yaml",
        "name: deploy\nmachines: [m1, m2, m3, m4]\n"
        f"command: '{p.record('$RECONCILE_MACHINE')}; test \"$RECONCILE_MACHINE\" != m1'\n"
        "rollout: {batches: [1, 100%]}\n",
    )
    data = p.run("--once", "--format", "json", code=1).json()
    m2 = next(r["id"] for r in data["runs"] if r["machine"] == "m2")
    said = (
        "resuming the rollout of ops/deploy: 3 halted run(s) of this version will run again "
        "at the next pass, batch by batch"
    )
    assert said in p.run("queue", "retry", str(m2), code=0).err
    assert said in p.run("queue", "retry", str(m2), code=0).err  # not "1 halted run(s)"
    again = p.run("--once", "--format", "json", code=0).json()
    assert sorted(r["machine"] for r in again["runs"]) == ["m2", "m3", "m4"]


def test_a_canary_its_dependency_blocked_halts_the_rollout_instead_of_skipping_to_the_rest(
    project,
):
    p = project
    _machines(p, "m1", "m2", "m3", "m4")
    p.write(
        "tasks/ops/deploy.yaml",
        "tasks:\n"
        "  - name: build\n    machines: [m1, m2, m3, m4]\n"
        "    command: 'test \"$RECONCILE_MACHINE\" != m1'\n"
        "  - name: deploy\n    machines: [m1, m2, m3, m4]\n    after: [build]\n"
        f"    command: '{p.record('$RECONCILE_MACHINE')}'\n"
        "    rollout: {batches: [1, 100%]}\n",
    )
    data = p.run("--once", "--format", "json", code=1).json()
    deploy = {r["machine"]: r["status"] for r in data["runs"] if r["task"] == "ops/deploy"}
    # The canary never ran: the change was never tried, so the rest must not get it.
    assert deploy == {"m1": "blocked", "m2": "halted", "m3": "halted", "m4": "halted"}
    assert p.ledger_lines() == []


def test_a_failing_verify_s_output_is_kept_after_a_command_whose_output_was_streamed(project):
    p = project
    _machines(p, "m1", "m2")
    # The command writes, then runs long enough for its output to be streamed to the store
    # (as `queue show --follow` reads it) before it ends.
    p.write(
        "tasks/ops/deploy.yaml",
        "name: deploy\nmachines: [m1, m2]\ncommand: 'echo from-command; sleep 2'\n"
        "rollout: {batches: [1, 100%], verify: 'echo health-check-said-no; exit 3'}\n",
    )
    data = p.run("--once", "--format", "json", code=1).json()
    m1 = next(r for r in data["runs"] if r["machine"] == "m1")
    shown = p.run("queue", "show", str(m1["id"]), "--format", "json", code=0).json()
    assert shown["exit_code"] == 3
    assert shown["output"] == "from-command\n--- verify ---\nhealth-check-said-no\n"


def test_stream_shows_the_verify_s_output_after_the_command_s(project):
    p = project
    _machines(p, "m1", "m2")
    p.write(
        "tasks/ops/deploy.yaml",
        "name: deploy\nmachines: [m1, m2]\ncommand: 'echo from-command'\n"
        "rollout: {batches: [1, 100%], verify: 'echo health-check-said-no; exit 3'}\n",
    )
    shown = p.run("--once", "--stream", "-q", code=1).err.splitlines()
    assert [line for line in shown if line.startswith("[ops/deploy@m1]")] == [
        "[ops/deploy@m1] from-command",
        "[ops/deploy@m1] --- verify ---",
        "[ops/deploy@m1] health-check-said-no",
    ]
