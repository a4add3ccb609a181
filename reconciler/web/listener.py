"""The reconciler's one HTTP listener: a route table served by a threading HTTP server.

The daemon serves `/metrics`, `/healthz`, `/hooks/git` and the web console on it
(`--http-addr`); `reconcile serve` serves the console on it. Who may ask is decided here,
once, for every page (see `Access`).

The API pages are written against:

    from reconciler.web.listener import Access, Request, Response, Routes, start

    routes = Routes()
    routes.add("GET", "/metrics", handler)                  # exact path
    routes.add("GET", "/runs/", handler, prefix=True)       # /runs/ and everything under it
    routes.add("GET", "/healthz", handler, auth="open")     # no access check (anyone)
    routes.add("POST", "/hooks/git", handler, auth="self")  # the handler checks (a signature)
    listener = start("127.0.0.1:8080", routes, access, flag="--addr")  # UsageError: exit 2
    listener.address   # "127.0.0.1:8080" as bound (the port the kernel chose for :0)
    listener.close()

A handler is `handler(request: Request) -> Response`, called on the listener's own thread
for that connection (handlers must be thread-safe). `Request` carries `method`, `path` (no
query string), `subpath` (what follows a prefix route's prefix), `query` (name -> list of
values), `headers` (case-insensitive), `body` (bytes, at most `MAX_BODY`), `client` (the
peer's address) and `principal` (who was let in: `"loopback"`, `"token"`, or the user named
by the trusted proxy's header). `Response(status, headers, body)` is a named tuple; `body` is
bytes, or an iterable of bytes that is streamed as it is produced (the connection then closes
at its end; live output). `Response.text`, `.json` and `.html` build the usual ones. `HEAD` is
answered for every `GET` route, without the body; a path no route knows is 404, a known path
asked with another method 405 (with `Allow`). A handler that raises is a 500, logged.

Access (issue 17 §2): with no access configured, the listener binds to loopback addresses
only; any other address is refused at start (`UsageError`, exit 2, saying why and how to
configure access). Configured access is enforced on every address, loopback included:
a request passes with `Authorization: Bearer TOKEN` (compared in constant time) or, from a
trusted proxy's address, with the proxy's header naming the user. Routes declare `auth`:
`"access"` (the default: the rule above), `"open"` (`/healthz`: anyone, it says nothing
secret) or `"self"` (`/hooks/git`: the handler checks the webhook's own signature).
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from reconciler.core.errors import InfrastructureError, UsageError

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # a webhook delivery is kilobytes; larger bodies are refused (413)
# A client that opens a connection and sends nothing holds a thread: not for longer.
SOCKET_TIMEOUT_SECONDS = 30
# A body trickled in a byte at a time would hold its thread for 30 s per byte: the whole of
# it must arrive within this (408 otherwise; a delivery of kilobytes takes milliseconds).
BODY_SECONDS = 10.0
# Connections served at once (a thread each); more are answered 503 and closed, so that
# clients holding connections open cannot make the daemon spawn threads without end.
MAX_CONNECTIONS = 128
# After refusing a request whose body was not read, the connection is closed; the unread
# body is taken and thrown away for this long first (at most MAX_BODY and a bit), so that
# the client reads the refusal rather than a reset.
LINGER_SECONDS = 2.0

AUTH_KINDS = ("access", "open", "self")


class Response(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes | Iterable[bytes] = b""

    @classmethod
    def text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
        return cls(
            status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}, text.encode()
        )

    @classmethod
    def json(cls, status: int, data, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body)

    @classmethod
    def html(cls, status: int, html: str, headers: Mapping[str, str] | None = None) -> Response:
        return cls(
            status, {"Content-Type": "text/html; charset=utf-8", **(headers or {})}, html.encode()
        )


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    subpath: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # an email.message.Message: case-insensitive `get`
    body: bytes
    client: str
    principal: str | None

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter `name`."""
        values = self.query.get(name)
        return values[0] if values else default


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    path: str
    handler: Handler
    prefix: bool
    auth: str
    precheck: Handler | None = None


class Routes:
    """The route table: exact paths first, then the longest matching prefix."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        prefix: bool = False,
        auth="access",
        precheck: Handler | None = None,
    ) -> None:
        """`precheck(request)`, when given, sees the request before its body is read (its
        `body` is b""): a Response refuses it there and then (the body is never awaited, the
        connection closed); None lets it on to `handler` with its body."""
        if auth not in AUTH_KINDS:
            raise ValueError(f"auth must be one of {AUTH_KINDS}, not {auth!r}")
        if not path.startswith("/"):
            raise ValueError(f"a route's path starts with '/': {path!r}")
        method = method.upper()
        if any(r.method == method and r.path == path and r.prefix == prefix for r in self._routes):
            raise ValueError(f"{method} {path} is routed twice")
        self._routes.append(_Route(method, path, handler, prefix, auth, precheck))

    def guarded(self) -> bool:
        """True when some route is under the access rule (`auth="access"`)."""
        return any(r.auth == "access" for r in self._routes)

    def match(self, path: str) -> list[_Route]:
        """The routes of the most specific pattern matching `path` (one per method)."""
        exact = [r for r in self._routes if not r.prefix and r.path == path]
        if exact:
            return exact
        prefixes = [r for r in self._routes if r.prefix and path.startswith(r.path)]
        if not prefixes:
            return []
        longest = max(len(r.path) for r in prefixes)
        return [r for r in prefixes if len(r.path) == longest]


# --- who may ask --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedProxy:
    """A reverse proxy that authenticates users and names them in `header`; believed only on
    connections from `addresses` (IP addresses or networks), since anyone else could send
    the same header."""

    header: str
    addresses: tuple[str, ...] = ("127.0.0.1", "::1")

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(a, strict=False) for a in self.addresses]


@dataclass(frozen=True)
class Access:
    """Who may read the pages: holders of the bearer `token`, users a trusted proxy names;
    neither configured means "anyone who can reach a loopback address"."""

    token: str | None = field(default=None, repr=False)
    proxy: TrustedProxy | None = None

    @property
    def configured(self) -> bool:
        return bool(self.token) or self.proxy is not None

    def admit(self, headers: Mapping[str, str], client: str) -> str | None:
        """The principal a request is let in as, or None (401)."""
        if not self.configured:
            return "loopback"  # only ever bound to loopback then (`start` refuses the rest)
        if self.token:
            given = headers.get("Authorization") or ""
            scheme, _, credentials = given.partition(" ")
            # compare_digest: the time taken says nothing of how much of the token matched.
            if scheme.lower() == "bearer" and hmac.compare_digest(
                credentials.strip().encode(), self.token.encode()
            ):
                return "token"
        if self.proxy is not None and _address_in(client, self.proxy.networks()):
            user = (headers.get(self.proxy.header) or "").strip()
            if user:
                return user
        return None


def _address_in(client: str, networks) -> bool:
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


# --- addresses -------------------------------------------------------------------------------

_ADDR = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$")


def parse_addr(addr: str, flag: str = "--http-addr") -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (every interface); raises `UsageError` naming
    `flag`."""
    match = _ADDR.match(addr.strip())
    port = int(match.group("port")) if match else -1
    if match is None or not 0 <= port <= 65535:
        raise UsageError(f"{flag} must be HOST:PORT, such as 127.0.0.1:8080 (got {addr!r})")
    host = match.group("v6") or match.group("host") or "0.0.0.0"
    return host, port


def is_loopback(host: str) -> bool:
    """True for a literal loopback address or `localhost`; a name that must be resolved
    could resolve to anything, so it is not taken for loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_unguarded(host: str, access: Access, flag: str) -> None:
    """The start-up rule: no access configured, no address but loopback (exit 2)."""
    if not access.configured and not is_loopback(host):
        raise UsageError(
            f"{flag} {host} is not a loopback address, and no access is configured: anyone "
            "who can reach it could read every page. Set a bearer token (RECONCILE_HTTP_TOKEN, "
            "or http.token: {vault: NAME, team: TEAM} in reconciler.yaml) or a trusted "
            "reverse proxy (http.proxy in reconciler.yaml), or bind to 127.0.0.1"
        )


# --- the server --------------------------------------------------------------------------------


class Listener:
    """A running listener; `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread):
        self._server, self._thread = server, thread

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        """`HOST:PORT` (`[IPv6]:PORT`) as bound: the port the kernel chose for `:0`."""
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def access(self) -> Access:
        return self._server.access

    @access.setter
    def access(self, access: Access) -> None:
        """Who may ask from the next request on (a token rotated and reloaded)."""
        self._server.access = access

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# Written straight to a connection over the cap: no thread, no parsing, nothing awaited.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 34\r\n\r\n"
    b"too many connections: retry later\n"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds the process open at exit
    # Connections waiting to be accepted: the default 5 overflows when fifty browsers poll at
    # once, and a client whose connection overflowed retries a second later (bench/console.py
    # saw p99 over a second from that alone).
    request_queue_size = 128
    routes: Routes
    access: Access
    body_seconds: float = BODY_SECONDS
    slots: threading.BoundedSemaphore

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self._turn_away(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _turn_away(self, request) -> None:
        try:
            request.settimeout(0)  # never wait on this client from the accepting thread
            request.send(_BUSY)
            request.shutdown(socket.SHUT_WR)
            request.recv(65536)  # what already arrived: closing on it would reset the 503
        except OSError:
            pass
        self.shutdown_request(request)


def start(
    addr: str,
    routes: Routes,
    access: Access,
    flag: str = "--http-addr",
    *,
    max_connections: int = MAX_CONNECTIONS,
    body_seconds: float = BODY_SECONDS,
) -> Listener:
    """Serve `routes` on `addr` from a daemon thread. Raises `UsageError` for a bad address,
    or a non-loopback one without access when a route is under the access rule (a listener
    of open routes alone may bind anywhere); `InfrastructureError` when it cannot be bound.
    At most `max_connections` are served at once (more: 503); a body must arrive whole
    within `body_seconds` (408)."""
    host, port = parse_addr(addr, flag)
    if routes.guarded():
        refuse_unguarded(host, access, flag)
    server_class = type("_BoundServer", (_Server,), {})
    if ":" in host:
        server_class.address_family = socket.AF_INET6
    try:
        server = server_class((host, port), _Handler)
    except OSError as exc:
        raise InfrastructureError(f"cannot serve on {addr}: {exc.strerror or exc}") from exc
    server.routes, server.access = routes, access
    server.body_seconds = body_seconds
    server.slots = threading.BoundedSemaphore(max_connections)
    thread = threading.Thread(target=server.serve_forever, name=f"http {addr}", daemon=True)
    thread.start()
    return Listener(server, thread)


class _Refused(Exception):
    """A request answered before (or while) its body is read: the connection then closes."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_SECONDS
    protocol_version = "HTTP/1.1"  # keep-alive: a page polling its JSON reuses its connection
    server_version = "reconciler"
    sys_version = ""
    _linger = False  # a body may be left unread: drain a little before closing
    _unread = False  # the request announced a body not (yet) read

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.client_address[0], format % args)

    def _answer(self, method: str) -> None:
        try:
            response = self._dispatch(method)
        except _Refused as refused:
            response = refused.response
        except Exception:  # a bug in one page must not take the listener down
            log.exception("internal error answering %s %s", method, self.path.split("?")[0])
            response = Response.text(500, "internal error (logged)\n")
        if self._unread:
            # Refused before its body was read (or while): whatever the client sent after
            # the headers is not a request, so nothing more is read on this connection.
            self.close_connection = True
            self._linger = True
        self._send(response, head=method == "HEAD")

    def _dispatch(self, method: str) -> Response:
        length = self.headers.get("Content-Length")
        self._unread = self.headers.get("Transfer-Encoding") is not None or (
            length is not None and length.strip() != "0"
        )
        url = urlsplit(self.path)
        path = url.path or "/"
        candidates = self.server.routes.match(path)
        if not candidates:
            raise _Refused(Response.text(404, f"no page at {path}\n"))
        wanted = "GET" if method == "HEAD" else method
        route = next((r for r in candidates if r.method == wanted), None)
        if route is None:
            allowed = sorted({r.method for r in candidates} | _heads(candidates))
            raise _Refused(
                Response.text(405, f"{method} is not allowed here\n", {"Allow": ", ".join(allowed)})
            )
        client = self.client_address[0]
        principal = None
        if route.auth == "access":
            principal = self.server.access.admit(self.headers, client)
            if principal is None:
                raise _Refused(
                    Response.text(
                        401,
                        "access is configured: send Authorization: Bearer TOKEN\n",
                        {"WWW-Authenticate": 'Bearer realm="reconciler"'},
                    )
                )
        size = self._body_size()
        request = Request(
            method=wanted,
            path=path,
            subpath=path[len(route.path) :] if route.prefix else "",
            query=parse_qs(url.query, keep_blank_values=True),
            headers=self.headers,
            body=b"",
            client=client,
            principal=principal,
        )
        if route.precheck is not None:
            refusal = route.precheck(request)
            if refusal is not None:
                raise _Refused(refusal)
        if size:
            request = dataclasses.replace(request, body=self._read_body(size))
        self._unread = False
        return route.handler(request)

    def _body_size(self) -> int:
        """The Content-Length announced (0 without one); refuses what cannot be framed."""
        if self.headers.get("Transfer-Encoding") is not None:
            # Chunked bodies are not read: a git host sends Content-Length, and a body whose
            # end this listener does not find must never be taken for the next request.
            raise _Refused(Response.text(411, "send the body with a Content-Length\n"))
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if not lengths:
            return 0
        if len(lengths) > 1:
            raise _Refused(Response.text(400, "Content-Length is given twice, differently\n"))
        length = lengths.pop()
        if not length.isdigit():
            raise _Refused(Response.text(400, "Content-Length is not a number\n"))
        size = int(length)
        if size > MAX_BODY:
            raise _Refused(Response.text(413, f"a body is at most {MAX_BODY} bytes\n"))
        return size

    def _read_body(self, size: int) -> bytes:
        """`size` bytes, all of them within the server's `body_seconds` (408 otherwise)."""
        deadline = time.monotonic() + self.server.body_seconds
        chunks, left = [], size
        try:
            while left:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    raise _Refused(Response.text(400, "the body ended before its length\n"))
                chunks.append(chunk)
                left -= len(chunk)
        except TimeoutError:
            raise _Refused(
                Response.text(
                    408, f"the body did not arrive within {self.server.body_seconds:g}s\n"
                )
            ) from None
        finally:
            self.connection.settimeout(self.timeout)
        return b"".join(chunks)

    def _send(self, response: Response, head: bool) -> None:
        status, headers, body = response
        streamed = not isinstance(body, bytes | bytearray)
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if streamed or self.close_connection:
                self.send_header("Connection", "close")
                self.close_connection = True
            if not streamed:
                self.send_header("Content-Length", str(len(body)))
            if not any(name.lower() == "cache-control" for name in headers):
                self.send_header("Cache-Control", "no-store")  # pages show live state
            self.end_headers()
            if head:
                return
            if streamed:
                for chunk in body:
                    self.wfile.write(chunk)
                    self.wfile.flush()
            else:
                self.wfile.write(body)
        except OSError:  # the client went away (reset, broken pipe, timed out)
            self.close_connection = True  # nothing to tell it
            self._linger = False

    def finish(self) -> None:
        super().finish()
        if self._linger:
            self._drain()

    def _drain(self) -> None:
        """Tell the client we are done (FIN), then read and drop what it still sends for a
        short while: closing a socket with unread data resets the connection, and a client
        could lose the refusal it was about to read."""
        deadline = time.monotonic() + LINGER_SECONDS
        budget = MAX_BODY + 65536
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while budget > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.connection.settimeout(remaining)
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                budget -= len(chunk)
        except OSError:
            return


def _heads(routes: list[_Route]) -> set[str]:
    return {"HEAD"} if any(r.method == "GET" for r in routes) else set()


__all__ = [
    "MAX_BODY",
    "Access",
    "Listener",
    "Request",
    "Response",
    "Routes",
    "TrustedProxy",
    "is_loopback",
    "parse_addr",
    "refuse_unguarded",
    "start",
]
