"""Projects with team vaults, shared by the end-to-end tests as fixtures (registered in
`tests/conftest.py`): `vaulted` (one team, an admin and a viewer, DB_PASSWORD set) and
`two_teams` (prod and dev, each vault readable by the reconciler's own identity); `keygen`,
`vault_set` and `vaulted_http` for tests that build their own."""

from __future__ import annotations

from pathlib import Path

import pytest


def keygen(project, name: str) -> tuple[Path, str]:
    """A new age identity file in the project, and its public key, through `vault keygen`."""
    key = project.root / f"{name}.key"
    result = project.run("vault", "keygen", "-o", str(key), code=0)
    public = result.err.strip().split("Public key: ")[1]
    return key, public


def vault_set(project, team: str, name: str, value: str, identity: Path) -> None:
    """`reconcile vault set TEAM NAME -` with `value` on stdin (never in argv), as `identity`."""
    project.run("vault", "set", team, name, "-", "--identity", str(identity), code=0, input=value)


def vaulted_http(project, token: str, hook_secret: str) -> dict[str, str]:
    """Put `token` and `hook_secret` in the ops vault as alice and name them as the daemon's
    `http.token` and `http.hook_secret`, with a hello task; the environment the daemon
    reads the vault with (alice's identity) is returned."""
    vault_set(project, "ops", "CONSOLE_TOKEN", token, project.alice)
    vault_set(project, "ops", "GIT_HOOK", hook_secret, project.alice)
    project.write(
        "reconciler.yaml",
        "http:\n  token: {vault: CONSOLE_TOKEN, team: ops}\n"
        "  hook_secret: {vault: GIT_HOOK, team: ops}\n",
    )
    project.task("hello", f"command: {project.record('hello')}\n")
    return {"RECONCILE_IDENTITY_FILE": str(project.alice)}


SECRET = "s3cret-Value-4711"


@pytest.fixture
def vaulted(project):
    """A team with an admin (alice), a viewer (bob) and DB_PASSWORD in its vault."""
    alice_key, alice = keygen(project, "alice")
    bob_key, bob = keygen(project, "bob")
    project.write(
        "teams/ops.yaml",
        f"name: ops\nmembers:\n  - {{name: alice, role: admin, "
        f"age: {alice}}}\n  - {{name: bob, role: viewer, age: {bob}}}\n",
    )
    project.alice, project.bob = alice_key, bob_key
    vault_set(project, "ops", "DB_PASSWORD", SECRET + "\n", alice_key)
    return project


PROD_PASSWORD = "prod-DB-pa55word-0042"


@pytest.fixture
def two_teams(project):
    """Teams prod and dev, each vault encrypted to its admin and to the reconciler's identity
    (which therefore reads both), each holding its own DB_PASSWORD."""
    host_key, host = keygen(project, "reconciler")
    prod_key, prod = keygen(project, "alice")
    dev_key, dev = keygen(project, "dave")
    for team, admin, public in (("prod", "alice", prod), ("dev", "dave", dev)):
        project.write(
            f"teams/{team}.yaml",
            f"name: {team}\nrecipients: [{host}]\nmembers:\n"
            f"  - {{name: {admin}, role: admin, age: {public}}}\n",
        )
        project.write(
            f"machines/{team}-box.yaml", f"name: {team}-box\nteam: {team}\ntransport: local\n"
        )
    (project.inventory / "teams" / "ops.yaml").unlink()
    (project.inventory / "machines" / "box.yaml").unlink()
    # Both machines are local and run as the reconciler's user: allowed for this test only
    # (the vault check under test must hold even so).
    project.write("reconciler.yaml", "local_machines: {allow_shared_user: true}\n")
    project.host_key, project.dev_key = host_key, dev_key
    vault_set(project, "prod", "DB_PASSWORD", PROD_PASSWORD + "\n", prod_key)
    vault_set(project, "dev", "DB_PASSWORD", "dev-password-1\n", dev_key)
    return project
