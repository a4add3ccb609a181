"""`reconcile serve`: the read-only web console, from any host that can read the state store;
and `reconcile status --format html -o DIR`, the same pages as static files.

The console reads; it never plans, runs or changes a run. The inventory is read again when it
changes (a broken one keeps the last good one), and a store that does not exist yet is looked
for again at each page, so the console can be started before the first pass.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from reconciler.cli import views, wiring
from reconciler.cli.settings import Context
from reconciler.core.errors import InputError, ReconcilerError, UsageError
from reconciler.pipeline.daemon import SIGNAL_CHECK_SECONDS
from reconciler.pipeline.engine import utc_now
from reconciler.web.console.pages import Reading

log = logging.getLogger(__name__)

DEFAULT_ADDR = "127.0.0.1:8080"
RELOAD_SECONDS = 5.0  # how often the inventory is looked at again


class Readings:
    """What the console's pages read: the store (opened read-only once it exists) and the
    inventory (re-read at most every RELOAD_SECONDS; a broken one keeps the last good)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.loaded = wiring.load(args)  # exit 2 on a broken inventory at start
        self.loaded_at = time.monotonic()
        self.store = None
        self._lock = threading.Lock()

    def __call__(self) -> Reading:
        with self._lock:
            if time.monotonic() - self.loaded_at >= RELOAD_SECONDS:
                self.loaded_at = time.monotonic()
                try:
                    self.loaded = wiring.load(self.args)
                except InputError as exc:
                    log.error("the inventory is invalid; showing the last good one: %s", exc)
            if self.store is None:
                self.store = wiring.store(self.args, self.loaded.inventory, read_only=True)
        return Reading(self.store, self.loaded.inventory, self.loaded.desired, utc_now())

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    """Serve the console on --addr until SIGTERM or SIGINT; SIGHUP reads who may look again
    (a token rotated in its vault, settings naming another), as the daemon's listener does."""
    from reconciler.web import listener as web
    from reconciler.web.console.app import Console, add_console

    addr = args.addr or DEFAULT_ADDR
    host = web.parse_addr(addr, "--addr")[0]  # a malformed address: exit 2 before anything
    readings = Readings(args)
    try:
        access = _access(ctx, readings.loaded.inventory, host)  # before the store is opened
        routes = web.Routes()
        add_console(routes, Console(readings, redact=ctx.redactor))
        server = web.start(addr, routes, access, flag="--addr")
        stop, reload = threading.Event(), threading.Event()
        previous = {
            sig: signal.signal(sig, lambda signum, frame: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())
        try:
            line = f"serving the console at http://{server.address}/"
            print(line, file=sys.stderr, flush=True)
            while not stop.is_set():
                # In slices, as the daemon waits: a signal the kernel hands to a listener
                # thread runs its handler only when this thread next runs Python code.
                stop.wait(SIGNAL_CHECK_SECONDS)
                if reload.is_set() and not stop.is_set():
                    reload.clear()
                    _reload_access(args, ctx, host, server)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.close()
    finally:
        readings.close()
    return 0


def _access(ctx: Context, inventory, host: str):
    """Who may look: the token from the environment, else reconciler.yaml's `http:` (its token
    in a team vault, a trusted proxy), as the daemon's --http-addr has it; a non-loopback
    --addr without any is refused (UsageError)."""
    from reconciler.web import listener as web
    from reconciler.web.access_config import configured_access, vault_reader

    read = vault_reader(wiring.vault_secrets(ctx, inventory))
    access = configured_access(os.environ, inventory.settings.http, read)
    web.refuse_unguarded(host, access, "--addr")
    return access


def _reload_access(args: argparse.Namespace, ctx: Context, host: str, server) -> None:
    """SIGHUP: the access as the inventory and its vaults now say; when it cannot be read (or
    would leave a non-loopback address unguarded) the console keeps the one it has."""
    log.warning("SIGHUP: reading the console's access again")
    try:
        server.access = _access(ctx, wiring.load(args).inventory, host)
    except ReconcilerError as exc:
        log.error("the console keeps its access: %s", exc)
    except Exception:  # a bug here must not stop the console
        log.exception("the console keeps its access")


def write_static(args: argparse.Namespace, ctx: Context) -> views.Output:
    """`status --format html -o DIR`: the console's pages as files in DIR."""
    from reconciler.web.console.app import read_text
    from reconciler.web.console.site import write_site

    if not args.output:
        raise UsageError("--format html writes a folder of pages: give it with -o DIR")
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {args.output}: not a folder")
    readings = Readings(args)
    try:
        written = write_site(readings(), folder, redact=ctx.redactor, read_file=read_text)
    except OSError as exc:
        from reconciler.cli.outputs import write_error

        raise write_error(exc.filename or str(folder), exc) from None
    finally:
        readings.close()
    index = folder / "index.html"
    return views.Output(
        {"folder": str(folder), "index": str(index), "files": len(written)},
        lambda: f"wrote {len(written)} pages to {folder} (open {index})",
    )
