"""Client keys against real sshd: from the vault (in memory only), a key file, the ssh-agent."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from reconciler.adapters.transport.ssh import SshTransport
from reconciler.core.errors import AuthFailed, VaultError
from reconciler.core.redact import Secret
from tests.support.sshd import generate_key
from tests.support.waiting import wait_until


def _transport(tmp_path, resolve=lambda machine: None) -> SshTransport:
    return SshTransport(resolve, markers_dir=str(tmp_path / "markers"), connect_timeout=5)


# Installed packages and repositories: nothing the transport could write a key into.
SKIP = {"site-packages", "dist-packages", "node_modules", ".git", "__pycache__"}


def _files_containing(needles: list[bytes], roots: list[Path], since: float) -> list[Path]:
    """Regular files under `roots` changed since `since` that hold any of `needles`."""
    found = []
    for root in roots:
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [d for d in subfolders if d not in SKIP]
            for name in names:
                path = Path(folder, name)
                try:
                    info = path.lstat()
                    if (
                        not path.is_file()
                        or info.st_mtime < since
                        or info.st_size > 4 * 1024 * 1024
                    ):
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                if any(needle in data for needle in needles):
                    found.append(path)
    return found


def test_a_vault_key_is_used_in_memory_and_never_written(sshd_factory, tmp_path):
    since = time.time() - 1
    key = generate_key()
    daemon = sshd_factory(authorized=[key.public])
    transport = _transport(tmp_path, lambda machine: Secret(key.private))
    try:
        assert transport.run(daemon.machine(), "echo ok", {}, 10, 1).output == "ok\n"
    finally:
        transport.close()
    private = serialization.load_ssh_private_key(key.private.encode(), None)
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    # The lines of the key's base64 body that no other key of its type shares.
    common = set(generate_key().private.splitlines())
    body = [line.encode() for line in key.private.splitlines()[1:-1] if line not in common]
    assert body
    assert _files_containing([raw, *body], [Path("/tmp"), Path.cwd(), Path.home()], since) == []


def test_a_key_file_is_used(sshd_factory, tmp_path):
    key = generate_key("ecdsa")
    path = tmp_path / "id_test"
    path.write_text(key.private)
    path.chmod(0o600)
    daemon = sshd_factory(authorized=[key.public])
    transport = _transport(tmp_path)
    try:
        machine = daemon.machine(key=None, key_file=str(path))
        assert transport.run(machine, "echo ok", {}, 10, 1).ok
        with pytest.raises(AuthFailed, match="cannot read key_file"):
            transport.run(
                daemon.machine("m2", key=None, key_file=str(tmp_path / "absent")),
                "echo ok",
                {},
                10,
                2,
            )
    finally:
        transport.close()


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """A real ssh-agent holding a fresh key; SSH_AUTH_SOCK points at it."""
    key = generate_key()
    socket_path = tmp_path / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(socket_path.exists, timeout=10, message="ssh-agent's socket")
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(
            ["ssh-add", "-q", "-"],
            input=key.private.encode(),
            env=env,
            check=True,
            capture_output=True,
        )
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        yield key
    finally:
        proc.kill()
        proc.wait()


def test_the_ssh_agent_is_used_when_no_key_is_given(sshd_factory, agent, tmp_path):
    daemon = sshd_factory(authorized=[agent.public])
    transport = _transport(tmp_path)
    try:
        assert transport.run(daemon.machine(key=None), "echo ok", {}, 10, 1).ok
    finally:
        transport.close()


def test_no_key_and_no_agent_is_auth_failed(sshd, tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    transport = _transport(tmp_path)
    try:
        with pytest.raises(AuthFailed):
            transport.run(sshd.machine(key=None), "echo ok", {}, 10, 1)
    finally:
        transport.close()


def test_unusable_vault_keys_are_auth_failed_before_connecting(sshd, tmp_path):
    encrypted = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "passphrase", "-f", str(tmp_path / "enc")],
        check=True,
    )
    assert encrypted.returncode == 0
    cases = {
        "encrypted": lambda machine: Secret((tmp_path / "enc").read_text()),
        "not an OpenSSH private key": lambda machine: Secret("not a key"),
        "could not be resolved": lambda machine: None,
        "no identity": lambda machine: (_ for _ in ()).throw(VaultError("no identity")),
    }
    for words, resolve in cases.items():
        transport = _transport(tmp_path, resolve)
        try:
            with pytest.raises(AuthFailed, match=words) as caught:
                transport.run(sshd.machine(), "echo ok", {}, 10, 1)
            assert caught.value.retryable is False
        finally:
            transport.close()
    assert "Accepted" not in sshd.log_text()
