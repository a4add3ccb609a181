"""The golden cases of `reconcile diff` (tests/cases/diff/<case>/), shared by the unit test that
renders them in-process and the end-to-end test that commits them to a real repository.

A case holds `base/` and `head/` inventories, the expected renderings (expected.txt, .json,
.md) and optionally `vaults.yaml`: the plaintext of each side's team vaults
({"base"|"head": {team: {NAME: value}}}), encrypted only where a test needs real files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CASES = Path(__file__).resolve().parents[1] / "cases" / "diff"
# The e2e test replaces the real commits with these, so both tests print the same bytes.
BASE_COMMIT, HEAD_COMMIT = "1" * 40, "2" * 40


def case_dirs() -> list[Path]:
    """Every golden case folder, by name."""
    return sorted(p for p in CASES.iterdir() if (p / "base").is_dir())


def vault_plaintexts(case: Path) -> dict[str, dict[str, dict[str, str]]]:
    """{"base"|"head": {team: {NAME: value}}} from the case's vaults.yaml (may be absent)."""
    path = case / "vaults.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return {side: (data or {}).get(side) or {} for side in ("base", "head")}


__all__ = ["BASE_COMMIT", "CASES", "HEAD_COMMIT", "case_dirs", "vault_plaintexts"]
