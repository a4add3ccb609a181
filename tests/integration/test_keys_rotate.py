"""`reconcile keys rotate|prune|status` against real sshd: the new key is proven before the
vault holds it, a failure at any step before the vault write leaves the old key working and
the new key gone, and the old key is refused once removed (at once with --finish, or by
`prune` after the vault change was committed)."""

from __future__ import annotations

import getpass
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport.ssh import SshTransport
from reconciler.adapters.vault import team_vault
from reconciler.adapters.vault.secrets import load_identities
from reconciler.cli import args as cli_args
from reconciler.cli import keys_cmd
from reconciler.cli.main import present
from reconciler.cli.settings import Context, resolve
from reconciler.core.errors import AuthFailed, ReconcilerError
from reconciler.core.redact import Redactor, Secret
from reconciler.pipeline import keys
from tests.support.project import Project
from tests.support.sshd import KeyPair, generate_key
from tests.support.vault_project import vault_set

TIMEOUT = 10.0


# ---------------------------------------------------------------- pure planning (no sshd)


def test_parse_line_reads_options_comments_and_reconciler_tags():
    pair = generate_key()
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    comment = keys.key_comment("box", stamp, ["SHA256:abc"])
    line = keys.parse_line(f'from="10.0.0.1",no-pty {pair.public} {comment}')
    assert line.public == pair.public and line.options == 'from="10.0.0.1",no-pty'
    assert line.ours and line.created == stamp and line.replaces == {"SHA256:abc"}
    assert keys.parse_line("# a comment") is None and keys.parse_line("   ") is None
    plain = keys.parse_line(pair.public + " me@laptop")
    assert not plain.ours and plain.created is None and plain.replaces == set()
    assert plain.fingerprint == keys.fingerprint(pair.public)


def test_plans_never_remove_the_key_that_stays():
    old, new, human, stale = (generate_key() for _ in range(4))
    now = datetime.now(UTC)
    text = "\n".join(
        [
            old.public,
            human.public + " alice",
            f"{stale.public} {keys.key_comment('box', now)}",
            f"{new.public} {keys.key_comment('box', now, [keys.fingerprint(old.public)])}",
        ]
    )
    lines = keys.parse_authorized(text)
    assert {item.public for item in keys.finish_plan(lines, old.public, new.public)} == {
        old.public,
        stale.public,
    }
    assert {item.public for item in keys.prune_plan(lines, new.public)} == {
        old.public,
        stale.public,
    }
    # Before the new key is in the vault, prune keeps the old (vault) key and the human's.
    assert {item.public for item in keys.prune_plan(lines, old.public)} == {
        stale.public,
        new.public,
    }


def test_private_key_and_public_key_agree():
    private, public = keys.generate_key()
    assert keys.public_of(private) == " ".join(public.split()[:2])


# ---------------------------------------------------------------- against sshd


def _authorized_in_home(daemon) -> Path:
    """Make the daemon read `~/.ssh/authorized_keys` of its (test) HOME, where `rotate` writes:
    the configured file becomes a symlink to it (sshd follows it at every login)."""
    ssh_dir = daemon.root / "home" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    real = ssh_dir / "authorized_keys"
    real.write_text(daemon.authorized.read_text())
    real.chmod(0o600)
    daemon.authorized.unlink()
    daemon.authorized.symlink_to(real)
    return real


def _project(tmp_path, daemon, key: KeyPair) -> Project:
    project = Project(tmp_path)
    identity = project.root / "me.key"
    public = project.run("vault", "keygen", "-o", str(identity), code=0).err.split("Public key: ")[
        1
    ]
    project.write(
        "teams/ops.yaml",
        f"name: ops\nmembers:\n  - {{name: me, role: admin, age: {public.strip()}}}\n",
    )
    vault_set(project, "ops", "SSH_KEY", key.private, identity)
    project.write(
        "machines/box.yaml",
        f"name: box\nteam: ops\nhost: 127.0.0.1\n"
        f"port: {daemon.port}\nuser: {getpass.getuser()}\nhost_key: {daemon.host_key}\n"
        "key: {vault: SSH_KEY}\n",
    )
    project.identity = identity
    project.authorized = _authorized_in_home(daemon)
    store = open_store(f"sqlite:///{project.state}", create=True)
    store.close()
    return project


def _keys(project: Project, *argv: str, **hooks) -> int:
    """`reconcile keys ARGV` in-process (for the test hooks of `keys_cmd.run`): the exit
    code `main` would return."""
    args = cli_args.build_parser().parse_args(
        [
            "keys",
            *argv,
            "--inventory",
            str(project.inventory),
            "--state",
            f"sqlite:///{project.state}",
            "--identity",
            str(project.identity),
            "--timeout",
            str(TIMEOUT),
        ]
    )
    try:
        return present(keys_cmd.run(args, Context(resolve(args), Redactor()), **hooks), args)
    except ReconcilerError as exc:
        project.error = exc
        return exc.exit_code


def _vault_key(project: Project) -> str:
    path = team_vault.vault_path(project.inventory, "ops")
    return team_vault.read(path, load_identities(str(project.identity)))["SSH_KEY"]


def _login(daemon, private: str) -> None:
    """Log in over a new connection with only `private`; raises AuthFailed when refused."""
    transport = SshTransport(resolve_key=lambda m: Secret(private), connect_timeout=TIMEOUT)
    try:
        assert transport.query(daemon.machine("box"), "true", TIMEOUT).ok
    finally:
        transport.close()


def _audit_actions(project: Project) -> list[str]:
    store = open_store(f"sqlite:///{project.state}", create=False)
    try:
        return [entry.action for entry in store.iter_audit()]
    finally:
        store.close()


@pytest.mark.integration
def test_rotate_with_finish_replaces_the_key_and_the_old_one_is_refused(
    tmp_path, sshd, client_key, capsys
):
    p = _project(tmp_path, sshd, client_key)
    assert _keys(p, "rotate", "box", "--finish") == 0, p.error
    new = _vault_key(p)
    assert new.strip() != client_key.private.strip()
    lines = keys.parse_authorized(p.authorized.read_text())
    assert [line.public for line in lines] == [keys.public_of(new)]
    assert lines[0].ours and lines[0].replaces == {keys.fingerprint(client_key.public)}
    assert oct(p.authorized.stat().st_mode & 0o777) == "0o600"
    _login(sshd, new)
    with pytest.raises(AuthFailed):
        _login(sshd, client_key.private)
    assert _audit_actions(p) == [
        "keys.generate",
        "keys.add",
        "keys.verify",
        "vault.write",
        "keys.vault",
        "keys.remove",
        "keys.refused",
    ]
    out = capsys.readouterr().out
    assert "removed and refused" in out
    assert "PRIVATE KEY" not in out
    assert b"PRIVATE KEY" not in p.state.read_bytes()


@pytest.mark.integration
def test_a_failed_verify_keeps_the_old_key_and_removes_the_new_one(tmp_path, sshd, client_key):
    p = _project(tmp_path, sshd, client_key)
    before = p.authorized.read_text()

    def break_new_key(step: str) -> None:
        """After the new key was added: only logins from elsewhere may use it."""
        if step == "add":
            text = p.authorized.read_text().splitlines()
            p.authorized.write_text("\n".join(text[:-1] + ['from="192.0.2.1" ' + text[-1]]) + "\n")

    assert _keys(p, "rotate", "box", "--finish", on_step=break_new_key) == 3
    assert isinstance(p.error, keys.RotationFailed) and p.error.step == "verify"
    assert "step 'verify' failed" in str(p.error)
    assert p.authorized.read_text() == before  # the new (broken) line is gone again
    assert _vault_key(p).strip() == client_key.private.strip()
    _login(sshd, client_key.private)
    actions = _audit_actions(p)
    assert actions == ["keys.generate", "keys.add", "keys.failed", "keys.cleanup"]


@pytest.mark.integration
def test_a_vault_that_cannot_be_written_leaves_the_machine_as_it_was(tmp_path, sshd, client_key):
    p = _project(tmp_path, sshd, client_key)
    before = p.authorized.read_text()

    def change_vault_meanwhile(step: str) -> None:
        if step == "verify":  # someone else rotates the key in the working copy meanwhile
            vault_set(p, "ops", "SSH_KEY", generate_key().private, p.identity)

    assert _keys(p, "rotate", "box", on_step=change_vault_meanwhile) == 2
    assert "changed while rotating" in str(p.error)
    assert p.authorized.read_text() == before
    _login(sshd, client_key.private)


@pytest.mark.integration
def test_two_phase_rotate_then_prune_after_the_vault_commit(tmp_path, sshd, client_key, capsys):
    p = _project(tmp_path, sshd, client_key)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=p.root, check=True, timeout=30)
    subprocess.run([*git, "add", "inventory"], cwd=p.root, check=True, timeout=30)
    subprocess.run([*git, "commit", "-qm", "inventory"], cwd=p.root, check=True, timeout=30)

    assert _keys(p, "rotate", "box") == 0, p.error
    new = _vault_key(p)
    # Phase one: both keys work, so a reconciler still reading the old vault is not locked out.
    _login(sshd, new)
    _login(sshd, client_key.private)
    assert len(keys.parse_authorized(p.authorized.read_text())) == 2
    assert "keys prune box" in capsys.readouterr().out
    changed = subprocess.run(
        [*git, "status", "--porcelain"],
        cwd=p.root,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "inventory/vaults/ops.age" in changed
    subprocess.run([*git, "commit", "-qam", "rotate box"], cwd=p.root, check=True, timeout=30)

    # Phase two, once the vault change is live: prune removes the replaced key.
    assert _keys(p, "prune", "box") == 0, p.error
    assert "removed " + keys.fingerprint(client_key.public) in capsys.readouterr().out
    assert [item.public for item in keys.parse_authorized(p.authorized.read_text())] == [
        keys.public_of(new)
    ]
    _login(sshd, new)
    with pytest.raises(AuthFailed):
        _login(sshd, client_key.private)
    assert _keys(p, "prune", "box") == 0  # idempotent
    assert "nothing to remove" in capsys.readouterr().out
    assert _audit_actions(p)[-3:] == ["keys.remove", "keys.verify", "keys.verify"]


@pytest.mark.integration
def test_status_shows_the_key_age(tmp_path, sshd, client_key, capsys):
    p = _project(tmp_path, sshd, client_key)
    assert _keys(p, "status", "--format", "json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["machine"] == "box" and row["source"] == "vault" and row["age_days"] is not None
    assert _keys(p, "rotate", "box", "--finish") == 0
    capsys.readouterr()
    assert _keys(p, "status", "--format", "json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["source"] == "authorized_keys" and row["age_days"] < 1 and row["error"] is None
    assert row["fingerprint"] == keys.fingerprint(keys.public_of(_vault_key(p)))


def test_only_vault_keyed_ssh_machines_can_be_rotated(tmp_path):
    p = Project(tmp_path)  # its box is `transport: local`
    p.identity = tmp_path / "none"
    assert _keys(p, "rotate", "box") == 2
    assert "key: {vault: NAME}" in str(p.error)
