"""The approvals a pass decides with (issue 15 §3, the two-person rule): read from the store
and attached to the desired state, so that `core.holds.hold_of` stays pure.

Only the approvals of each task's current version count (a new version has none), and only
those whose stored signature still verifies (`ssh-keygen -Y verify`) against a member key of
the desired state: a row written into the store by hand, or altered, counts for nothing.
Whether the approving key still belongs to a member in the approval's role is the core's
question, asked of the same desired state.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from reconciler.adapters.source.approvals import approval_text, verify_signature
from reconciler.adapters.store.base import ApprovalBook, ApprovalRecord, StateStore
from reconciler.core.approval_rules import protected, rules_of, stricter
from reconciler.core.errors import InputError, SourceError
from reconciler.core.model import Approval, DesiredState

log = logging.getLogger(__name__)


def with_approvals(desired: DesiredState, store: ApprovalBook | None) -> DesiredState:
    """`desired` with the approvals `store` holds for the current versions of its tasks
    that ask for approval (`approval:`); `desired` itself when none does or no store."""
    ruled = [spec for spec in desired.tasks.values() if spec.approval is not None]
    if not ruled or store is None:
        return desired
    given: dict[tuple[str, str, str], set[str]] = {}
    for spec in ruled:
        signed: dict[tuple[str, str, str], list[ApprovalRecord]] = {}
        for approval in store.approvals_of(spec.id):
            key = (approval.signature, approval.commit, approval.fingerprint)
            signed.setdefault(key, []).append(approval)
        for (signature, commit, fingerprint), rows in signed.items():
            current = [a for a in rows if spec.versions.get(a.machine) == a.version]
            if not current:
                continue  # approvals of other versions: no need to check them
            text = approval_text(spec.id, commit, {a.machine: a.version for a in rows})
            if _signer(desired, text, signature) != fingerprint:
                continue  # not signed by that member's key (a forged or altered row)
            for approval in current:
                key = (spec.id, approval.machine, approval.version)
                given.setdefault(key, set()).add(fingerprint)
    return replace(desired, approvals={key: frozenset(keys) for key, keys in given.items()})


def with_protected_rules(
    desired: DesiredState, store: StateStore | None, inventory: str | Path, commit: str | None
) -> DesiredState:
    """`desired` (the inventory at `commit`) with each task's approval rule the stricter of
    its own and that of the commit reconciled before `commit` (core/approval_rules.py): a
    commit cannot lower the rule its own new versions must meet. `desired` itself outside
    git, without a store, or before anything was reconciled."""
    if store is None or commit is None:
        return desired
    commit = commit.removesuffix("-dirty")
    before = store.reconciled_before(commit)
    if before is None:
        last = store.last_commit()
        before = last if last != commit else None
    return protected(desired, _rules_at(inventory, before)) if before else desired


def with_reconciled_rules(
    desired: DesiredState, store: StateStore, inventory: str | Path
) -> DesiredState:
    """A worker's `desired` (its own checkout, which may lag or lead the passes) with each
    task's approval rule no weaker than the passes judge by: the rule of the last reconciled
    commit and of the commit reconciled before it."""
    last = store.last_commit()
    if last is None:
        return desired
    rules = dict(_rules_at(inventory, last))
    before = store.reconciled_before(last)
    for task, rule in (_rules_at(inventory, before) if before else {}).items():
        rules[task] = stricter(rules.get(task), rule)  # type: ignore[assignment]
    return protected(desired, rules)


def _rules_at(inventory: str | Path, commit: str) -> Mapping[str, Approval]:
    try:
        return _rules_of_commit(str(Path(inventory).resolve()), commit)
    except (InputError, SourceError) as exc:
        # A reconciled commit was valid and is an ancestor of what passes now (lineage):
        # this is a clone that lacks it. Its rules cannot be read, so they cannot count.
        log.warning("approval rules of %s not read: %s", commit[:12], exc)
        return {}


@functools.lru_cache(maxsize=16)
def _rules_of_commit(inventory: str, commit: str) -> Mapping[str, Approval]:
    """The approval rules of the inventory at `commit` (a reconciled commit: it does not
    change, so it is read once per process; a failure is not remembered)."""
    from reconciler.adapters.source.revision import load_revision

    return rules_of(load_revision(inventory, commit).desired)


@functools.lru_cache(maxsize=4096)
def _checked(keys: tuple[str, ...], text: bytes, signature: str) -> str | None:
    return verify_signature(keys, text, signature)


def _signer(desired: DesiredState, text: bytes, signature: str) -> str | None:
    """Which member key of `desired` made `signature` over `text` (checked once per
    process for the same keys, text and signature)."""
    keys = tuple(sorted({m.ssh for t in desired.teams.values() for m in t.members if m.ssh}))
    return _checked(keys, text, signature)


class Rereading:
    """A worker's desired state (`inner`, asked at every round) with what the store adds to
    it (`reread`), read again at most every `interval` seconds. The same object is returned
    while neither the desired state nor what was read changed (`unchanged`): the engine
    tells a new desired state by identity."""

    def __init__(
        self,
        inner: Callable[[], DesiredState],
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.inner, self.interval, self.clock = inner, interval, clock
        self.base: DesiredState | None = None
        self.last: DesiredState | None = None
        self.read_at = 0.0

    def reread(self, base: DesiredState, now: float) -> DesiredState:
        raise NotImplementedError

    def unchanged(self, fresh: DesiredState, last: DesiredState) -> bool:
        raise NotImplementedError

    def __call__(self) -> DesiredState:
        base = self.inner()
        now = self.clock()
        same = base is self.base and self.last is not None
        if same and now - self.read_at < self.interval:
            return self.last
        fresh = self.reread(base, now)
        self.read_at = now
        if same and self.unchanged(fresh, self.last):
            return self.last
        self.base, self.last = base, fresh
        return fresh


class Approving(Rereading):
    """A worker's desired state with the store's approvals (see `Rereading`): an approval
    given while a worker runs starts its runs within `interval` seconds."""

    def __init__(
        self,
        inner: Callable[[], DesiredState],
        store: ApprovalBook,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(inner, interval, clock)
        self.store = store

    def reread(self, base: DesiredState, now: float) -> DesiredState:
        return with_approvals(base, self.store)

    def unchanged(self, fresh: DesiredState, last: DesiredState) -> bool:
        return fresh.approvals == last.approvals
