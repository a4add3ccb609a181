"""Host key pinning against real sshd: only the inventory's key is trusted, before any auth."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from reconciler.adapters.transport import hostkeys
from reconciler.core.errors import HostKeyMismatch, Unreachable
from tests.support.sshd import generate_key

AUTH_WORDS = (
    "Accepted publickey",
    "Failed publickey",
    "Postponed publickey",
    "userauth",
    "Invalid user",
    "Authentication refused",
)


def _fingerprint(line: str) -> str:
    return hostkeys.parse_host_key(line).fingerprint


def test_a_server_presenting_another_key_is_refused_before_authentication(sshd, transport):
    pinned = generate_key().public  # not the daemon's key
    machine = sshd.machine(host_key=(pinned,))
    with pytest.raises(HostKeyMismatch) as caught:
        transport.run(machine, "touch /tmp/should-never-run", {}, 10, 1)
    message = str(caught.value)
    assert "host key mismatch" in message
    assert _fingerprint(sshd.host_key) in message and _fingerprint(pinned) in message
    assert "keyscan" in message and "Nothing was sent" in message
    assert caught.value.retryable is False
    log = sshd.log_text()
    assert "Connection from 127.0.0.1" in log or "Connection closed" in log
    assert not any(word in log for word in AUTH_WORDS), log


def test_a_changed_host_key_is_refused_after_a_restart(sshd, transport):
    machine = sshd.machine()
    assert transport.run(machine, "echo ok", {}, 10, 1).output == "ok\n"
    old_key = sshd.host_key
    sshd.restart(new_host_key=True)
    with pytest.raises(HostKeyMismatch) as caught:
        transport.run(machine, "echo ok", {}, 10, 2)
    assert _fingerprint(old_key) in str(caught.value)
    assert _fingerprint(sshd.host_key) in str(caught.value)


def test_the_pin_is_keyed_by_host_and_port(sshd_factory, transport):
    first, second = sshd_factory(), sshd_factory()
    assert transport.run(first.machine(), "echo one", {}, 10, 1).output == "one\n"
    # The same host, another port, with the first daemon's key pinned: refused.
    crossed = second.machine("m2", host_key=(first.host_key,))
    with pytest.raises(HostKeyMismatch):
        transport.run(crossed, "echo two", {}, 10, 2)
    assert transport.run(second.machine("m2"), "echo two", {}, 10, 3).output == "two\n"
    assert hostkeys.entry_name("127.0.0.1", second.port) == f"[127.0.0.1]:{second.port}"
    assert hostkeys.entry_name("example.org", 22) == "example.org"


def test_known_hosts_grants_no_trust_and_is_never_written(sshd, transport, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    known = home / ".ssh" / "known_hosts"
    # A matching entry for the real key, while the inventory pins another one.
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n127.0.0.1 {sshd.host_key}\n")
    before = known.read_bytes()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(HostKeyMismatch):
        transport.run(sshd.machine(host_key=(generate_key().public,)), "echo ok", {}, 10, 1)
    assert transport.run(sshd.machine("m2"), "echo ok", {}, 10, 2).ok
    assert known.read_bytes() == before
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["known_hosts"]
    real = Path(os.path.expanduser("~root")) / ".ssh" / "known_hosts"
    assert not real.exists() or f"{sshd.port}" not in real.read_text()


def test_a_rotation_list_trusts_any_of_its_keys(sshd, transport):
    machine = sshd.machine(host_key=(generate_key().public, sshd.host_key))
    assert transport.run(machine, "echo ok", {}, 10, 1).ok


def test_the_server_is_asked_for_the_pinned_key_type(sshd_factory, transport):
    daemon = sshd_factory(host_key_types=("ed25519", "ecdsa"))
    ecdsa = daemon.host_keys["ecdsa"].public
    assert transport.run(daemon.machine(host_key=(ecdsa,)), "echo ok", {}, 10, 1).ok
    rsa_pin = generate_key("rsa").public  # a type this server does not have
    with pytest.raises(HostKeyMismatch) as caught:
        transport.run(daemon.machine("m2", host_key=(rsa_pin,)), "echo ok", {}, 10, 2)
    message = str(caught.value)
    assert "no key of a pinned type" in message and _fingerprint(daemon.host_key) in message


def test_a_machine_without_host_key_is_never_contacted(sshd, transport):
    connections = sshd.log_text().count("Connection from")  # the fixture's banner check
    with pytest.raises(HostKeyMismatch, match="no host_key"):
        transport.run(sshd.machine(host_key=()), "echo ok", {}, 10, 1)
    assert sshd.log_text().count("Connection from") == connections


def test_keyscan_shows_every_key_type_without_logging_in(sshd_factory):
    daemon = sshd_factory(host_key_types=("ed25519", "ecdsa"))
    keys = hostkeys.scan("127.0.0.1", daemon.port, timeout=5)
    assert [k.type for k in keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]
    assert keys[0].line == f"host_key: {daemon.host_key}"
    assert keys[0].fingerprint == _fingerprint(daemon.host_key)
    assert not any(word in daemon.log_text() for word in AUTH_WORDS)


def test_keyscan_of_a_closed_port_is_unreachable(sshd):
    sshd.stop()
    with pytest.raises(Unreachable):
        hostkeys.scan("127.0.0.1", sshd.port, timeout=2)


def test_a_pool_connection_is_not_reused_once_the_pin_changes(sshd, transport):
    machine = sshd.machine()
    assert transport.run(machine, "echo ok", {}, 10, 1).ok
    with pytest.raises(HostKeyMismatch):
        transport.run(
            dataclasses.replace(machine, host_key=(generate_key().public,)), "echo ok", {}, 10, 2
        )
