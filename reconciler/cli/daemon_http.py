"""The daemon's HTTP listeners: `--http-addr` (everything, under the access rule) and
`--metrics-addr` (/metrics and /healthz only, open, as before `--http-addr` existed).

Both flags naming the same address make one listener serving everything. The addresses
are parsed, and a non-loopback `--http-addr` without access refused, before the daemon
loads anything (exit 2)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from reconciler.cli.progress import json_line
from reconciler.web import listener as web
from reconciler.web.access_config import configured_access


@dataclass(frozen=True)
class Endpoint:
    flag: str
    addr: str
    full: bool  # every page (--http-addr), or /metrics and /healthz alone (--metrics-addr)


def endpoints(args) -> list[Endpoint]:
    """The listeners asked for, checked (UsageError: exit 2 before anything runs)."""
    found: list[Endpoint] = []
    http_addr, metrics_addr = getattr(args, "http_addr", None), args.metrics_addr
    if http_addr is not None:
        web.parse_addr(http_addr, "--http-addr")
        found.append(Endpoint("--http-addr", http_addr, True))
    if metrics_addr is not None:
        web.parse_addr(metrics_addr, "--metrics-addr")
        same = http_addr is not None and web.parse_addr(metrics_addr) == web.parse_addr(http_addr)
        if not same or web.parse_addr(metrics_addr)[1] == 0:  # two :0 are two ports
            found.append(Endpoint("--metrics-addr", metrics_addr, False))
    return found


def access_for(found: list[Endpoint]) -> web.Access:
    """The access of the full listener, refused at once when it cannot guard its address."""
    access = configured_access(os.environ)
    for endpoint in found:
        if endpoint.full:
            host, _port = web.parse_addr(endpoint.addr, endpoint.flag)
            web.refuse_unguarded(host, access, endpoint.flag)
    return access


def start(found: list[Endpoint], access: web.Access, metrics, *, json_logs: bool, quiet: bool):
    """Start each listener; returns them (close them at the end)."""
    from reconciler.web.prometheus import add_metrics

    started = []
    try:
        for endpoint in found:
            routes = web.Routes()
            # On --metrics-addr, /metrics is open as it always was (counts and team and
            # machine names; no output, no secret); on --http-addr it is under the access rule.
            add_metrics(routes, metrics, auth="access" if endpoint.full else "open")
            listener = web.start(endpoint.addr, routes, access, endpoint.flag)
            started.append(listener)
            port_chosen = web.parse_addr(endpoint.addr)[1] == 0
            _say_served(endpoint, listener.address, json_logs, quiet and not port_chosen)
    except BaseException:
        for listener in started:
            listener.close()
        raise
    return started


def _say_served(endpoint: Endpoint, address: str, json_logs: bool, quiet: bool) -> None:
    """Where it serves, once at start on stderr (a JSON object with `--log-format json`):
    the port the kernel chose for `HOST:0` is found nowhere else, so it is said even under
    `-q`; a port given is said unless `-q`."""
    if quiet:
        return
    if endpoint.full:
        line = f"serving the console, /metrics, /healthz and /hooks/git at http://{address}/"
    else:
        line = f"serving metrics at http://{address}/metrics"
    print(json_line(line, address=address) if json_logs else line, file=sys.stderr, flush=True)
