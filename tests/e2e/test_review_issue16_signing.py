"""Hostile review of issue 16's signed `reconcile run --key` under git.verify: who may, what
the signature covers, what a reader of the audit log can check, and the rules a manual run
must still obey (the two-person rule). Through the CLI, real git, real ssh-keygen keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import reaped, reconcile, spawn
from tests.support.line_reader import follow_lines
from tests.support.processes import pids_in, running
from tests.support.ssh_project import ssh_project
from tests.support.trust_repo import TrustRepo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PARAMS = "params:\n  MODE: {default: fast, allowed: [fast, full]}\n"


class Verified:
    """prod/deploy (writes its MODE) under git.verify, reconciled with alice as anchor."""

    def __init__(self, tmp_path: Path, url: str | None = None):
        self.tmp = tmp_path
        self.repo = TrustRepo(tmp_path)
        self.out = tmp_path / "deploy.out"
        self.repo.write(
            "inventory/tasks/prod/deploy.yaml",
            f'name: deploy\nmachines: [box]\ncommand: echo "$MODE" >> "{self.out}"\n' + PARAMS,
        )
        self.repo.commit("alice", "deploy")
        self.url = url or f"sqlite:///{tmp_path / 'state.db'}"
        self.cli(0, "--once", "--trust-anchor", self.repo.fingerprint("alice"))

    def cli(self, code: int | None, *args: str):
        return reconcile(*args, "--state", self.url, cwd=self.repo.work, check_code=code)

    def run(self, code: int | None, key: Path, *extra: str, task: str = "prod/deploy"):
        return self.cli(code, "run", task, "--reason", "by hand", "--key", str(key), *extra)

    def gated_task(self) -> Path:
        """Reconcile prod/gated, which needs an admin's approval; its command touches the
        file returned."""
        marker = self.tmp / "gated-ran"
        self.repo.write(
            "inventory/tasks/prod/gated.yaml",
            f"name: gated\nmachines: [box]\ncommand: touch {marker}\n"
            "approval: {role: admin, count: 1}\n",
        )
        self.repo.commit("alice", "gated")
        self.cli(0, "--once")
        return marker

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in self.cli(0, "audit", "export").out.splitlines()]


def test_a_public_key_file_given_as_key_is_exit_2_with_a_clear_message(tmp_path):
    v = Verified(tmp_path)
    pub = v.repo.keys["bob"].with_suffix(".pub")
    result = v.run(2, pub)
    assert "Traceback" not in result.err and "key" in result.err
    missing = v.run(2, tmp_path / "nope")
    assert "Traceback" not in missing.err and "nope" in missing.err


def test_a_passphrase_protected_key_without_a_terminal_is_exit_2_and_never_hangs(tmp_path):
    v = Verified(tmp_path)
    locked = tmp_path / "keys" / "bob"
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-N", "s3cret-pass", "-f", str(locked)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    result = reconcile(
        "run",
        "prod/deploy",
        "--reason",
        "x",
        "--key",
        str(locked),
        "--state",
        v.url,
        cwd=v.repo.work,
        timeout=60,
    )
    assert result.code == 2 and "Traceback" not in result.err, result.err


def test_the_audit_entry_of_a_signed_request_lets_a_reader_verify_the_signature(tmp_path):
    v = Verified(tmp_path)
    v.run(0, v.repo.keys["bob"], "--param", "MODE=full", "--priority", "3")
    (entry,) = [e for e in v.audit() if e.get("action") == "run.manual"]
    d = entry["detail"]
    text = f"reconciler run v1\ntask {d['task']}\ncommit {d['commit'] or '-'}\n"
    text += f"machine {d['machine']} version {d['version']}\n"
    text += "".join(f"param {json.dumps([k, val])}\n" for k, val in sorted(d["params"].items()))
    text += f"priority {d['priority']}\nreason {json.dumps(d['reason'])}\n"
    allowed = tmp_path / "allowed"
    allowed.write_text(f"bob {v.repo.public('bob')}\n")
    sig = tmp_path / "sig"
    sig.write_text(d["signature"])
    done = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            "bob",
            "-n",
            "reconciler-run",
            "-s",
            str(sig),
        ],
        input=text.encode(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_rotated_away_key_and_a_member_of_another_team_are_refused(tmp_path):
    v = Verified(tmp_path)
    old = v.repo.keys["bob"]
    fresh = tmp_path / "keys" / "bob2"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(fresh)], check=True)
    pub = " ".join(fresh.with_suffix(".pub").read_text().split()[:2])
    v.repo.write(
        "inventory/teams/prod.yaml",
        "name: prod\nmembers:\n"
        f"  - {{name: alice, role: admin, ssh: {v.repo.public('alice')}}}\n"
        f"  - {{name: bob, role: operator, ssh: {pub}}}\n",
    )
    v.repo.commit("alice", "rotate bob")
    v.cli(0, "--once")
    assert "no team member's ssh: key" in v.run(2, old).err
    assert "is no member of team prod" in v.run(2, v.repo.keys["dana"]).err  # dev's admin
    v.run(0, fresh)


def test_a_manual_run_of_a_task_awaiting_approval_does_not_run(tmp_path):
    v = Verified(tmp_path)
    marker = v.gated_task()
    assert not marker.exists()
    v.run(0, v.repo.keys["bob"], task="prod/gated")
    v.cli(None, "--once")
    assert not marker.exists()
    v.run(None, v.repo.keys["bob"], "--wait", task="prod/gated")
    assert not marker.exists()
    (waiting,) = v.cli(0, "approvals", "--format", "json").json()["waiting"]
    assert waiting["task"] == "prod/gated"


def _queue(p, *args: str):
    return reconcile("queue", *args, "--format", "json", cwd=p.root)


def _running_run(p) -> int:
    """The id of the project's run once one is running."""
    return wait_until(
        lambda: next((r["id"] for r in _queue(p, "list").json() if r["status"] == "running"), None),
        timeout=30,
    )


def test_a_kill_while_the_ssh_connection_is_being_set_up_never_starts_the_command(
    tmp_path, sshd, client_key
):
    """The target's sshd is stopped (SIGSTOP): the TCP connection is accepted by the kernel,
    the SSH handshake waits. A kill asked for then must end the run `killed` without the
    command ever starting when the daemon answers again, and nothing of it left running."""
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key)
    pids = tmp_path / "pids"
    p.task("slow", f'command: trap "" TERM; sleep 1000 & echo "$$ $!" > "{pids}"; wait\n')
    os.kill(sshd.proc.pid, signal.SIGSTOP)
    try:
        once = spawn("--once", "--identity", str(p.key), cwd=p.root)
        with reaped(once):
            _, err = follow_lines(once)
            run_id = _running_run(p)
            killer = spawn(
                "queue", "kill", str(run_id), "--grace", "1s", "--reason", "stop", cwd=p.root
            )
            with reaped(killer):
                err.wait_for("stopping it", timeout=30)  # the pass acted on the request
                os.kill(sshd.proc.pid, signal.SIGCONT)  # the handshake goes on now
                killed = killer.wait(timeout=90)
    finally:
        os.kill(sshd.proc.pid, signal.SIGCONT)
    status = _queue(p, "show", str(run_id)).json()["status"]
    left = [pid for pid in (pids_in(pids) if pids.exists() else []) if running(pid)]
    # (queue kill's exit, the run's status, whether its command started, what is left of it)
    assert (killed, status, pids.exists(), left) == (0, "killed", False, [])


def test_a_manual_run_of_a_frozen_task_is_held_with_priority_1_too(tmp_path):
    v = Verified(tmp_path)
    v.repo.write(
        "inventory/tasks/prod/deploy.yaml",
        f'name: deploy\nmachines: [box]\ncommand: echo "$MODE" >> "{v.out}"\n'
        + PARAMS
        + 'suspend: {reason: "INC-1"}\n',
    )
    v.repo.commit("alice", "freeze")
    v.cli(None, "--once")
    before = v.out.read_text()
    v.run(None, v.repo.keys["bob"], "--priority", "1")
    v.cli(None, "--once")
    v.run(None, v.repo.keys["bob"], "--wait", "--priority", "1")
    assert v.out.read_text() == before


def test_a_manual_run_on_a_halted_rollout_ends_halted(tmp_path):
    v = Verified(tmp_path)
    v.repo.write("inventory/machines/box2.yaml", "name: box2\nteam: prod\ntransport: local\n")
    ran = tmp_path / "roll.out"
    v.repo.write(
        "inventory/tasks/prod/roll.yaml",
        f'name: roll\nmachines: [box, box2]\ncommand: echo "$(hostname)" >> "{ran}"; exit 1\n'
        "rollout: {batches: [1, 100%], max_failed: 0}\n",
    )
    v.repo.commit("alice", "roll")
    v.cli(None, "--once")
    assert len(ran.read_text().split()) == 1  # box failed, box2 halted
    result = v.run(None, v.repo.keys["bob"], "--machine", "box2", "--wait", task="prod/roll")
    assert len(ran.read_text().split()) == 1, result.err
    assert "halted" in result.out, result.out


def test_a_kill_while_the_target_never_answers_ends_the_run_killed_and_never_retried(
    tmp_path, sshd, client_key
):
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key)
    started = tmp_path / "started"
    p.task("slow", f'command: touch "{started}"; sleep 30\n')
    os.kill(sshd.proc.pid, signal.SIGSTOP)
    try:
        once = spawn("--once", "--identity", str(p.key), cwd=p.root)
        with reaped(once):
            run_id = _running_run(p)
            killed = reconcile(
                "queue",
                "kill",
                str(run_id),
                "--grace",
                "1s",
                "--reason",
                "stop",
                cwd=p.root,
                timeout=120,
            )
            once.wait(timeout=120)
    finally:
        os.kill(sshd.proc.pid, signal.SIGCONT)
    run = _queue(p, "show", str(run_id)).json()
    assert (killed.code, run["status"]) == (0, "killed"), (killed.err, run)
    p.run("--once", "--identity", str(p.key))
    assert not started.exists()


def test_a_worker_does_not_run_a_manual_run_of_a_task_awaiting_approval(tmp_path, postgres_url):
    v = Verified(tmp_path, postgres_url)
    marker = v.gated_task()
    worker = spawn("worker", "--state", v.url, cwd=v.repo.work)
    with reaped(worker):
        _, err = follow_lines(worker)
        (run_id,) = v.run(0, v.repo.keys["bob"], "--format", "json", task="prod/gated").json()
        v.run(0, v.repo.keys["bob"], "--format", "json")  # a run the worker may take
        wait_until(lambda: v.out.read_text().split() == ["fast", "fast"], timeout=60)
        shown = v.cli(0, "queue", "show", str(run_id), "--format", "json").json()
        assert shown["status"] == "pending" and not marker.exists(), shown


def test_membership_is_the_last_reconciled_commits_not_an_older_or_unreconciled_one(tmp_path):
    v = Verified(tmp_path)
    v.repo.team("prod", admins=["alice"], viewers=["valerie"])  # bob removed
    v.repo.commit("alice", "remove bob")
    # Not reconciled yet: the last reconciled commit still names bob an operator (documented).
    v.run(0, v.repo.keys["bob"])
    v.cli(None, "--once")
    refused = v.run(2, v.repo.keys["bob"])
    assert "no team member's ssh: key" in refused.err and "Traceback" not in refused.err
