"""Real OpenSSH daemons on 127.0.0.1 for the SSH transport's integration tests.

Each `Sshd` is its own `/usr/sbin/sshd -D -e -f CONFIG` on a free port, with its own host
key(s), `authorized_keys`, config, log file (LogLevel VERBOSE: logins and auth attempts are
in it) and an empty HOME (`SetEnv HOME=...`): bash sources `~/.bashrc` for commands sshd
starts, and the tests must not depend on the root user's. It is ready when the port answers
with the `SSH-2.0-` banner (a deadline, never a sleep) and is stopped by PID.

The tests run as root, so the daemons do too: `UsePAM no`, `StrictModes no` (the test files
live under /tmp), `PermitRootLogin yes`. When `/usr/sbin/sshd` is missing the test is skipped,
or fails under RECONCILER_REQUIRE_INTEGRATION=1 (`.ci/run` installs openssh-server).

Fixtures: `client_key` (an ed25519 key pair generated for the test session, held in memory),
`sshd_factory` (starts daemons; all are stopped at teardown) and `sshd` (one daemon).
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from reconciler.core.model import Machine, VaultRef
from tests.support.integration import missing
from tests.support.waiting import wait_until

SSHD = "/usr/sbin/sshd"
KEY_VAULT_NAME = "SSH_KEY"  # the vault name the test machines' `key` refers to


@dataclass(frozen=True)
class KeyPair:
    """An SSH key pair: OpenSSH private key text and the `TYPE BASE64` public line."""

    private: str
    public: str


def generate_key(kind: str = "ed25519") -> KeyPair:
    """A fresh key pair in memory (`ed25519`, `ecdsa` or `rsa`)."""
    private = {
        "ed25519": lambda: ed25519.Ed25519PrivateKey.generate(),
        "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }[kind]()
    text = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return KeyPair(text, public)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def banner(port: int) -> bool:
    """True when an SSH server answers on `port` with its `SSH-2.0-` banner."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


class Sshd:
    """One test daemon; `start()` it, `machine()` describes it for the transport."""

    def __init__(
        self,
        root: Path,
        authorized: list[str],
        *,
        host_key_types=("ed25519",),
        log_level: str = "VERBOSE",
        max_sessions: int = 32,
    ):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "home").mkdir(exist_ok=True)
        self.port = free_port()
        self.log = self.root / "sshd.log"
        self.config = self.root / "sshd_config"
        self.authorized = self.root / "authorized_keys"
        self.authorized.write_text("".join(f"{key}\n" for key in authorized))
        self.key_types = tuple(host_key_types)
        self.log_level = log_level
        self.max_sessions = max_sessions
        self.proc: subprocess.Popen | None = None
        self.host_keys: dict[str, KeyPair] = {}
        self.new_host_keys()

    # ---------------------------------------------------------------- keys and config

    def new_host_keys(self) -> None:
        """Generate fresh host keys (takes effect at the next start)."""
        for kind in self.key_types:
            pair = generate_key(kind)
            path = self.root / f"host_{kind}"
            path.write_text(pair.private)
            path.chmod(0o600)  # sshd refuses a readable host key even with StrictModes no
            self.host_keys[kind] = pair

    @property
    def host_key(self) -> str:
        """The public line of the first host key: what the inventory pins."""
        return self.host_keys[self.key_types[0]].public

    def _write_config(self) -> None:
        keys = "".join(f"HostKey {self.root / f'host_{k}'}\n" for k in self.key_types)
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n{keys}"
            f"PidFile {self.root / 'sshd.pid'}\nAuthorizedKeysFile {self.authorized}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin yes\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"LogLevel {self.log_level}\nUseDNS no\nPrintMotd no\nPrintLastLog no\n"
            f"MaxSessions {self.max_sessions}\nMaxStartups 200:30:400\n"
            "Subsystem sftp internal-sftp\n"
            f"SetEnv HOME={self.root / 'home'}\n"
        )

    # ---------------------------------------------------------------- process

    def start(self, timeout: float = 10.0) -> Sshd:
        """Start the daemon and wait for its banner; fails the test if it does not come.
        A port taken meanwhile (by a parallel test worker) is replaced by another."""
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation dir
        for _ in range(3):
            if self._launch(timeout):
                return self
            if "Address already in use" not in self.log_text():
                break
            self.port = free_port()
        raise AssertionError(f"sshd exited with {self.proc.returncode}:\n{self.log_text()}")

    def _launch(self, timeout: float) -> bool:
        """Start sshd on `self.port`; True once it listens and answers, False if it exited.
        Its own "Server listening" line proves the banner is not another daemon's."""
        self._write_config()
        listening = f"Server listening on 127.0.0.1 port {self.port}."
        before = self.log_text().count(listening)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_until(
            lambda: (
                self.proc.poll() is not None
                or (self.log_text().count(listening) > before and banner(self.port))
            ),
            timeout,
            message=f"sshd on port {self.port} to answer",
        )
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the daemon and every process it started (connections and their commands)."""
        if self.proc is None:
            return
        tree = descendants(self.proc.pid)
        _kill([self.proc.pid, *tree], signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def drop_connections(self) -> list[int]:
        """Kill the daemon's per-connection processes like a network failure would, leaving
        the listener and the commands they ran alive; returns the killed pids."""
        assert self.proc is not None
        sshds = [pid for pid in descendants(self.proc.pid) if _comm(pid).startswith("sshd")]
        _kill(sshds, signal.SIGKILL)
        return sshds

    def restart(self, new_host_key: bool = False) -> None:
        """Stop and start again on the same port, with new host keys if asked."""
        self.stop()
        if new_host_key:
            self.new_host_keys()
        self.start()

    # ---------------------------------------------------------------- what the tests read

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def logins(self) -> int:
        """How many logins the daemon accepted (`Accepted publickey` in its log)."""
        return self.log_text().count("Accepted publickey")

    def machine(self, name: str = "m1", **fields) -> Machine:
        """A `transport: ssh` machine for this daemon: host key pinned, key from the vault."""
        values = dict(
            name=name,
            team="ops",
            transport="ssh",
            host="127.0.0.1",
            port=self.port,
            user=getpass.getuser(),
            host_key=(self.host_key,),
            key=VaultRef(KEY_VAULT_NAME),
            max_parallel=4,
        )
        values.update(fields)
        return Machine(**values)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def require_sshd() -> None:
    """Skip (or fail under RECONCILER_REQUIRE_INTEGRATION=1) without OpenSSH's sshd."""
    if not os.access(SSHD, os.X_OK):
        missing(f"{SSHD} is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        missing("the sshd tests start sshd as root and log in as the current user")


@pytest.fixture(scope="session")
def client_key() -> KeyPair:
    """The reconciler's SSH key for the tests: generated once, only in memory."""
    return generate_key("ed25519")


@pytest.fixture
def sshd_factory(tmp_path, client_key) -> Iterator[Callable[..., Sshd]]:
    """Starts test daemons (`factory(**Sshd options)`); stops all of them at teardown."""
    require_sshd()
    started: list[Sshd] = []

    def factory(authorized: list[str] | None = None, **options) -> Sshd:
        daemon = Sshd(
            tmp_path / f"sshd{len(started)}", authorized or [client_key.public], **options
        )
        started.append(daemon)
        return daemon.start()

    yield factory
    for daemon in started:
        daemon.stop()


@pytest.fixture
def transport(client_key, tmp_path):
    """An `SshTransport` that logs in with `client_key`, its markers under tmp_path (closed
    after the test)."""
    from reconciler.adapters.transport.ssh import SshTransport
    from reconciler.core.redact import Secret

    made = SshTransport(
        lambda machine: Secret(client_key.private),
        markers_dir=str(tmp_path / "markers"),
        connect_timeout=5,
    )
    yield made
    made.close()


@pytest.fixture
def sshd(sshd_factory) -> Sshd:
    """One running test daemon that authorizes `client_key`."""
    return sshd_factory()


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    """The text of `path` once it exists and is not empty."""
    return wait_until(
        lambda: path.exists() and path.read_text().strip(), timeout, message=f"{path} to be written"
    )


__all__ = [
    "KeyPair",
    "Sshd",
    "client_key",
    "descendants",
    "free_port",
    "generate_key",
    "sshd",
    "sshd_factory",
    "wait_for_file",
]
