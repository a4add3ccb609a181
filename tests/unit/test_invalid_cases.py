"""Data-driven invalid inventories: tests/cases/invalid/<case>/{inventory/, expected.txt}.

`expected.txt` lists, one a line and in the order they are reported (by path, line, column),
the beginning of every error the inventory must produce: `path:line:column: message`. The
count must match too, so each case proves that ALL errors are reported together, once each.

An optional `setup.yaml` builds what the repository should not hold, in a temporary copy:
`pad` grows a file with comment lines to a byte size; `symlink` creates links (path: target).
"""

import shutil
from pathlib import Path

import pytest
import yaml

from reconciler.core.errors import InputError
from reconciler.inventory.loader import load_inventory

CASES = Path(__file__).resolve().parents[1] / "cases" / "invalid"


def case_names():
    return sorted(p.name for p in CASES.iterdir() if (p / "expected.txt").is_file())


def expected_lines(case_dir: Path) -> list[str]:
    lines = (case_dir / "expected.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def apply_setup(work: Path) -> None:
    setup_file = work / "setup.yaml"
    if not setup_file.exists():
        return
    setup = yaml.safe_load(setup_file.read_text()) or {}
    for name, size in (setup.get("pad") or {}).items():
        path = work / name
        with path.open("ab") as handle:
            missing = size - path.stat().st_size
            handle.write((b"#" * 79 + b"\n") * (missing // 80) + b"#" * (missing % 80))
        assert path.stat().st_size == size
    for name, target in (setup.get("symlink") or {}).items():
        (work / name).symlink_to(target)


def test_the_corpus_has_the_required_cases():
    assert len(case_names()) >= 12


@pytest.mark.parametrize("case", case_names())
def test_invalid_inventory_reports_every_expected_error(case, tmp_path, monkeypatch):
    work = tmp_path / case
    shutil.copytree(CASES / case, work, symlinks=True)
    apply_setup(work)
    monkeypatch.chdir(work)

    with pytest.raises(InputError) as caught:
        load_inventory("inventory")

    actual = [str(d) for d in caught.value.diagnostics.errors]
    expected = expected_lines(CASES / case)
    assert len(actual) == len(expected), "\n".join(actual)
    for want, got in zip(expected, actual):
        assert got.startswith(want), f"\nwanted: {want}\n   got: {got}"
