"""`reconcile` without `--once`: follow the git remote (or the folder), pass after pass.

Each tick: pull `git.remote`/`git.branch` fast-forward only (or, with `--watch-files`, wake on
any change of the inventory folder instead of pulling), then one pass over the inventory as
it now is on disk. Schedules and retry deadlines come due at the next tick.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..daemon import Daemon, watch_files
from ..engine import Engine
from ..errors import InputError, SourceError
from ..model import DEFAULT_POLL_INTERVAL
from ..source import git as gitsource
from . import views, wiring
from .lineage import lineage_guard

log = logging.getLogger(__name__)


class _Continuous:
    """The daemon's tick: sync, load, pass; the settings are re-read on SIGHUP."""

    def __init__(self, args: argparse.Namespace, daemon: Daemon):
        self.args, self.daemon = args, daemon
        self.loaded = wiring.load(args)  # a broken inventory at start-up: exit 2

    def interval(self) -> float:
        return float(self.loaded.inventory.settings.poll_interval or DEFAULT_POLL_INTERVAL)

    def tick(self) -> None:
        if self.daemon.reload.is_set():
            self.daemon.reload.clear()
        if not self.args.watch_files:
            git = self.loaded.inventory.settings.git
            try:
                gitsource.pull(wiring.inventory_dir(self.args), git.remote, git.branch)
            except SourceError as exc:
                # The checkout stays where it was: its schedules and retries still come due.
                log.error("%s", exc)
        try:
            self.loaded = wiring.load(self.args)
        except InputError as exc:
            log.error("the inventory is invalid; nothing runs until it is fixed:\n%s", exc)
            return
        self._pass()

    def _pass(self) -> None:
        args, loaded = self.args, self.loaded
        store = wiring.store(args, loaded.inventory)
        transports = wiring.transports()
        try:
            engine = Engine(store, transports, concurrency=wiring.concurrency(args, loaded.inventory),
                            resolve=wiring.secrets(args, loaded.inventory),
                            redactor=args.redactor)
            engine.stop = self.daemon.stop
            engine.grace = wiring.grace(args)
            commit = gitsource.head_commit(wiring.inventory_dir(args))
            report = engine.run_pass(loaded.desired, commit, wiring.lock_timeout(args),
                                     before_plan=lineage_guard(args, store, commit,
                                                               loaded.inventory.settings.git.verify))
        finally:
            for transport in transports.values():
                transport.close()
            store.close()
        if report.runs and not args.quiet:
            print(views.summary_text(sorted(report.runs.values(), key=lambda r: r.id),
                                     report.counts(), report.held), file=sys.stderr, flush=True)


def cmd_continuous(args: argparse.Namespace) -> int:
    daemon = Daemon(lambda: None, lambda: DEFAULT_POLL_INTERVAL)
    loop = _Continuous(args, daemon)
    daemon.tick, daemon.interval = loop.tick, loop.interval
    daemon.install_signal_handlers()
    if args.watch_files:
        watch_files(str(wiring.inventory_dir(args)), daemon)
    daemon.serve()
    return 0
