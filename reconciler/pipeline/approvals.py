"""The approvals a pass decides with (issue 15 §3, the two-person rule): read from the store
and attached to the desired state, so that `core.holds.hold_of` stays pure.

Only the approvals of each task's current version count (a new version has none); whether
an approving key still belongs to a member in the approval's role is the core's question,
asked of the same desired state.
"""

from __future__ import annotations

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
