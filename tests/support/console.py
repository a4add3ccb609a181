"""The web console as a user reaches it: `reconcile serve` as a subprocess on a free loopback
port, requests over real HTTP, and (for the browser tests) headless Chromium driven through
chromedriver by selenium.

A missing Chromium or chromedriver skips a browser test with the reason, and fails it under
RECONCILER_REQUIRE_INTEGRATION=1 (CI installs Debian's `chromium` and `chromium-driver`).
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import spawn
from tests.support.integration import require_binary
from tests.support.waiting import wait_until


@dataclass
class Served:
    """A running `reconcile serve`: its base URL and its process."""

    url: str
    host: str
    port: int
    proc: subprocess.Popen

    def get(self, target: str, method: str = "GET", body: bytes | None = None, headers=None):
        """(status, headers, body) of one request over a fresh connection."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()

    def json(self, target: str):
        status, _, body = self.get(target + ("&" if "?" in target else "?") + "format=json")
        assert status == 200, (status, body[:500])
        return json.loads(body)


@contextmanager
def served(root: Path, *args: str, env: dict | None = None) -> Iterator[Served]:
    """`reconcile serve --addr 127.0.0.1:0 ARGS` in `root`, until the block ends."""
    proc = spawn("serve", "--addr", "127.0.0.1:0", *args, cwd=root, env=env)
    lines: list[str] = []
    try:

        def said_where() -> str | None:
            line = proc.stderr.readline()
            lines.append(line)
            if not line and proc.poll() is not None:
                raise AssertionError(f"reconcile serve exited {proc.returncode}: {''.join(lines)}")
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            return found.group(1) if found else None

        port = int(wait_until(said_where, timeout=30, message="the console's address"))
        yield Served(f"http://127.0.0.1:{port}/", "127.0.0.1", port, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def browser(*, javascript: bool = True):
    """Headless Chromium under chromedriver (selenium), logging the page's console."""
    chromium = require_binary("chromium", "/usr/bin/chromium")
    driver_path = require_binary("chromedriver", "/usr/bin/chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def console_errors(driver) -> list[dict]:
    """The page's console messages at level SEVERE since the last call (errors, failed
    loads, CSP refusals)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
