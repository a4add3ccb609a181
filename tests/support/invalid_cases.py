"""The invalid-inventory corpus (tests/cases/invalid/<case>/), shared by the unit test that loads
each case and the end-to-end test that runs `reconcile --once` on it.

A case holds `inventory/` and `expected.txt`: the beginning of every error the inventory must
produce (`path:line:column: message`), one a line in the order they are reported; blank lines
and `#` comments are ignored. An optional `setup.yaml` builds what the repository should not
hold, in a temporary copy: `pad` grows a file with comment lines to a byte size; `symlink`
creates links (path: target).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

CASES = Path(__file__).resolve().parents[1] / "cases" / "invalid"


def case_names() -> list[str]:
    """Every case of the corpus (a folder with an expected.txt), by name."""
    return sorted(p.name for p in CASES.iterdir() if (p / "expected.txt").is_file())


def expected_lines(case_dir: Path) -> list[str]:
    lines = (case_dir / "expected.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def apply_setup(work: Path) -> None:
    """Builds what the case's setup.yaml asks for in `work` (a copy of the case)."""
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


def copy_case(case: str, into: Path) -> Path:
    """A copy of the case under `into`, its setup applied; the copy's folder."""
    work = into / case
    shutil.copytree(CASES / case, work, symlinks=True)
    apply_setup(work)
    return work


__all__ = ["CASES", "apply_setup", "case_names", "copy_case", "expected_lines"]
