"""The shared HTTP listener over real HTTP on 127.0.0.1: routes, HEAD, 404/405, the body
limit, and the access rule (loopback by default, a bearer token or a trusted proxy's header
when configured)."""

from __future__ import annotations

import http.client
import socket

import pytest

from reconciler.core.errors import InfrastructureError, UsageError
from reconciler.web import listener as web
from tests.support.raw_http import answer_before_the_body_ends, exchange, request, statuses
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def ask(listener, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def echo(request: web.Request) -> web.Response:
    return web.Response.json(
        200,
        {
            "path": request.path,
            "subpath": request.subpath,
            "q": request.param("q"),
            "body": request.body.decode(),
            "principal": request.principal,
        },
    )


@pytest.fixture
def routes():
    table = web.Routes()
    table.add("GET", "/page", echo)
    table.add("GET", "/runs/", echo, prefix=True)
    table.add("GET", "/runs/special", lambda r: web.Response.text(200, "special\n"))
    table.add("POST", "/hook", echo, auth="self")
    table.add("GET", "/open", echo, auth="open")
    table.add("GET", "/boom", lambda r: 1 / 0)
    table.add(
        "GET",
        "/stream",
        lambda r: web.Response(200, {"Content-Type": "text/plain"}, iter([b"a", b"b"])),
    )
    return table


@pytest.fixture
def serve(routes):
    started = []

    def start(access=None, addr="127.0.0.1:0", **limits):
        running = web.start(addr, routes, access or web.Access(), **limits)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def test_routes_exact_prefix_query_body_and_errors(serve):
    server = serve()
    status, headers, body = ask(server, "GET", "/page?q=1&q=2")
    assert status == 200 and b'"q":"1"' in body and b'"principal":"loopback"' in body
    assert headers["Cache-Control"] == "no-store"
    assert b'"subpath":"7/output"' in ask(server, "GET", "/runs/7/output")[2]
    assert ask(server, "GET", "/runs/special")[2] == b"special\n"  # exact beats prefix
    assert b'"body":"payload"' in ask(server, "POST", "/hook", body=b"payload")[2]
    assert ask(server, "GET", "/nothing")[0] == 404
    status, headers, _ = ask(server, "POST", "/page")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = ask(server, "HEAD", "/page")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    status, _, body = ask(server, "GET", "/boom")
    assert status == 500 and b"ZeroDivision" not in body
    assert ask(server, "GET", "/stream")[2] == b"ab"
    # Refused on its Content-Length, before the body is read (a client still sending it
    # would see the connection close under its feet).
    too_big = {"Content-Length": str(web.MAX_BODY + 1)}
    assert ask(server, "POST", "/hook", body=b"x", headers=too_big)[0] == 413
    # A client that sends the whole over-cap body first (http.client does) reads the 413
    # too, not a connection reset: the listener drops what it sends before closing.
    assert ask(server, "POST", "/hook", body=b"x" * (web.MAX_BODY + 1))[0] == 413


def test_keep_alive_goes_on_after_a_refusal_without_a_body(serve):
    """A 404 to a GET (a browser's favicon) leaves nothing unread: the connection serves on."""
    server = serve()
    received = exchange(server.address, request("GET", "/nothing") + request("GET", "/page"))
    assert statuses(received) == [404, 200], received


def test_a_body_that_cannot_be_framed_is_refused_and_the_connection_closed(serve):
    server = serve()
    chunked = request("POST", "/hook", {"Transfer-Encoding": "chunked"})
    twice = request("POST", "/hook", {"Content-Length": "4"}, b"ab") + b"\r\n"
    twice = twice.replace(b"Content-Length: 4", b"Content-Length: 4\r\nContent-Length: 6")
    for sent, status in ((chunked + b"5\r\nabcde\r\n0\r\n\r\n", 411), (twice, 400)):
        received = exchange(server.address, sent + request("GET", "/page"))
        assert statuses(received) == [status], received
        assert b"Connection: close" in received


def test_a_precheck_refuses_before_the_body_is_awaited(routes, serve):
    def unsigned(request: web.Request):
        return None if request.headers.get("X-Sig") else web.Response.text(401, "unsigned\n")

    routes.add("POST", "/checked", echo, auth="self", precheck=unsigned)
    server = serve()
    head = request("POST", "/checked", {"Content-Length": "1000"}, b"only some")
    assert statuses(answer_before_the_body_ends(server.address, head)) == [401]
    signed = ask(server, "POST", "/checked", body=b"all", headers={"X-Sig": "1"})
    assert signed[0] == 200 and b'"body":"all"' in signed[2]


def test_a_body_must_arrive_whole_within_its_time(serve):
    """A body trickled in slowly holds its thread for `body_seconds` at most (408), however
    often a byte arrives."""
    server = serve(body_seconds=0.5)
    head = request("POST", "/hook", {"Content-Length": "100"}, b"x")
    received = answer_before_the_body_ends(server.address, head, timeout=10)
    assert statuses(received) == [408], received


def test_connections_beyond_the_cap_are_answered_503_at_once(serve):
    server = serve(max_connections=2)
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    try:
        for connection in held:
            connection.sendall(b"GET /pa")  # a request line never finished: a thread each
        turned_away = exchange(server.address, request("GET", "/page"), timeout=10)
        assert statuses(turned_away) == [503], turned_away
    finally:
        held.pop().close()

    # A connection that ends gives its place back.
    def served() -> bool:
        try:
            return ask(server, "GET", "/page")[0] == 200
        except OSError:  # turned away while the closed connection's thread was ending
            return False

    wait_until(served, message="a free place")
    held[0].close()


def test_a_non_loopback_address_without_access_is_refused(serve):
    for addr in ("0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.org:0"):
        with pytest.raises(UsageError, match="not a loopback address"):
            serve(addr=addr)
    for loopback in ("127.0.0.1:0", "localhost:0", "127.0.0.2:0"):
        serve(addr=loopback).close()


def test_a_listener_of_open_routes_alone_may_bind_anywhere():
    table = web.Routes()
    table.add("GET", "/metrics", echo, auth="open")
    # Refused only for a route under access: the check happens before binding, so a
    # listener of open routes gets as far as binding (here a documentation address: fails).
    with pytest.raises(InfrastructureError):
        web.start("192.0.2.1:0", table, web.Access())


def test_a_configured_token_is_required_even_on_loopback(serve):
    server = serve(web.Access(token="s3cret-token"))
    status, headers, body = ask(server, "GET", "/page")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert b"s3cret" not in body
    assert ask(server, "GET", "/page", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert ask(server, "GET", "/page", headers={"Authorization": "Basic s3cret-token"})[0] == 401
    status, _, body = ask(server, "GET", "/page", headers={"Authorization": "Bearer s3cret-token"})
    assert status == 200 and b'"principal":"token"' in body
    assert ask(server, "GET", "/open")[0] == 200  # open routes stay open
    assert ask(server, "POST", "/hook", body=b"x")[0] == 200  # the handler checks its own


def test_a_trusted_proxy_header_counts_only_from_the_proxy(serve):
    proxy = web.TrustedProxy(header="X-Forwarded-User", addresses=("127.0.0.0/8",))
    server = serve(web.Access(proxy=proxy))
    status, _, body = ask(server, "GET", "/page", headers={"X-Forwarded-User": "ana"})
    assert status == 200 and b'"principal":"ana"' in body
    assert ask(server, "GET", "/page")[0] == 401
    assert ask(server, "GET", "/page", headers={"X-Forwarded-User": " "})[0] == 401
    elsewhere = serve(web.Access(proxy=web.TrustedProxy("X-Forwarded-User", ("10.0.0.5",))))
    assert ask(elsewhere, "GET", "/page", headers={"X-Forwarded-User": "ana"})[0] == 401


def test_addresses():
    assert web.parse_addr("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert web.parse_addr("[::1]:9100") == ("::1", 9100)
    assert web.parse_addr(":9100") == ("0.0.0.0", 9100)
    with pytest.raises(UsageError, match="--addr must be HOST:PORT"):
        web.parse_addr("9100", "--addr")


def test_configured_access_lifts_the_loopback_rule():
    for access in (web.Access(token="t"), web.Access(proxy=web.TrustedProxy("X-User"))):
        web.refuse_unguarded("0.0.0.0", access, "--http-addr")  # no UsageError
    with pytest.raises(UsageError, match="--addr 10.1.2.3 is not a loopback address"):
        web.refuse_unguarded("10.1.2.3", web.Access(), "--addr")
