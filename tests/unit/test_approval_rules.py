"""core/approval_rules: the rule a new version must meet is the stricter of its commit's and
the one reconciled before it (issue 15 §3)."""

from dataclasses import replace

import pytest

from reconciler.core.approval_rules import protected, rules_of, stricter
from reconciler.core.model import Approval, Role
from tests.support.plan_fixtures import desired, spec

ADMIN_1 = Approval(Role.ADMIN, 1)
OPERATOR_2 = Approval(Role.OPERATOR, 2)


@pytest.mark.parametrize(
    ("ours", "before", "wanted"),
    [
        (None, None, None),
        (None, ADMIN_1, ADMIN_1),  # removed in the same commit: the old rule stands
        (ADMIN_1, None, ADMIN_1),  # added: the new rule counts at once
        (Approval(Role.OPERATOR, 1), ADMIN_1, ADMIN_1),  # lowered to operator
        (Approval(Role.ADMIN, 1), Approval(Role.ADMIN, 3), Approval(Role.ADMIN, 3)),
        (ADMIN_1, OPERATOR_2, Approval(Role.ADMIN, 2)),  # each the stricter part
    ],
)
def test_the_stricter_rule_takes_the_stricter_role_and_the_larger_count(ours, before, wanted):
    assert stricter(ours, before) == wanted


def test_protected_tightens_the_tasks_whose_rule_was_stricter_before_and_no_other():
    state = desired(spec("prod/a"), replace(spec("prod/b"), approval=ADMIN_1))
    before = {"prod/a": OPERATOR_2, "prod/b": Approval(Role.OPERATOR, 1), "prod/gone": ADMIN_1}
    assert rules_of(protected(state, before)) == {"prod/a": OPERATOR_2, "prod/b": ADMIN_1}
    assert protected(state, {"prod/b": ADMIN_1}) is state  # nothing to tighten
