"""Over real sshd, through the CLI: a team's machine authenticates only with its own team's
vault key, or with a key file or the ssh-agent that the admin-owned settings grant to its
team (issue 11, item 7). A dev machine that names prod's host and prod's key path, or leaves
the key out to fall back on an agent that holds prod's key, runs nothing and logs nothing in.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.project import Project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
LOCATED = re.compile(r"^error: inventory/machines/dev\.yaml:\d+:\d+: ", re.M)


def _teams_project(tmp_path: Path, daemon, client_key) -> Project:
    """Teams prod and dev, prod's SSH key in a file on the reconciler's host, and a prod
    machine on the test sshd that uses it (granted to prod in the settings)."""
    p = Project(tmp_path)
    (p.inventory / "machines" / "box.yaml").unlink()
    (p.inventory / "teams" / "ops.yaml").unlink()
    for team in ("prod", "dev"):
        p.write(f"teams/{team}.yaml", f"name: {team}\n")
    p.prod_key = p.root / "prod_ed25519"
    p.prod_key.write_text(client_key.private)
    p.prod_key.chmod(0o600)
    p.reach = (
        f"host: 127.0.0.1\nport: {daemon.port}\nuser: {getpass.getuser()}\n"
        f"host_key: {daemon.host_key}\n"
    )
    p.write("machines/prod.yaml", f"name: prod-01\nteam: prod\n{p.reach}key_file: {p.prod_key}\n")
    p.write(
        "tasks/prod/hello.yaml",
        f"name: hello\nmachines: [prod-01]\ncommand: {p.record('prod-ran')}\n",
    )
    p.grant = f"credentials:\n  key_files: {{{json.dumps(str(p.prod_key))}: [prod]}}\n"
    p.write("reconciler.yaml", p.grant)
    return p


def _dev_task(p: Project) -> None:
    p.write(
        "tasks/dev/borrow.yaml",
        f"name: borrow\nmachines: [dev-01]\ncommand: {p.record('dev-ran-on-prod-host')}\n",
    )


def test_a_key_file_granted_to_its_team_is_used(tmp_path, sshd, client_key):
    p = _teams_project(tmp_path, sshd, client_key)
    p.run("--once", code=0)
    assert p.ledger_lines() == ["prod-ran"]


def test_dev_machine_naming_prods_key_file_is_refused_and_runs_nothing(tmp_path, sshd, client_key):
    p = _teams_project(tmp_path, sshd, client_key)
    p.write("machines/dev.yaml", f"name: dev-01\nteam: dev\n{p.reach}key_file: {p.prod_key}\n")
    _dev_task(p)
    result = p.run("--once", code=2)
    assert LOCATED.search(result.err), result.err
    assert "may not use key_file" in result.err and "grant it to prod only" in result.err
    assert "[dev]" in result.err  # the fix: the settings line an admin would add
    assert p.ledger_lines() == [] and sshd.logins() == 0
    assert "Traceback" not in result.err
    assert p.run("validate", code=2).err == result.err


def test_a_dotted_spelling_of_prods_key_path_is_refused_too(tmp_path, sshd, client_key):
    p = _teams_project(tmp_path, sshd, client_key)
    folder = p.prod_key.parent  # the same file, spelled otherwise
    dotted = f"{folder}/../{folder.name}//./{p.prod_key.name}"
    assert Path(dotted).read_text() == client_key.private
    p.write("machines/dev.yaml", f"name: dev-01\nteam: dev\n{p.reach}key_file: {dotted}\n")
    _dev_task(p)
    result = p.run("--once", code=2)
    assert "grant it to prod only" in result.err, result.err
    assert p.ledger_lines() == [] and sshd.logins() == 0


@pytest.fixture
def agent_with_prods_key(tmp_path, client_key):
    """A real ssh-agent holding prod's key: what a host's SSH_AUTH_SOCK often offers."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(sock.exists, timeout=10)
        key = tmp_path / "agent_key"
        key.write_text(client_key.private)
        key.chmod(0o600)
        subprocess.run(
            ["ssh-add", "-q", str(key)],
            env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
            check=True,
            capture_output=True,
        )
        yield {"SSH_AUTH_SOCK": str(sock)}
    finally:
        agent.terminate()
        agent.wait(10)


def test_dev_machine_without_key_cannot_fall_back_on_the_agent(
    tmp_path, sshd, client_key, agent_with_prods_key
):
    p = _teams_project(tmp_path, sshd, client_key)
    p.write("machines/dev.yaml", f"name: dev-01\nteam: dev\n{p.reach}")
    _dev_task(p)
    result = p.run("--once", env=agent_with_prods_key, code=2)
    assert LOCATED.search(result.err), result.err
    assert "ssh-agent" in result.err and "credentials: {agent: [dev]}" in result.err
    assert p.ledger_lines() == [] and sshd.logins() == 0


def test_agent_granted_to_a_team_is_used(tmp_path, sshd, client_key, agent_with_prods_key):
    p = _teams_project(tmp_path, sshd, client_key)
    p.write("machines/prod.yaml", f"name: prod-01\nteam: prod\n{p.reach}")
    p.write("reconciler.yaml", "credentials: {agent: [prod]}\n")
    p.run("--once", env=agent_with_prods_key, code=0)
    assert p.ledger_lines() == ["prod-ran"]


def test_dev_machine_cannot_use_a_key_of_prods_vault(tmp_path, sshd, client_key):
    p = _teams_project(tmp_path, sshd, client_key)
    identity = p.root / "host.key"
    public = p.run("vault", "keygen", "-o", str(identity), code=0).err.split("Public key: ")[1]
    for team in ("prod", "dev"):
        p.write(
            f"teams/{team}.yaml",
            f"name: {team}\nmembers:\n  - {{name: host, role: admin, age: {public.strip()}}}\n",
        )
    p.run(
        "vault",
        "set",
        "prod",
        "SSH_KEY",
        "-",
        "--identity",
        str(identity),
        code=0,
        input=client_key.private,
    )
    p.run(
        "vault",
        "set",
        "dev",
        "OTHER",
        "-",
        "--identity",
        str(identity),
        code=0,
        input="not-a-key\n",
    )
    p.write("machines/dev.yaml", f"name: dev-01\nteam: dev\n{p.reach}key: {{vault: SSH_KEY}}\n")
    _dev_task(p)
    result = p.run("validate", "--identity", str(identity), code=2)
    assert "secret 'SSH_KEY' is not in the vault of team 'dev'" in result.err
    data = p.run("--once", "--format", "json", "--identity", str(identity), code=1).json()
    borrow = next(r for r in data["runs"] if r["task"] == "dev/borrow")
    assert borrow["status"] == "failed"
    assert p.ledger_lines() == ["prod-ran"]  # prod's own machine still works with its file


def test_unknown_team_in_a_grant_is_a_located_error(tmp_path, sshd, client_key):
    p = _teams_project(tmp_path, sshd, client_key)
    p.write("reconciler.yaml", "credentials:\n  agent: [prdo]\n")
    result = p.run("validate", code=2)
    assert re.search(
        r"inventory/reconciler\.yaml:2:\d+: credentials: grants agent to unknown "
        r"team 'prdo'",
        result.err,
    ), result.err
    assert "prod" in result.err  # did you mean
