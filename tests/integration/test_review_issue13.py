"""Hostile review of issue 13 (the redesigned run pipeline), through the CLI with real sshd,
git and PostgreSQL. Each defect found is an `xfail(strict=True)` test that fails today."""

from __future__ import annotations

import json

import pytest

from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration


@pytest.mark.xfail(
    strict=True,
    reason="review 13: the SSH reader takes the first chunk ending in `NONCE CODE` as the "
    "trailer, and the task's RECONCILE_RUN_COOKIE is that nonce (ssh.py _read_reply, "
    "wrapper.py RUN): a task printing its cookie and a number ends with that exit code",
)
def test_a_task_echoing_its_cookie_cannot_forge_its_exit_code(tmp_path, sshd, client_key):
    """A task's last line is `<cookie> 0` (its correlation id and a step's status, say), after
    more than 64 KiB of output, then it exits 7. Each run must be recorded failed with exit 7
    and that line in its output; today the line is taken for the wrapper's trailer (it
    reaches the reconciler before the real one): `succeeded`, exit 0. 24 such tasks: a reply
    whose two writes happen to arrive together is read right (under load, most of them)."""
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    command = (
        "head -c 70000 /dev/zero | tr '\\0' z; echo; "
        'echo "step 1"; echo "$RECONCILE_RUN_COOKIE 0"; exit 7'
    )
    for name in [f"forge{i}" for i in range(24)]:
        p.task(name, f"command: {json.dumps(command)}\n")
    report = p.run("--once", "--format", "json", "--identity", str(p.key)).json()
    assert len(report["runs"]) == 24
    for run in report["runs"]:
        assert (run["task"], run["status"], run["exit_code"]) == (run["task"], "failed", 7)
        shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
        cookie_line = shown["output"].rsplit("step 1\n", 1)[-1]
        assert len(cookie_line) == 32 + len(" 0\n"), shown["output"][-200:]
