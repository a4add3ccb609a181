"""Every case of the invalid-inventory corpus, through the real command: exit 2, the located
errors on stderr, nothing executed and no state store created."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cli import reconcile

CASES = Path(__file__).resolve().parents[1] / "cases" / "invalid"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_once_rejects_invalid_inventory_and_touches_nothing(case, tmp_path):
    from tests.unit.test_invalid_cases import apply_setup, expected_lines

    work = tmp_path / case
    shutil.copytree(CASES / case, work, symlinks=True)
    apply_setup(work)
    result = reconcile("--once", cwd=work, check_code=2)
    for line in expected_lines(CASES / case):
        assert line in result.err, result.err
    assert "Traceback" not in result.err
    assert not (work / ".reconciler").exists()
