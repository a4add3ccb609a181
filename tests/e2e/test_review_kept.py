"""Hostile review of the daemon's kept SSH logins and runners (`adapters/transport/kept.py`,
e0e25c8) through the CLI, against real sshd: what the daemon keeps from pass to pass must
go once no pass can use it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.cli import reaped, spawn
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _project(tmp_path, sshd, client_key, **options):
    return ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key, **options)


def _recorder(p, word: str) -> str:
    """A task command that writes `word` and its runner (the command's parent) to the ledger."""
    return f'command: echo {word} $PPID >> "{p.ledger}"\n'


def _ran(p, word: str) -> list[str]:
    """The runner of each run of `word` in the ledger."""
    lines = p.ledger.read_text().splitlines() if p.ledger.exists() else []
    return [line.split()[1] for line in lines if line.split()[0] == word]


def _alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_login_of_an_earlier_ssh_keepalive_setting_closes_once_no_pass_uses_it(
    tmp_path, sshd, client_key
):
    """The daemon keeps one SSH transport per liveness setting: after `ssh_keepalive` changed
    in the inventory, the passes log in again on a transport of the new setting, and the
    old one (its login, its runner) was kept for ever, no pass ever borrowing it again."""
    p = _project(tmp_path, sshd, client_key, max_parallel=1, settings="poll_interval: 1s\n")
    p.task("first", _recorder(p, "first"))
    with reaped(spawn("--identity", str(p.key), "-q", cwd=p.root)) as daemon:
        wait_until(lambda: _ran(p, "first"), timeout=30, message="first")
        p.write("reconciler.yaml", "poll_interval: 1s\nssh_keepalive: 5s\n")
        p.task("second", _recorder(p, "second"))
        wait_until(lambda: _ran(p, "second"), timeout=30, message="second")
        wait_until(lambda: not _alive(_ran(p, "first")[0]), timeout=10, message="the old runner")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert sshd.logins() == 2
