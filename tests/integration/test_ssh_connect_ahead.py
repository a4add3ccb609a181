"""A pass opens its SSH connections while it makes its plan (`passes.connect_ahead`), against
real sshd: only to machines its plan runs something on, and only once its commit passed the
lineage check. Counted from each daemon's log: every TCP connection sshd accepts is logged
(`Connection from`) as soon as it is accepted, so one opened by a pass that exits later would
be in the log by the time the pass has exited."""

from __future__ import annotations

import pytest

from tests.support.git_repos import git
from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration


def _connections(daemon) -> int:
    """TCP connections the daemon accepted (its readiness probe included)."""
    return daemon.log_text().count("Connection from")


def test_a_pass_connects_only_where_its_plan_runs_something(tmp_path, sshd_factory, client_key):
    box, frozen, idle = sshd_factory(), sshd_factory(), sshd_factory()
    p = ssh_project(tmp_path, box.port, box.host_key, client_key)
    machine = (p.inventory / "machines" / "box.yaml").read_text()
    for name, daemon in (("frozen", frozen), ("idle", idle)):
        text = machine.replace("name: box", f"name: {name}").replace(
            str(box.port), str(daemon.port)
        )
        p.write(f"machines/{name}.yaml", text.replace(box.host_key, daemon.host_key))
    frozen_yaml = (p.inventory / "machines" / "frozen.yaml").read_text()
    p.write("machines/frozen.yaml", frozen_yaml + "suspend: {reason: disk replacement}\n")
    p.write("tasks/ops/deploy.yaml", "name: deploy\nmachines: [box, frozen]\ncommand: echo hi\n")
    before = {"frozen": _connections(frozen), "idle": _connections(idle)}
    data = p.run("--once", "--format", "json", "--identity", str(p.key), code=0).json()
    assert {(r["machine"], r["status"]) for r in data["runs"]} == {
        ("box", "succeeded"),
        ("frozen", "pending"),
    }
    assert box.logins() == 1
    assert {"frozen": _connections(frozen), "idle": _connections(idle)} == before
    assert frozen.logins() == idle.logins() == 0


def test_a_commit_its_lineage_check_refuses_connects_nowhere(tmp_path, sshd, client_key, receiver):
    # The refusal is alerted, which keeps the refused pass alive a while after its check (it
    # waits for the delivery): time for a connection opened before the check to show.
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key, alerts=[receiver.url()])
    p.task("hello", "command: echo one\n")
    git(p.root, "init", "-q", "-b", "main")
    git(p.root, "add", "inventory")
    git(p.root, "commit", "-q", "-m", "one")
    p.run("--once", "--identity", str(p.key), code=0)
    assert sshd.logins() == 1
    before = _connections(sshd)
    # A history that does not descend from the commit reconciled: refused before the plan.
    git(p.root, "checkout", "-q", "--orphan", "rewritten")
    p.task("hello", "command: echo two\n")
    git(p.root, "add", "inventory")
    git(p.root, "commit", "-q", "-m", "not a descendant")
    result = p.run("--once", "--identity", str(p.key), code=3)
    assert "does not descend" in result.err
    assert any("does not descend" in r["body"]["message"] for r in receiver.requests)
    assert _connections(sshd) == before
    assert sshd.logins() == 1
