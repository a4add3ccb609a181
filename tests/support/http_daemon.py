"""A real daemon (`python -m reconciler --http-addr 127.0.0.1:0 --log-format json`) whose
stderr goes to a file, and the address it says it serves: the kernel picks the port, the
daemon's start-up line names it."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import clean_environment, reaped
from tests.support.waiting import wait_until


@dataclass
class Served:
    proc: subprocess.Popen
    address: str
    log: Path

    def ask(self, method: str, path: str, body: bytes | None = None, headers=None):
        """(status, headers, body) of one request."""
        host, port = self.address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def log_text(self) -> str:
        return self.log.read_text()


def served_address(log: Path, words: str = "/hooks/git at http://") -> str | None:
    """The address of the daemon's start-up line holding `words`, once it is written."""
    for line in log.read_text().splitlines():
        if line.startswith("{") and words in line:
            return json.loads(line)["address"]
    return None


@contextmanager
def http_daemon(
    root: Path, *args: str, env: dict | None = None, log: Path | None = None
) -> Iterator[Served]:
    """`reconcile --http-addr 127.0.0.1:0 --log-format json ARGS` in `root`, until the block
    ends (then killed if still running)."""
    log = log or root / "daemon.log"
    argv = ["--http-addr", "127.0.0.1:0", "--log-format", "json", *args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *argv],
        cwd=root,
        env=clean_environment(env),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    with reaped(proc):
        address = wait_until(
            lambda: served_address(log) or (proc.poll() is not None and "exited"),
            timeout=60,
            message="the daemon to say where it serves",
        )
        assert address != "exited", log.read_text()
        yield Served(proc, address, log)
