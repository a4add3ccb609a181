"""The approvals a pass decides with (issue 15 §3, the two-person rule): read from the store
and attached to the desired state, so that `core.holds.hold_of` stays pure.

Only the approvals of each task's current version count (a new version has none); whether
an approving key still belongs to a member in the approval's role is the core's question,
asked of the same desired state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from reconciler.adapters.store.base import ApprovalBook
from reconciler.core.model import DesiredState


def with_approvals(desired: DesiredState, store: ApprovalBook | None) -> DesiredState:
    """`desired` with the approvals `store` holds for the current versions of its tasks
    that ask for approval (`approval:`); `desired` itself when none does or no store."""
    ruled = [spec for spec in desired.tasks.values() if spec.approval is not None]
    if not ruled or store is None:
        return desired
    given: dict[tuple[str, str, str], set[str]] = {}
    for spec in ruled:
        for approval in store.approvals_of(spec.id):
            if spec.versions.get(approval.machine) == approval.version:
                key = (spec.id, approval.machine, approval.version)
                given.setdefault(key, set()).add(approval.fingerprint)
    return replace(desired, approvals={key: frozenset(keys) for key, keys in given.items()})


class Approving:
    """A worker's desired state (`inner`, asked at every round) with the store's approvals,
    read again at most every `interval` seconds: an approval given while a worker runs
    starts its runs within that. The same object is returned while neither the desired
    state nor the approvals changed (the engine tells a new desired state by identity)."""

    def __init__(
        self,
        inner: Callable[[], DesiredState],
        store: ApprovalBook,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.inner, self.store, self.interval, self.clock = inner, store, interval, clock
        self.base: DesiredState | None = None
        self.last: DesiredState | None = None
        self.read_at = 0.0

    def __call__(self) -> DesiredState:
        base = self.inner()
        now = self.clock()
        same = base is self.base and self.last is not None
        if same and now - self.read_at < self.interval:
            return self.last
        approved, self.read_at = with_approvals(base, self.store), now
        if same and approved.approvals == self.last.approvals:
            return self.last
        self.base, self.last = base, approved
        return approved
