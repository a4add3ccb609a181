"""Pinned host keys: the only keys an SSH connection trusts, and `keyscan` to learn one.

Trust comes from the inventory alone (SPEC §1 Machine `host_key`): a fresh `HostKeys` built from
those lines, never `~/.ssh/known_hosts`. The key algorithms offered to the server are limited to
the pinned types, so a server that also holds another kind of key presents the pinned one (and
one that holds none of them fails the key exchange, which is a mismatch too).
"""

from __future__ import annotations

import base64
import binascii
import socket
from dataclasses import dataclass

from reconciler.adapters.transport.sshlib import paramiko
from reconciler.core.errors import HostKeyMismatch, Unreachable
from reconciler.core.model import Machine

# Public key type -> the host key algorithms that present it. RSA keys sign with SHA-2;
# paramiko no longer accepts SHA-1 `ssh-rsa` signatures.
ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
# keyscan's order of preference, one key exchange per family (like ssh-keyscan).
SCAN_FAMILIES = (
    ("ssh-ed25519",),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    ("rsa-sha2-512", "rsa-sha2-256"),
)


@dataclass(frozen=True)
class ScannedKey:
    """A host key a server presented: its type, base64 body and SHA256 fingerprint."""

    type: str
    base64: str
    fingerprint: str

    @property
    def line(self) -> str:
        """The `host_key:` line to paste into the machine's YAML."""
        return f"host_key: {self.type} {self.base64}"


def parse_host_key(line: str) -> paramiko.PKey:
    """A `host_key` entry (`TYPE BASE64 [comment]`) as a public key; raises HostKeyMismatch
    (never retried) when it cannot be read, since nothing could then be trusted."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in ALGORITHMS:
        raise HostKeyMismatch(
            f"host_key {line[:40]!r} is not an SSH public key line "
            f"(TYPE BASE64, type one of {', '.join(ALGORITHMS)})"
        )
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except (binascii.Error, ValueError, paramiko.SSHException) as exc:
        raise HostKeyMismatch(
            f"host_key {parts[0]} {parts[1][:16]}...: cannot be read ({exc})"
        ) from exc


def entry_name(host: str, port: int) -> str:
    """How paramiko names a host in its key table: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def pinned(machine: Machine) -> list[tuple[str, paramiko.PKey]]:
    """`machine`'s pinned keys as (key table entry name, key); raises HostKeyMismatch when it
    has none or one cannot be read, before anything touches the network."""
    if not machine.host_key:
        raise HostKeyMismatch(
            f"machine '{machine.name}' has no host_key: nothing to trust; run "
            f"'reconcile machines keyscan {target(machine)}' and pin it"
        )
    name = entry_name(machine.host or "", machine.port)
    return [(name, parse_host_key(line)) for line in machine.host_key]


def pin(table: paramiko.HostKeys, keys: list[tuple[str, paramiko.PKey]]) -> paramiko.HostKeys:
    """`table` (a client's fresh, empty key table: no file is read or written) holding the
    pinned `keys` and nothing else."""
    table.clear()
    for name, key in keys:
        table.add(name, key.get_name(), key)
    return table


def disabled_host_key_algorithms(types: set[str] | tuple[str, ...]) -> list[str]:
    """Every host key algorithm paramiko knows except those presenting a key of `types`."""
    allowed = {alg for t in types for alg in ALGORITHMS.get(t, ())}
    known = set(paramiko.Transport._preferred_keys) | {
        alg for algs in ALGORITHMS.values() for alg in algs
    }
    # Certificates are never pinned; offering them would let the server pick one.
    known |= {f"{alg}-cert-v01@openssh.com" for alg in known}
    return sorted(known - allowed)


def pinned_types(machine: Machine) -> set[str]:
    """The key types of `machine`'s `host_key` entries."""
    return {line.split()[0] for line in machine.host_key if line.split()}


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` fingerprint of a public key."""
    return key.fingerprint


def target(machine: Machine) -> str:
    """`host` or `host:port`, as `keyscan` takes it."""
    return machine.host if machine.port == 22 else f"{machine.host}:{machine.port}"


def mismatch(
    machine: Machine, presented: paramiko.PKey | None, detail: str = ""
) -> HostKeyMismatch:
    """The error for a server whose key is not pinned: both fingerprints and what to check."""
    expected = ", ".join(
        fingerprint(parse_host_key(k)) + f" ({k.split()[0]})" for k in machine.host_key
    )
    got = (
        f"{fingerprint(presented)} ({presented.get_name()})"
        if presented is not None
        else "no key of a pinned type" + (f" ({detail})" if detail else "")
    )
    return HostKeyMismatch(
        f"machine '{machine.name}' ({target(machine)}): host key mismatch: the server presented "
        f"{got}, the inventory pins {expected}. Nothing was sent. Check with the machine's "
        f"administrator whether its host key was changed (reinstall, rotation) or someone is "
        f"intercepting the connection; only after verifying the new key out of band, run "
        f"'reconcile machines keyscan {target(machine)}' and update host_key"
    )


def scan(host: str, port: int, timeout: float = 10.0) -> list[ScannedKey]:
    """The host keys `host:port` presents, one per key family, without authenticating.

    This is the one place that accepts an unknown key, and only to show it to a human.
    Raises Unreachable when the server cannot be reached or speaks no SSH.
    """
    found: list[ScannedKey] = []
    for family in SCAN_FAMILIES:
        key = _scan_one(host, port, timeout, family)
        if key is not None and all(k.base64 != key.get_base64() for k in found):
            found.append(ScannedKey(key.get_name(), key.get_base64(), fingerprint(key)))
    if not found:
        raise Unreachable(f"{host}:{port}: the server offered no host key we can read")
    return found


def _scan_one(host: str, port: int, timeout: float, family: tuple[str, ...]):
    """The server's key of one family, or None when it has none; a key exchange, no auth."""
    sock = open_socket(host, port, timeout)
    transport = paramiko.Transport(
        sock,
        disabled_algorithms={
            "keys": [a for a in disabled_host_key_algorithms(()) if a not in family]
        },
    )
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.ssh_exception.IncompatiblePeer:
        return None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise Unreachable(f"{host}:{port}: SSH key exchange failed: {exc}") from exc
    finally:
        transport.close()


def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket with Nagle off and dead-peer detection on.

    Without TCP_NODELAY every small request waits on the peer's delayed ACK (DESIGN §6:
    9.4 s against 0.72 s for 200 commands). Keepalive probes and TCP_USER_TIMEOUT make a
    silently vanished peer an error within about a minute instead of the kernel's ~15.
    Raises Unreachable (retryable) for refused, timed out and unresolvable hosts.
    """
    # An ASCII name goes to the resolver as bytes: as text, Python would import its IDNA
    # codec (and unicodedata) to encode it, several milliseconds of every pass's start.
    address = host.encode("ascii") if host.isascii() else host
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except socket.gaierror as exc:
        raise Unreachable(
            f"{host}:{port} is unreachable: cannot resolve the host name ({exc.strerror})"
        ) from exc
    except TimeoutError as exc:
        raise Unreachable(f"{host}:{port} is unreachable: no answer within {timeout:g}s") from exc
    except OSError as exc:
        raise Unreachable(f"{host}:{port} is unreachable: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", 30),
        ("TCP_KEEPINTVL", 10),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 60_000),
    ):
        if hasattr(socket, name):  # Linux; elsewhere the system defaults stand
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock
