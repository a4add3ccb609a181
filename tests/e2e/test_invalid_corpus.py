"""Every case of the invalid-inventory corpus, through the real command: exit 2, the located
errors on stderr, nothing executed and no state store created."""

from __future__ import annotations

import pytest

from tests.support.cli import reconcile
from tests.support.invalid_cases import CASES, case_names, copy_case, expected_lines


@pytest.mark.parametrize("case", case_names())
def test_once_rejects_invalid_inventory_and_touches_nothing(case, tmp_path):
    work = copy_case(case, tmp_path)
    result = reconcile("--once", cwd=work, check_code=2)
    for line in expected_lines(CASES / case):
        assert line in result.err, result.err
    assert "Traceback" not in result.err
    assert not (work / ".reconciler").exists()
