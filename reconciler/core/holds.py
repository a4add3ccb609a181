"""Why a pending run may not start yet: a retry's back-off, a deny window, a freeze, or a
missing approval (`approval:`, the two-person rule).

Pure: the dispatcher, the planner and `status` ask `hold_of` the same question and so give
the same answer. A hold is a value with a kind, a reason a person can read, and the time it
lifts by itself (None for a freeze with no `until`: a commit lifts it; None for an approval:
`reconcile approve` lifts it). The approvals given so far are store state: the edge that read
them attaches them to the `DesiredState` (`approvals`), so this stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from reconciler.core.model import DesiredState, TaskSpec
from reconciler.core.schedule import utc, window_end
from reconciler.core.trust import key_fingerprint


class HoldKind(StrEnum):
    RETRY = "retry"  # its `not_before`: a retry waiting out its back-off
    WINDOW = "window"  # a deny window of its machine or team
    FREEZE = "freeze"  # a `suspend:` on its team, machine or task
    APPROVAL = "approval"  # its task's `approval:` wants more signed approvals of its version
    ROLLOUT = "rollout"  # its batch waits for the batch before it, or for the pause after it


@dataclass(frozen=True)
class Hold:
    kind: HoldKind
    until: datetime | None  # when it lifts by itself; None: when a commit lifts it
    reason: str = ""  # a freeze's own reason, with what it is on
    after: str | None = None  # the held dependency (task id) this run waits for, if it is that

    def describe(self) -> str:
        """One line for people: `deny window until 2026-12-06T18:00Z`,
        `freeze on team ops (INC-123 failover) until lifted`, `after ops/migrate, held by
        freeze on task ops/migrate (wait for QA) until lifted`."""
        if self.kind == HoldKind.APPROVAL:  # `awaiting approval (1 of 2 admin approvals)`
            held = f"awaiting approval ({self.reason})"
            return f"after {self.after}, held by {held}" if self.after else held
        if self.kind == HoldKind.ROLLOUT:  # `rollout: batch 2 of 3 waits for batch 1`
            held = f"rollout: {self.reason}"
            if self.until is not None:
                held += f" until {_iso(self.until)}"
            return f"after {self.after}, held by {held}" if self.after else held
        what = {
            HoldKind.RETRY: "retry back-off",
            HoldKind.WINDOW: "deny window",
            HoldKind.FREEZE: f"freeze on {self.reason}",
        }[self.kind]
        held = f"{what} until {_iso(self.until) if self.until else 'lifted'}"
        return f"after {self.after}, held by {held}" if self.after else held


def hold_of(
    task: str,
    machine: str,
    priority: int,
    desired: DesiredState,
    now: datetime,
    not_before: datetime | None = None,
) -> Hold | None:
    """What holds a run of `task` on `machine`, dispatched at `priority`, at `now`: None if
    nothing does. Looked at from the later of now and `not_before`, so a hold's `until` is
    a time at which the run may really start (as far as time goes); a freeze comes first
    (it says why), then a deny window, then the back-off itself."""
    now = utc(now)
    at = now
    if not_before is not None and utc(not_before) > now:
        at = utc(not_before)
    freezes = [
        (scope, freeze)
        for scope, freeze in desired.freezes_for(task, machine)
        if freeze.covers(priority, at)
    ]
    if freezes:
        # The one that lasts longest says until when (a freeze without `until` lasts).
        scope, freeze = max(freezes, key=lambda f: (f[1].until is None, f[1].until or at))
        return Hold(HoldKind.FREEZE, freeze.until, f"{scope} ({freeze.reason})")
    spec = desired.tasks.get(task)
    if spec is not None and spec.approval is not None and machine in spec.versions:
        got = approvals_of(spec, machine, desired)
        if got < spec.approval.count:
            return Hold(HoldKind.APPROVAL, None, approval_tally(spec, got))
    end = window_end(desired.windows_for(machine), priority, at)
    if end is not None:
        return Hold(HoldKind.WINDOW, end)
    return Hold(HoldKind.RETRY, at) if at > now else None


def approvals_of(spec: TaskSpec, machine: str, desired: DesiredState) -> int:
    """How many approvals of `spec`'s current version on `machine` count: those given (the
    store's, attached to `desired`) by a key that still belongs, in `desired`, to a member of
    the task's team holding the approval's role."""
    rule = spec.approval
    team = desired.teams.get(spec.team)
    if rule is None or team is None or machine not in spec.versions:
        return 0
    able = {key_fingerprint(m.ssh) for m in team.members if m.ssh and rule.held_by(m.role)} - {None}
    given = desired.approvals.get((spec.id, machine, spec.version_for(machine)), frozenset())
    return len(given & able)


def approval_tally(spec: TaskSpec, got: int) -> str:
    """`1 of 2 admin approvals`."""
    rule = spec.approval
    assert rule is not None
    plural = "s" if rule.count != 1 else ""
    return f"{got} of {rule.count} {rule.role.value} approval{plural}"


def freezes_in_force(desired: DesiredState, now: datetime) -> list[dict]:
    """The freezes of `desired` that hold runs at `now`, as the audit log records them at
    the start of each pass (scope, reason, until, allow_priority_1), sorted by scope."""
    now = utc(now)
    found = [(f"team {t.name}", t.suspend) for t in desired.teams.values()]
    found += [(f"machine {m.name}", m.suspend) for m in desired.machines.values()]
    found += [(f"task {t.id}", t.suspend) for t in desired.tasks.values()]
    return [
        {
            "scope": scope,
            "reason": freeze.reason,
            "until": _iso(freeze.until),
            "allow_priority_1": freeze.allow_priority_1,
        }
        for scope, freeze in sorted(found, key=lambda f: f[0])
        if freeze is not None and (freeze.until is None or freeze.until > now)
    ]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None
