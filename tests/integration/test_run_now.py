"""`reconcile run` (issue 16 §3) against the real parts: a signed request under git.verify
(real ssh-keygen keys, real signed commits), a manual run executed by `reconcile worker` in
another process on PostgreSQL, and a run over real sshd whose parameter reaches the command
through its environment only."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.support.cli import reconcile, spawn
from tests.support.project import Project
from tests.support.ssh_project import ssh_project
from tests.support.store_rows import store_rows
from tests.support.trust_repo import TrustRepo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PARAMS = "params:\n  MODE: {default: fast, allowed: [fast, full]}\n"


class Verified:
    """A TrustRepo under git.verify (range) whose task prod/deploy writes its MODE to a file,
    reconciled once with alice's key as the trust anchor."""

    def __init__(self, tmp_path: Path):
        self.repo = TrustRepo(tmp_path)
        self.out = tmp_path / "deploy.out"
        self.repo.write(
            "inventory/tasks/prod/deploy.yaml",
            f'name: deploy\nmachines: [box]\ncommand: echo "$MODE" >> "{self.out}"\n' + PARAMS,
        )
        self.repo.commit("alice", "deploy")
        self.url = f"sqlite:///{tmp_path / 'state.db'}"
        self.cli(0, "--once", "--trust-anchor", self.repo.fingerprint("alice"))

    def cli(self, code: int, *args: str):
        return reconcile(*args, "--state", self.url, cwd=self.repo.work, check_code=code)

    def run(self, code: int, who: str | None, *extra: str):
        key = ["--key", str(self.repo.keys[who])] if who else []
        return self.cli(code, "run", "prod/deploy", "--reason", "by hand", *key, *extra)

    def modes(self) -> list[str]:
        return self.out.read_text().split() if self.out.exists() else []


def test_under_verify_an_operators_signed_request_runs_and_is_audited(tmp_path):
    v = Verified(tmp_path)
    assert v.modes() == ["fast"]
    result = v.run(0, "bob", "--param", "MODE=full", "--wait", "--format", "json")
    [run] = result.json()["runs"]
    assert (run["status"], run["trigger"], run["params"]) == (
        "succeeded",
        "manual",
        {"MODE": "full"},
    )
    assert run["actor"] == f"bob ({v.repo.fingerprint('bob')})"
    assert v.modes() == ["fast", "full"]
    export = [json.loads(line) for line in v.cli(0, "audit", "export").out.splitlines()]
    (entry,) = [e for e in export if e.get("action") == "run.manual"]
    assert entry["actor"] == run["actor"]
    assert entry["detail"]["signer"] == v.repo.fingerprint("bob")
    assert (
        entry["detail"]["role"] == "operator"
        and "BEGIN SSH SIGNATURE" in entry["detail"]["signature"]
    )
    v.run(0, "alice")  # an admin may too


@pytest.mark.parametrize(
    ("who", "why"),
    [
        (None, "git.verify is on, so the request must be signed by an operator or admin"),
        ("valerie", "is viewer of team prod"),
        ("dan", "is no member of team prod"),  # operator of another team
        ("mallory", "is no team member's ssh: key in"),
    ],
)
def test_under_verify_anyone_but_an_operator_or_admin_of_the_team_is_refused(tmp_path, who, why):
    v = Verified(tmp_path)
    before = v.cli(0, "queue", "list", "--format", "json").json()
    result = v.run(2, who, "--wait")
    assert why in result.err and "Traceback" not in result.err
    assert v.cli(0, "queue", "list", "--format", "json").json() == before
    assert v.modes() == ["fast"]


def test_a_manual_run_is_executed_by_a_worker_in_another_process_on_postgresql(
    tmp_path, postgres_url
):
    p = Project(tmp_path)
    p.task("deploy", f'command: echo "mode=$MODE" >> "{p.ledger}"\n' + PARAMS)
    worker = spawn("worker", "--state", postgres_url, "-q", cwd=p.root)
    try:
        result = p.run(
            "run",
            "ops/deploy",
            "--param",
            "MODE=full",
            "--reason",
            "worker please",
            "--state",
            postgres_url,
            "--format",
            "json",
            code=0,
        )
        [run_id] = result.json()
        wait_until(
            lambda: (
                store_rows(postgres_url, "SELECT status FROM runs WHERE id = %s", run_id)
                == [("succeeded",)]
            ),
            timeout=60,
            message=f"the worker to run {run_id}",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.stderr.read()
    assert p.ledger_lines() == ["mode=full"]
    shown = p.run("queue", "show", str(run_id), "--state", postgres_url, "--format", "json").json()
    assert (shown["trigger"], shown["reason"]) == ("manual", "worker please")
    [(owner,)] = store_rows(postgres_url, "SELECT owner FROM runs WHERE id = %s", run_id)
    assert f":{worker.pid}:" in owner  # the worker ran it, not the command that queued it
    # The pass that follows plans the task's own first run: the manual one changed nothing.
    once = p.run("--once", "--state", postgres_url, "--format", "json", code=0).json()
    assert [(r["trigger"], r["reason"]) for r in once["runs"]] == [("plan", "new")]


def test_a_run_over_real_sshd_gets_its_param_in_the_environment_never_in_argv(
    tmp_path, sshd, client_key
):
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key)
    started, go = tmp_path / "started", tmp_path / "go"
    value = "2031-01-02"
    p.task(
        "report",
        f'command: echo "day=$DAY"; touch "{started}"; '
        f'while [ ! -f "{go}" ]; do sleep 0.05; done\n'
        "params:\n  DAY: {pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'}\n",
    )
    proc = spawn(
        "run",
        "ops/report",
        "--param",
        f"DAY={value}",
        "--reason",
        "month end",
        "--wait",
        "--identity",
        str(p.key),
        cwd=p.root,
    )
    try:
        wait_until(started.exists, timeout=60, message="the remote command to start")
        # Every process but the command we typed (its own argv is ours to choose): the
        # sshd session, the wrapper and the shell on the target see the value only in env.
        for pid in (d for d in os.listdir("/proc") if d.isdigit() and d != str(proc.pid)):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert value.encode() not in argv, f"process {pid} has the value in its argv"
        go.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"[ops/report@box] day={value}" in err  # streamed as it came
    assert "run 1 ops/report on box: succeeded (exit 0)" in out
