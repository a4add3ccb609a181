"""A rollout over real sshd (issue 15 §1): three ssh machines (one sshd, three names), in
batches of one; the command and then the rollout's `verify` run on each machine through the
same SSH transport, and the verify that fails on the second machine fails its run, halts the
third and makes the pass exit 1."""

from __future__ import annotations

import getpass

import pytest

from tests.support.ssh_project import ssh_project

pytestmark = pytest.mark.integration


def test_a_rollout_over_ssh_halts_when_a_verify_fails(tmp_path, sshd, client_key):
    p = ssh_project(tmp_path, sshd.port, sshd.host_key, client_key)
    box = (p.inventory / "machines" / "box.yaml").read_text()
    for name in ("web1", "web2", "web3"):
        p.write(f"machines/{name}.yaml", box.replace("name: box", f"name: {name}"))
    ledger = tmp_path / "ssh-ledger"
    p.write(
        "tasks/ops/deploy.yaml",
        "name: deploy\nmachines: [web1, web2, web3]\n"
        f'command: echo "$RECONCILE_MACHINE as $(id -un)" >> "{ledger}"\n'
        "rollout:\n  batches: [1, 2, 3]\n"
        "  verify: 'test \"$RECONCILE_MACHINE\" != web2 || { echo down; exit 4; }'\n",
    )

    data = p.run("--once", "--format", "json", "--identity", str(p.key), code=1).json()

    status = {r["machine"]: r["status"] for r in data["runs"]}
    assert status == {"web1": "succeeded", "web2": "failed", "web3": "halted"}
    user = getpass.getuser()
    assert ledger.read_text().splitlines() == [f"web1 as {user}", f"web2 as {user}"]
    web2 = next(r["id"] for r in data["runs"] if r["machine"] == "web2")
    shown = p.run("queue", "show", str(web2), "--format", "json", code=0).json()
    assert shown["exit_code"] == 4 and shown["output"].endswith("--- verify ---\ndown\n")
    assert "verify failed with exit code 4" in shown["error"]
