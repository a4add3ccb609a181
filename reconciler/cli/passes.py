"""One pass (or a worker's life) with everything around the engine wired in: secrets,
transports, the audit/alert/metrics sinks and the commit lineage check. Shared by
`reconcile --once`, the daemon and `reconcile worker`, so the three behave alike."""

from __future__ import annotations

import argparse
import logging
from contextlib import contextmanager
from typing import Callable, Iterator

from ..engine import Engine, Event, PassReport
from ..errors import InputError, StoreError
from ..sinks import audit_validation_failed, build_sinks
from ..source.git import RefusedCommit
from ..store.factory import open_store
from . import wiring
from .lineage import lineage_guard

log = logging.getLogger(__name__)


@contextmanager
def wired_engine(args: argparse.Namespace, loaded, store, *, commit: str | None,
                 progress: Callable[[Event], None], metrics=None,
                 desired=None) -> Iterator[tuple[Engine, object]]:
    """An engine whose events go to the sinks first (a refused audit entry must stop the
    dispatch) and then to `progress`; sinks and transports are closed on exit, waiting at
    most 10 s for alert deliveries."""
    secrets = wiring.secrets(args, loaded.inventory)
    sinks = build_sinks(store, loaded.inventory, desired or loaded.desired, args.redactor,
                        secrets, commit=commit, metrics=metrics)
    transports = wiring.transports(secrets, loaded.inventory.settings)

    def on_event(event: Event) -> None:
        if event.kind == "unreachable":  # one alert per machine, not per run
            sinks.machine_unreachable(event.run.machine, event.detail)
        else:
            sinks(event)
        progress(event)
    try:
        engine = Engine(store, transports, concurrency=wiring.concurrency(args, loaded.inventory),
                        on_event=on_event, resolve=sinks.audit_resolver(secrets),
                        redactor=args.redactor)
        yield engine, sinks
    finally:
        sinks.close(10)
        for transport in transports.values():
            transport.close()


def run_pass(args: argparse.Namespace, loaded, store, engine: Engine, sinks,
             commit: str | None) -> PassReport:
    """The pass itself, audited from start to end (a refused commit included)."""
    sinks.pass_started(commit)
    try:
        report = engine.run_pass(loaded.desired, commit, wiring.lock_timeout(args),
                                 before_plan=lineage_guard(args, store, commit,
                                                           loaded.inventory.settings.git.verify))
    except BaseException as exc:
        if isinstance(exc, RefusedCommit):
            sinks.commit_refused(exc.commit, str(exc))
        sinks.pass_failed(exc)
        raise
    sinks.pass_finished(report)  # StoreError (exit 3) if an audit entry was lost
    return report


def load_audited(args: argparse.Namespace, commit: str | None):
    """`wiring.load`, recording a failed validation in the audit log of an existing store."""
    try:
        return wiring.load(args)
    except InputError as exc:
        try:
            store = open_store(wiring.state_url(args, None), create=False)
        except (StoreError, InputError):
            store = None
        if store is not None:
            try:
                audit_validation_failed(store, exc, commit=commit)
            except StoreError as problem:
                log.warning("could not audit the failed validation: %s", problem)
            finally:
                store.close()
        raise
