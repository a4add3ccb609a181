"""Bytes on one TCP connection to a listener, exactly as written: for requests an HTTP client
library would not send (a body on a GET, chunked bodies, pipelined requests), and for reading
every response the server writes back on that connection."""

from __future__ import annotations

import re
import socket
import time

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def exchange(address: str, data: bytes, timeout: float = 20.0) -> bytes:
    """Send `data` on one connection, close our side (the server then sees the end of the
    stream once it has read everything), and return all the server wrote until it closed;
    fails after `timeout` seconds."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
        conn.sendall(data)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed already (a 503 at once): read what it wrote
        received = b""
        while True:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if time.monotonic() > deadline:
                raise AssertionError(f"the server kept the connection open past {timeout}s")
    return received


def statuses(received: bytes) -> list[int]:
    """The status codes of the responses in `received`, in order."""
    return [int(code) for code in STATUS_LINE.findall(received)]


def request(method: str, path: str, headers: dict[str, str] | None = None, body=b"") -> bytes:
    """One HTTP/1.1 request's bytes, with a Content-Length when there is a body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    headers = dict(headers or {})
    if body and not any(name.lower() == "transfer-encoding" for name in headers):
        headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes) -> bytes:
    """`body` in HTTP/1.1 chunked transfer coding (one chunk, then the last)."""
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def answer_before_the_body_ends(address: str, head: bytes, timeout: float = 10.0) -> bytes:
    """Send `head` (a request whose body is still to come) and keep the connection open; what
    the server answers within `timeout` seconds (b"" when it is still waiting for the body)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    received = b""
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
        conn.sendall(head)
        while b"\r\n\r\n" not in received:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received
