"""The daemon's HTTP listeners: `--http-addr` (every page, under the access rule) and
`--metrics-addr` (/metrics and /healthz alone, open, as before `--http-addr` existed).

Both flags naming the same address make one listener serving everything. The addresses are
parsed before the daemon loads anything; the access (a token from the environment or a team
vault, a trusted proxy) is read once the inventory is loaded, and a non-loopback
`--http-addr` without it is refused then, before any pass (exit 2)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from reconciler.cli.progress import json_line
from reconciler.core import health
from reconciler.core.errors import ReconcilerError
from reconciler.web import listener as web
from reconciler.web.access_config import (
    configured_access,
    configured_hook_secret,
    vault_reader,
)

log = logging.getLogger(__name__)

# /healthz gives the store this long to answer before calling it unreachable.
STORE_PROBE_SECONDS = 5.0


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


@dataclass
class Guards:
    """What the listeners check, as now configured: replaced on reload (SIGHUP)."""

    access: web.Access
    hook_secret: str | None


def guards_for(found: list[Endpoint], ctx, loaded) -> Guards:
    """The access and the webhook secret (environment, else `http:` and a team vault); a
    full listener on a non-loopback address without access is refused (UsageError)."""
    from reconciler.cli import wiring

    http = loaded.inventory.settings.http
    resolver = wiring.vault_secrets(ctx, loaded.inventory)
    read = vault_reader(resolver)
    access = configured_access(os.environ, http, read)
    hook_secret = configured_hook_secret(os.environ, http, read) if _any_full(found) else None
    for endpoint in found:
        if endpoint.full:
            host, _port = web.parse_addr(endpoint.addr, endpoint.flag)
            web.refuse_unguarded(host, access, endpoint.flag)
    return Guards(access, hook_secret)


def reload_guards(guards: Guards, found: list[Endpoint], ctx, load, listeners) -> None:
    """SIGHUP: read the token and the webhook secret again (a value rotated in its vault, or
    settings naming another), and have every listener check the new ones from its next
    request on. When they cannot be read (or the new settings would leave a non-loopback
    address unguarded) the listeners keep the ones they have, and the daemon says why."""
    try:
        fresh = guards_for(found, ctx, load())  # load(): the inventory as it now is
    except ReconcilerError as exc:
        log.error("the HTTP listener keeps its access and webhook secret: %s", exc)
        return
    except Exception:  # a bug here must not stop the daemon (nor its passes)
        log.exception("the HTTP listener keeps its access and webhook secret")
        return
    guards.access, guards.hook_secret = fresh.access, fresh.hook_secret
    for listener in listeners:
        listener.access = fresh.access


def _any_full(found: list[Endpoint]) -> bool:
    return any(endpoint.full for endpoint in found)


class HealthProbe:
    """`/healthz`'s answer: the daemon's pass clock and whether the passes' store answers."""

    def __init__(self, daemon, loop):
        self.daemon, self.loop = daemon, loop
        # One question to the store at a time: probes arriving while a store hangs get the
        # same "no answer" instead of a thread each (bounded, whatever the probe rate).
        self._asking: threading.Thread | None = None
        self._lock = threading.Lock()
        self._logged: str | None = None  # the store problem last logged (logged on change)

    def __call__(self) -> tuple[health.Health, dict]:
        interval = self.loop.interval()
        problem = self._store_problem()
        self._log_change(problem)
        verdict = health.judge(
            time.monotonic(), self.daemon.started, self.daemon.last_pass_end, interval, problem
        )
        ended = self.daemon.last_pass_end
        details = {
            "poll_interval_seconds": interval,
            "last_pass_ended_seconds_ago": None if ended is None else time.monotonic() - ended,
        }
        return verdict, details

    def _log_change(self, problem: str | None) -> None:
        """The store's own error goes to the daemon's log (redacted as every log line is),
        once per change: /healthz itself only says that the store does not answer."""
        if problem == self._logged:
            return
        self._logged = problem
        if problem is None:
            log.warning("/healthz: the state store answers again")
        else:
            log.warning("/healthz: the state store does not answer: %s", problem)

    def _store_problem(self) -> str | None:
        """None when the store answers a read within STORE_PROBE_SECONDS; else why not."""
        url = self.loop.store_url
        if url is None:
            return None  # no pass got as far as its store yet: the pass clock speaks
        answer: list[str | None] = []

        def ask() -> None:
            from reconciler.adapters.store.factory import open_store

            try:
                store = open_store(url, read_only=True)
                if store is not None:
                    try:
                        store.last_commit()
                    finally:
                        store.close()
                answer.append(None)
            except ReconcilerError as exc:
                answer.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            except Exception as exc:  # a driver's own error: still "does not answer"
                answer.append(type(exc).__name__)

        with self._lock:
            if self._asking is not None and self._asking.is_alive():
                return f"no answer within {STORE_PROBE_SECONDS:g}s"  # still waiting on it
            asking = self._asking = threading.Thread(target=ask, name="healthz", daemon=True)
            asking.start()
        asking.join(STORE_PROBE_SECONDS)
        if not answer:
            return f"no answer within {STORE_PROBE_SECONDS:g}s"
        return answer[0]


def start(
    found: list[Endpoint],
    guards: Guards,
    metrics,
    *,
    daemon,
    loop,
    json_logs: bool,
    quiet: bool,
    console=None,
):
    """Start each listener; returns them (close them at the end). `console`: the web
    console's pages (`web.console.app.Console`), served on the full listener."""
    from reconciler.web.git_hook import add_git_hook
    from reconciler.web.health import add_health
    from reconciler.web.prometheus import add_metrics

    probe = HealthProbe(daemon, loop)
    started = []
    try:
        for endpoint in found:
            routes = web.Routes()
            # On --metrics-addr, /metrics is open as it always was (counts and team and
            # machine names; no output, no secret); on --http-addr it is under the access rule.
            add_metrics(routes, metrics, auth="access" if endpoint.full else "open")
            add_health(routes, probe)
            if endpoint.full:
                add_git_hook(routes, lambda: guards.hook_secret, daemon.trigger)
            if endpoint.full and console is not None:
                from reconciler.web.console.app import add_console

                add_console(routes, console)
            listener = web.start(endpoint.addr, routes, guards.access, endpoint.flag)
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
