"""`reconcile` without `--once`: follow the git remote (or the folder), pass after pass.

Each tick: pull `git.remote`/`git.branch` fast-forward only (or, with `--watch-files`, wake on
any change of the inventory folder instead of pulling), then one pass over the inventory as
it now is on disk. Schedules and retry deadlines come due at the next tick.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable

from reconciler.adapters import failpoints
from reconciler.adapters.source import git as gitsource
from reconciler.adapters.transport.kept import KeptTransports
from reconciler.cli import daemon_http, views, wiring
from reconciler.cli.passes import (
    prepared_pass,
    refuse_malformed,
    run_pass,
    stream_of,
    wired_engine,
)
from reconciler.cli.progress import JsonProgress, json_line
from reconciler.cli.settings import Context, HostSettings
from reconciler.core.errors import InputError, ReconcilerError, SourceError
from reconciler.pipeline.daemon import Daemon, join_awake, watch_files

log = logging.getLogger(__name__)


class _Continuous:
    """The daemon's tick: sync, load, pass; the settings are re-read on SIGHUP."""

    def __init__(self, args: argparse.Namespace, ctx: Context, daemon: Daemon, metrics=None):
        self.args, self.ctx, self.daemon, self.metrics = args, ctx, daemon, metrics
        self.json_logs = ctx.settings.log_format.value == "json"
        self.refused: gitsource.RefusedCommit | None = None
        self.passes: list[threading.Thread] = []  # passes still draining
        self.planning: threading.Event | None = None  # set once the latest pass planned
        self.store_url: str | None = None  # the store of the latest pass
        self.on_reload: Callable[[], None] | None = None  # SIGHUP, besides the next pass
        # SSH logins and runners kept from pass to pass (closed when the daemon stops).
        self.kept = KeptTransports()
        # Text logs show a summary per pass; JSON logs show every event as it happens.
        self.progress = (
            JsonProgress() if self.json_logs and not args.quiet else (lambda event: None)
        )
        settings = ctx.settings
        # A bad flag or variable at start-up: exit 2, rather than an error logged at every
        # pass for ever. A broken inventory too.
        refuse_malformed(settings)
        self.loaded = wiring.load_from(settings.inventory.value)

    def interval(self) -> float:
        return HostSettings.poll_interval(self.loaded.inventory.settings).value

    def tick(self) -> bool:
        """Sync, reload if asked, start a pass; False (come back soon) while the last pass is
        still reading and planning: no pull under its feet, and the reload waits for it."""
        self.passes = [t for t in self.passes if t.is_alive()]
        if self.planning is not None and not self.planning.is_set():
            return False
        reloading = self.daemon.reload.is_set()
        if reloading:
            self.daemon.reload.clear()
        if not self.args.watch_files:
            git = self.loaded.inventory.settings.git
            try:
                gitsource.pull(self.ctx.settings.inventory.value, git.remote, git.branch)
            except SourceError as exc:
                # The checkout stays where it was: its schedules and retries still come due.
                log.error("%s", exc)
                if isinstance(exc, gitsource.RefusedCommit):
                    self.refused = exc  # alerted by the next pass (once per commit)
        if reloading:
            self.kept.renew()  # later passes log in afresh (a key rotated in its vault)
            if self.on_reload is not None:
                self.on_reload()  # after the pull: a token rotated in a pushed vault counts
        self._start_pass()
        return True

    def _start_pass(self) -> None:
        """Start a pass in its own thread. Its drain goes on (runs executing) while later
        ticks plan later commits (DESIGN §10: planning is not draining), so a priority-1
        commit never waits behind earlier runs or their retry back-offs."""
        self.planning = threading.Event()
        thread = threading.Thread(
            target=self._guarded_pass, args=(self.planning,), name="pass", daemon=False
        )
        self.passes.append(thread)
        thread.start()

    def join(self) -> None:
        """Wait for every pass still draining (after a stop: within their grace)."""
        for thread in self.passes:
            join_awake(thread)

    def _guarded_pass(self, planning: threading.Event) -> None:
        """The daemon's top guard for one pass thread: log, never die. A pass that failed
        before its sinks counted its end (the inventory became invalid, the store does not
        answer) is counted here, as `reconciler_passes_total{result="error"}` (issue 19)."""
        metrics = _PassMetrics(self.metrics) if self.metrics is not None else None
        try:
            self._pass(planning, metrics)
        except InputError as exc:
            log.error("the inventory is invalid; nothing runs until it is fixed:\n%s", exc)
            _count_failed(metrics)
        except ReconcilerError as exc:
            log.error("%s", exc)
            _count_failed(metrics)
        except Exception:  # a bug in one pass must not stop the daemon
            log.exception("internal error in a pass (a bug in reconciler, please report it)")
            _count_failed(metrics)
        finally:
            planning.set()
            self.daemon.pass_ended()

    def _pass(self, planning: threading.Event, metrics: _PassMetrics | None) -> None:
        ctx = self.ctx
        failpoints.hit("before_pass")
        commit = gitsource.head_commit(ctx.settings.inventory.value)
        # Under git.verify the pass loads (and local runs execute) the commit's own checkout.
        with prepared_pass(ctx, commit, note_store=self._note_store) as (loaded, store, trust):
            self.loaded = loaded
            with wired_engine(
                ctx,
                loaded,
                store,
                commit=commit,
                progress=self.progress,
                metrics=metrics,
                stream=stream_of(self.args),
                kept=self.kept,
            ) as (engine, sinks):
                engine.stop = self.daemon.stop
                engine.grace = ctx.settings.grace.value
                engine.wait_for_retries = False  # a retry comes due at a later tick
                engine.planned = planning
                if self.refused is not None:
                    sinks.commit_refused(self.refused.commit, str(self.refused))
                    self.refused = None
                report = run_pass(ctx, loaded, store, engine, sinks, commit, trust)
        if report.runs and not self.args.quiet:
            print(self._summary(report), file=sys.stderr, flush=True)

    def _note_store(self, url: str) -> None:
        self.store_url = url  # the store /healthz asks: the one passes use

    def _summary(self, report) -> str:
        """The end of a pass on stderr: the text summary, or with `--log-format json` one
        JSON object (its runs were already shown, one object per event)."""
        if self.json_logs:
            return json_line(
                "pass finished",
                counts=report.counts(),
                exit_code=report.exit_code,
                commit=report.commit,
            )
        return views.summary_text(
            sorted(report.runs.values(), key=lambda r: r.id), report.counts(), report.held
        )


class _PassMetrics:
    """The daemon's metrics as one pass's sinks see them, noting whether the sinks counted
    the pass's end (`pass_ended`: they do once the pass has started, failed or not)."""

    def __init__(self, metrics):
        self._metrics = metrics
        self.ended = False

    def pass_ended(self, exit_code: int | None) -> None:
        self.ended = True
        self._metrics.pass_ended(exit_code)

    def __getattr__(self, name: str):
        return getattr(self._metrics, name)


def _count_failed(metrics: _PassMetrics | None) -> None:
    """A failed pass its sinks did not count (it failed before they existed or started)."""
    if metrics is not None and not metrics.ended:
        metrics.pass_ended(None)


def _console(args: argparse.Namespace, ctx: Context, endpoints):
    """The web console for --http-addr (None without it): it reads the store read-only and
    the inventory on disk, as `reconcile serve` does."""
    if not any(endpoint.full for endpoint in endpoints):
        return None
    from reconciler.cli.serve_cmd import Readings
    from reconciler.web.console.app import Console

    return Console(Readings(args), redact=ctx.redactor)


def cmd_continuous(args: argparse.Namespace, ctx: Context) -> int:
    # ctx: the host's settings, resolved once for the daemon's life
    daemon = Daemon(lambda: True, lambda: HostSettings.poll_interval(None).value)
    metrics, listeners = None, []
    endpoints = daemon_http.endpoints(args)  # a bad address: exit 2 before anything
    if endpoints:
        from reconciler.pipeline import metrics as prometheus

        metrics = prometheus.default_metrics()
    loop = _Continuous(args, ctx, daemon, metrics)  # loads the inventory: exit 2 if invalid
    daemon.tick, daemon.interval = loop.tick, loop.interval
    if endpoints:
        # A non-loopback --http-addr without access, an unreadable token: exit 2, no pass.
        guards = daemon_http.guards_for(endpoints, ctx, loop.loaded)
        # Served once the inventory is known: the first scrape already has every team's
        # series at 0 (issue 19).
        metrics.know(loop.loaded.desired)
        listeners = daemon_http.start(
            endpoints,
            guards,
            metrics,
            daemon=daemon,
            loop=loop,
            json_logs=loop.json_logs,
            quiet=args.quiet,
            console=_console(args, ctx, endpoints),
        )
        loop.on_reload = lambda: daemon_http.reload_guards(
            guards,
            endpoints,
            ctx,
            lambda: wiring.load_from(ctx.settings.inventory.value),
            listeners,
        )
    daemon.install_signal_handlers()
    if args.watch_files:
        watch_files(str(ctx.settings.inventory.value), daemon)
    try:
        daemon.serve()
        loop.join()
    finally:
        loop.kept.close()
        for listener in listeners:
            listener.close()
    return 0
