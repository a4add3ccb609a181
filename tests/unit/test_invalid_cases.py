"""Data-driven invalid inventories: tests/cases/invalid/<case>/{inventory/, expected.txt}.

`expected.txt` lists, one a line and in the order they are reported (by path, line, column),
the beginning of every error the inventory must produce: `path:line:column: message`. The
count must match too, so each case proves that ALL errors are reported together, once each.

An optional `setup.yaml` builds what the repository should not hold, in a temporary copy:
`pad` grows a file with comment lines to a byte size; `symlink` creates links (path: target).
"""

import pytest

from reconciler.core.errors import InputError
from reconciler.inventory.loader import load_inventory
from tests.support.invalid_cases import CASES, case_names, copy_case, expected_lines


def test_the_corpus_has_the_required_cases():
    assert len(case_names()) >= 12


@pytest.mark.parametrize("case", case_names())
def test_invalid_inventory_reports_every_expected_error(case, tmp_path, monkeypatch):
    monkeypatch.chdir(copy_case(case, tmp_path))

    with pytest.raises(InputError) as caught:
        load_inventory("inventory")

    actual = [str(d) for d in caught.value.diagnostics.errors]
    expected = expected_lines(CASES / case)
    assert len(actual) == len(expected), "\n".join(actual)
    for want, got in zip(expected, actual):
        assert got.startswith(want), f"\nwanted: {want}\n   got: {got}"
