"""An apprise `json://` alert target on 127.0.0.1 for tests that run `reconcile` as a subprocess.

`AlertReceiver()` serves HTTP in a thread and records the JSON body of every POST; `url()`
is the team's alert target. Tests wait on `received` with `wait_until`, never sleep.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest


class AlertReceiver:
    """Records every alert apprise posts to it (title and message of the JSON body)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def titles(self, containing: str = "") -> list[str]:
        return [b.get("title", "") for b in self.bodies if containing in b.get("title", "")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """A running AlertReceiver, closed after the test."""
    made = AlertReceiver()
    yield made
    made.close()


__all__ = ["AlertReceiver", "receiver"]
