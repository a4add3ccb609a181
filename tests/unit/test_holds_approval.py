"""The approval hold (issue 15 §3), pure: what counts toward `approval: {role, count}`."""

from __future__ import annotations

from dataclasses import replace

from reconciler.core.dispatch import decide
from reconciler.core.holds import HoldKind, hold_of
from reconciler.core.model import Approval, Member, Role, Team
from reconciler.core.trust import key_fingerprint
from tests.support.plan_fixtures import NOW, desired, executed, run, spec

# Three well-formed ed25519 public keys (their fingerprints are all the hold compares).
KEYS = {
    name: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{blob} {name}"
    for name, blob in (
        ("ann", "Juv01peA2bSw4eUQcpKFgdLVjwbV8okLtTCRl8VfhuX"),
        ("ben", "Kuv01peA2bSw4eUQcpKFgdLVjwbV8okLtTCRl8VfhuX"),
        ("val", "Luv01peA2bSw4eUQcpKFgdLVjwbV8okLtTCRl8VfhuX"),
    )
}
FP = {name: key_fingerprint(key) for name, key in KEYS.items()}


def state(count: int, given: dict[tuple[str, str, str], set[str]], roles=None):
    roles = roles or {"ann": Role.ADMIN, "ben": Role.ADMIN, "val": Role.VIEWER}
    task = replace(spec("prod/deploy"), approval=Approval(Role.ADMIN, count))
    d = desired(task)
    members = tuple(Member(name=n, role=r, ssh=KEYS[n]) for n, r in roles.items())
    d = replace(d, teams={"prod": Team(name="prod", members=members)})
    return replace(d, approvals={k: frozenset(FP[n] for n in v) for k, v in given.items()})


def test_a_version_without_approvals_is_held_with_the_tally():
    hold = hold_of("prod/deploy", "m1", 3, state(2, {}), NOW)
    assert hold is not None and hold.kind is HoldKind.APPROVAL and hold.until is None
    assert hold.describe() == "awaiting approval (0 of 2 admin approvals)"


def test_enough_approvals_of_the_current_version_lift_the_hold():
    given = {("prod/deploy", "m1", "v1"): {"ann", "ben"}}
    assert hold_of("prod/deploy", "m1", 3, state(2, given), NOW) is None


def test_approvals_of_another_version_or_by_a_viewer_do_not_count():
    given = {("prod/deploy", "m1", "v0"): {"ann", "ben"}, ("prod/deploy", "m1", "v1"): {"val"}}
    hold = hold_of("prod/deploy", "m1", 3, state(1, given), NOW)
    assert hold is not None and hold.describe() == "awaiting approval (0 of 1 admin approval)"


def test_an_approval_stops_counting_when_its_key_loses_the_role():
    given = {("prod/deploy", "m1", "v1"): {"ann"}}
    demoted = state(1, given, roles={"ann": Role.OPERATOR, "ben": Role.ADMIN})
    assert hold_of("prod/deploy", "m1", 3, demoted, NOW) is not None
    assert hold_of("prod/deploy", "m1", 3, state(1, given), NOW) is None


def test_the_dispatcher_holds_an_unapproved_run_at_every_priority():
    pending = [run(1, "prod/deploy", "m1", priority=1)]
    decision = decide(pending, [], state(1, {}), executed(), NOW, 16)
    assert not decision.start
    ((held, hold),) = decision.held
    assert held.id == 1 and hold.kind is HoldKind.APPROVAL
