"""`reconcile` without `--once`: passes over the inventory folder at `poll_interval`.

Pulling a git remote comes with the GitOps workflow; until then the daemon reconciles the
inventory as it is on disk at each tick.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..engine import Engine
from ..daemon import Daemon
from ..model import DEFAULT_POLL_INTERVAL
from ..source.git import head_commit
from . import views, wiring

log = logging.getLogger(__name__)


def cmd_continuous(args: argparse.Namespace) -> int:
    first = wiring.load(args)  # a broken inventory at start-up is a usage error: exit 2
    interval = first.inventory.settings.poll_interval or DEFAULT_POLL_INTERVAL

    def one_pass(stop) -> None:
        loaded = wiring.load(args)
        store = wiring.store(args, loaded.inventory)
        transports = wiring.transports()
        try:
            engine = Engine(store, transports, concurrency=wiring.concurrency(args, loaded.inventory),
                            resolve=wiring.secrets(args, loaded.inventory),
                            redactor=args.redactor)
            engine.stop = stop
            report = engine.run_pass(loaded.desired, head_commit(wiring.inventory_dir(args)),
                                     wiring.lock_timeout(args))
        finally:
            store.close()
        if report.runs:
            log.warning("pass: %s", ", ".join(f"{n} {s}" for s, n in report.counts().items()))
            if not args.quiet:
                print(views.summary_text(sorted(report.runs.values(), key=lambda r: r.id),
                                         report.counts(), report.held), file=sys.stderr)

    daemon = Daemon(one_pass, interval)
    daemon.install_signal_handlers()
    daemon.serve()
    return 0
