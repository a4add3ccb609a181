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
from reconciler.pipeline.approvals import with_reconciled_rules


class HonouringFreezes:
    """A worker's desired state (`inner`, asked at every round) with the freezes and the
    approval rules of the reconciled inventory, read again at most every `interval` seconds.
    The same object is returned while nothing changed (the engine tells a new desired state
    by identity)."""

    def __init__(
        self,
        inner: Callable[[], DesiredState],
        store: StateStore,
        inventory: str | Path,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.inner, self.store, self.interval, self.clock = inner, store, interval, clock
        self.inventory = inventory
        self.base: DesiredState | None = None
        self.last: DesiredState | None = None
        self.read_at = 0.0

    def __call__(self) -> DesiredState:
        base = self.inner()
        now = self.clock()
        same = base is self.base and self.last is not None
        if same and now - self.read_at < self.interval:
            return self.last
        freezes, self.read_at = tuple(self.store.reconciled_freezes()), now
        held = with_reconciled_rules(
            replace(base, reconciled_freezes=freezes), self.store, self.inventory
        )
        if (
            same
            and freezes == self.last.reconciled_freezes
            and rules_of(held) == rules_of(self.last)
        ):
            return self.last
        self.base, self.last = base, held
        return self.last
