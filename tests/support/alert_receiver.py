"""An apprise `json://` alert target on 127.0.0.1, for tests that send alerts for real.

`AlertReceiver(port=0, status=200)` serves HTTP in a thread and records every POST it gets in
`requests` ({"path", "body", "status"}); `url()` is the team's alert target. The test sets
`status` to make deliveries fail (5xx), or sets `hold` to keep requests waiting until
`released` is set (`held` says one is being held). Tests wait on what it recorded with
`wait_until`, never sleep. The `receiver` fixture is one running receiver, closed afterwards.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest


class AlertReceiver:
    """Records each alert apprise posts to it: path, JSON body (title, message), status answered."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict] = []
        self.hold = threading.Event()  # set: requests wait for `released`
        self.held = threading.Event()  # a request is being held
        self.released = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.hold.is_set():
                    receiver.held.set()
                    receiver.released.wait(30)
                receiver.requests.append(
                    {"path": self.path, "body": body, "status": receiver.status}
                )
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    @property
    def bodies(self) -> list[dict]:
        """The JSON body of every request, answered or not."""
        return [r["body"] for r in self.requests]

    def delivered(self) -> list[dict]:
        """Bodies the receiver accepted (2xx)."""
        return [r["body"] for r in self.requests if r["status"] < 300]

    def titles(self, containing: str = "") -> list[str]:
        return [b.get("title", "") for b in self.bodies if containing in b.get("title", "")]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """A running AlertReceiver, closed after the test."""
    made = AlertReceiver()
    yield made
    made.close()


__all__ = ["AlertReceiver", "receiver"]
