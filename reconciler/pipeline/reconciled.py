"""What a worker honours besides its own checkout: the freezes in force when the latest pass
planned, which the pass recorded with its plan (`StateStore.reconciled_freezes`), and the
approval rules the passes judge by (`approvals.with_reconciled_rules`).

A worker judges holds from the inventory it runs, and its checkout may lag the passes: a
freeze committed and reconciled must hold on every worker all the same, or a worker that has
not pulled yet runs the work an incident froze. So the reconciled freezes are attached to the
worker's desired state (`DesiredState.reconciled_freezes`) and hold runs as its own do; one
lifts for workers when a pass reconciles the commit that lifts it (or at its `until`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from reconciler.adapters.store.base import StateStore
from reconciler.core.approval_rules import rules_of
from reconciler.core.model import DesiredState
from reconciler.pipeline.approvals import Rereading, with_reconciled_rules


class HonouringFreezes(Rereading):
    """A worker's desired state with the freezes and the approval rules of the reconciled
    inventory (see `Rereading`)."""

    def __init__(
        self,
        inner: Callable[[], DesiredState],
        store: StateStore,
        inventory: str | Path,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(inner, interval, clock)
        self.store, self.inventory = store, inventory

    def reread(self, base: DesiredState, now: float) -> DesiredState:
        freezes = tuple(self.store.reconciled_freezes())
        # The freezes are read: a failure reading the rules waits for the next interval.
        self.read_at = now
        return with_reconciled_rules(
            replace(base, reconciled_freezes=freezes), self.store, self.inventory
        )

    def unchanged(self, fresh: DesiredState, last: DesiredState) -> bool:
        return fresh.reconciled_freezes == last.reconciled_freezes and rules_of(fresh) == rules_of(
            last
        )
