"""The console's routes: a request's method and target in, a `Reply` out.

No HTTP server here: `add_console` routes the listener's requests (web/listener.py: who may
ask is decided there) of `reconcile serve` and the daemon's `--http-addr` to `Console`. Only GET and HEAD are answered (405 otherwise): no page changes anything.
Every page has a JSON twin, `?format=json` (or the same path under `/api/`), that holds the
data the page shows.

Fifty people keeping the overview open must not cost fifty store reads a second: a page is
computed at most once per `ttl` (one second; live output stays within the two seconds a
watcher is promised) and the requests that arrive meanwhile share it; while it is computed
afresh, the others get the last answer rather than wait.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import unquote

from reconciler.core.errors import StoreError
from reconciler.web.console import html, pages
from reconciler.web.listener import Request, Response, Routes

ASSETS = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    # Only our own stylesheet, script and JSON; no inline script can run.
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
)
LIVE_TTL = 0.25  # seconds a running run's page is served again
MAX_PAGE = 500  # runs on one page at most (`?limit=`)
# Pages kept for reuse, least recently asked dropped first: every distinct query string is a
# page, so without a bound a client could grow the process by varying its filters.
CACHED_PAGES = 128
CACHED_BYTES = 16 * 1024 * 1024
# The console's routes on a listener: (path, whether everything under it too).
ROUTES = (
    ("/", False),
    ("/runs", False),
    ("/runs/", True),
    ("/tasks/", True),
    ("/machines/", True),
    ("/static/", True),
    ("/api/", True),
)


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = HEADERS
    ttl: float | None = None  # how long it may be served again (None: the console's ttl)


@dataclass
class _Slot:
    """One page's place in the cache: its last answer and the lock its computation holds."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    expires: float = 0.0
    reply: Reply | None = None


def asset(name: str) -> bytes:
    """A file the pages load (static/), shipped in the package."""
    return resources.files("reconciler.web.console").joinpath("static", name).read_bytes()


def redacted(value: Any, redact: Callable[[str], str | None]) -> Any:
    """`value` with every string in it passed through `redact` (the process's redactor,
    which masks any secret a vault revealed to it, as the CLI's output and logs are)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, redact) for v in value]
    return value


class Console:
    """The console's pages over the readings `read` makes (a store, the inventory, now)."""

    def __init__(
        self,
        read: Callable[[], pages.Reading],
        *,
        redact: Callable[[str], str | None] = lambda text: text,
        read_file: Callable[[Any], str | None] | None = None,
        ttl: float = 1.0,
    ):
        self.read, self.redact, self.ttl = read, redact, ttl
        self.read_file = read_file or read_text
        self._slots: OrderedDict[tuple, _Slot] = OrderedDict()  # least recently asked first
        self._bytes = 0  # the bodies the slots hold
        self._guard = threading.Lock()  # over _slots and _bytes
        self._assets = {name: asset(name) for name in ASSETS}

    def answer(self, path: str, query: dict[str, list[str]]) -> Reply:
        """The page at `path` with its `query` (a GET)."""
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in ASSETS:
                return _text(404, "no such file\n")
            return Reply(200, ASSETS[name], self._assets[name])
        as_json = query.get("format", [""])[-1] == "json"
        if path.startswith("/api/"):
            path, as_json = path.removeprefix("/api") or "/", True
        key = (
            path,
            tuple(sorted((k, tuple(v)) for k, v in query.items() if k != "format")),
            as_json,
        )
        return self._cached(key, lambda: self._page(path, query, as_json))

    def _cached(self, key: tuple, compute: Callable[[], Reply]) -> Reply:
        slot = self._slot(key)
        hit = slot.reply
        if hit is not None and slot.expires > time.monotonic():
            return hit
        if hit is not None and not slot.lock.acquire(blocking=False):
            return hit  # another request is computing it afresh: the last one meanwhile
        if hit is not None:
            slot.lock.release()
        with slot.lock:  # one computation per page at a time; the others get its result
            if slot.reply is not None and slot.expires > time.monotonic():
                return slot.reply
            reply = compute()
            if reply.status < 500:
                ttl = self.ttl if reply.ttl is None else min(self.ttl, reply.ttl)
                self._keep(key, slot, reply, time.monotonic() + ttl)
            return reply

    def _slot(self, key: tuple) -> _Slot:
        with self._guard:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
            self._evict()
            return slot

    def _keep(self, key: tuple, slot: _Slot, reply: Reply, expires: float) -> None:
        with self._guard:
            if self._slots.get(key) is slot:  # not dropped while it was computed
                self._bytes += len(reply.body) - (len(slot.reply.body) if slot.reply else 0)
            slot.reply, slot.expires = reply, expires
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently asked pages past the bounds (the guard held)."""
        while len(self._slots) > CACHED_PAGES or (
            self._bytes > CACHED_BYTES and len(self._slots) > 1
        ):
            _, dropped = self._slots.popitem(last=False)
            if dropped.reply is not None:
                self._bytes -= len(dropped.reply.body)

    def _page(self, path: str, query: dict[str, list[str]], as_json: bool) -> Reply:
        links = html.Links()
        try:
            reading = self.read()
            data, render = self._route(reading, path, query)
        except pages.NotFound as exc:
            return self._error(404, str(exc), as_json, links)
        except ValueError as exc:
            return self._error(400, f"bad request: {exc}", as_json, links)
        except StoreError as exc:
            return self._error(503, f"the state store does not answer: {exc}", as_json, links)
        data = redacted(data, self.redact)
        # A running run's page is watched for its output: kept for a moment only.
        ttl = LIVE_TTL if render is html.run_page and data["status"] in html.ACTIVE else None
        if as_json:
            return Reply(200, "application/json", _json(data), ttl=ttl)
        body = render(data, links).encode("utf-8")
        return Reply(200, "text/html; charset=utf-8", body, ttl=ttl)

    def _route(self, reading: pages.Reading, path: str, query: dict[str, list[str]]):
        if path in ("/", "/index.html"):
            return pages.overview(reading), html.overview_page
        if path in ("/runs", "/runs/"):
            before = _int(query.get("before", [""])[-1], "before")
            limit = _int(query.get("limit", [""])[-1], "limit") or pages.PAGE_SIZE
            page = pages.runs(reading, pages.parse_filter(query), before, min(limit, MAX_PAGE))
            return page, html.runs_page
        if path.startswith("/runs/"):
            run_id = _int(path.removeprefix("/runs/"), "run")
            if run_id is None:
                raise pages.NotFound("no such run")
            return pages.run(reading, run_id), html.run_page
        if path.startswith("/tasks/"):
            task_id = unquote(path.removeprefix("/tasks/"))
            return pages.task(reading, task_id, self.read_file), html.task_page
        if path.startswith("/machines/"):
            name = unquote(path.removeprefix("/machines/"))
            return pages.machine(reading, name), html.machine_page
        raise pages.NotFound(f"no page {path}")

    def _error(self, status: int, message: str, as_json: bool, links: html.Links) -> Reply:
        message = self.redact(message) or ""
        if as_json:
            return Reply(status, "application/json", _json({"error": message}))
        body = (
            html.not_found_page(message, links)
            if status == 404
            else html.page(
                "Error",
                f'<p class="empty">{html.esc(message)}</p>',
                links,
                here="",
                json_link=None,
                refresh=5 if status == 503 else None,
            )
        )
        return Reply(status, "text/html; charset=utf-8", body.encode("utf-8"))


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _text(status: int, text: str) -> Reply:
    return Reply(status, "text/plain; charset=utf-8", text.encode("utf-8"))


def _int(text: str, what: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise ValueError(f"{what} must be a whole number, not {text[:40]!r}")
    return int(text)


def read_text(path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def add_console(routes: Routes, console: Console) -> None:
    """Route the console's pages (GET; the listener answers HEAD, and 405 to any other
    method: no page changes state) under the listener's access rule."""

    def handle(request: Request) -> Response:
        reply = console.answer(request.path, dict(request.query))
        return Response(
            reply.status, {"Content-Type": reply.content_type, **dict(reply.headers)}, reply.body
        )

    for path, prefix in ROUTES:
        routes.add("GET", path, handle, prefix=prefix)
