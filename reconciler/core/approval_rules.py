"""Which `approval:` rule a task's new version must meet: the stricter of the rule its own
commit writes and the rule of the commit reconciled before it (issue 15 §3).

The rule is part of the inventory, so the commit that changes a task's command could lower or
remove its `approval:` along with it, and the new version would then wait for nobody. Judged
against the rule that was in force before the commit as well, such a version still waits for
the approvals that rule asks for; lowering the rule takes effect only once a commit that
lowers it has been reconciled, before the version it is to spare (reviewed on its own). Pure:
the edge reads the earlier commit's rules (pipeline/approvals.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from reconciler.core.model import Approval, DesiredState, Role


def stricter(ours: Approval | None, before: Approval | None) -> Approval | None:
    """A rule that each of `ours` and `before` would accept no less than: the stricter role
    (admin over operator: an admin counts as an operator, not the other way round) and the
    larger count. None (no approval) is the weakest rule."""
    if ours is None or before is None:
        return ours or before
    role = Role.ADMIN if Role.ADMIN in (ours.role, before.role) else ours.role
    count = max(ours.count, before.count)
    if (role, count) == (ours.role, ours.count):
        return ours
    return replace(ours, role=role, count=count)


def protected(desired: DesiredState, before: Mapping[str, Approval]) -> DesiredState:
    """`desired` with each task's approval rule the stricter of its own and `before`'s
    (the rules of the commit reconciled before, by task id); `desired` itself when that
    changes nothing."""
    tasks = dict(desired.tasks)
    changed = False
    for task_id, rule in before.items():
        spec = tasks.get(task_id)
        if spec is None:
            continue  # a task that is gone, or new: nothing to protect
        strict = stricter(spec.approval, rule)
        if strict != spec.approval:
            tasks[task_id], changed = replace(spec, approval=strict), True
    return replace(desired, tasks=tasks) if changed else desired


def rules_of(desired: DesiredState) -> dict[str, Approval]:
    """The approval rules of `desired`'s tasks, by task id (tasks without one left out)."""
    return {spec.id: spec.approval for spec in desired.tasks.values() if spec.approval}
