"""Golden plan cases: tests/cases/plan/<case>/ holds a real inventory, an executed state and
the expected plan.

Each case folder has:
- `inventory/`: an inventory as a user writes it (SPEC §1), loaded and compiled for real;
- `executed.yaml`: a list of runs (`id`, `task`, `machine`, `version`, `status`, and any
  other `Run` field). `version: CURRENT` stands for the task's current version on that
  machine; any other text is an older version;
- `case.yaml`: `now` (ISO 8601 UTC), a `description`, and optionally `expect:` with
  `held_until` and `slots` maps keyed `task@machine` (fields `Plan.to_json` leaves out);
- `expected.json`: `Plan.to_json()` of the plan, byte for byte after JSON parsing.

Set RECONCILER_UPDATE_GOLDEN=1 to rewrite expected.json from the current planner (then read
the diff before committing it).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from reconciler.core.compile import compile_inventory
from reconciler.core.model import DesiredState
from reconciler.core.plan import Plan, make_plan
from reconciler.core.schedule import parse_slot, slot_key, utc
from reconciler.core.state import ExecutedState, Run, RunStatus
from reconciler.inventory.loader import load_inventory

CASES = Path(__file__).resolve().parents[1] / "cases" / "plan"
UPDATE = os.environ.get("RECONCILER_UPDATE_GOLDEN") == "1"


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if (p / "case.yaml").is_file())


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_plan_case(case: Path):
    meta = yaml.safe_load((case / "case.yaml").read_text()) or {}
    inventory, warnings = load_inventory(str(case / "inventory"))
    assert [str(w) for w in warnings] == [], "golden inventories are written cleanly"
    desired = compile_inventory(inventory)
    executed = ExecutedState.of(read_runs(case / "executed.yaml", desired))
    plan = make_plan(desired, executed, as_time(meta["now"]))
    expected_file = case / "expected.json"
    if UPDATE:
        expected_file.write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    assert plan.to_json() == json.loads(expected_file.read_text())
    check_details(plan, meta.get("expect") or {})


def test_there_are_enough_cases():
    assert len(case_dirs()) >= 8


def read_runs(path: Path, desired: DesiredState) -> list[Run]:
    """The runs of `executed.yaml`, with `CURRENT` versions resolved against `desired`."""
    rows = yaml.safe_load(path.read_text()) or []
    return [to_run(dict(row), desired) for row in rows]


def to_run(row: dict, desired: DesiredState) -> Run:
    spec = desired.tasks.get(row["task"])
    if row.get("version") == "CURRENT":
        assert spec is not None, f"CURRENT version of a task not in the inventory: {row}"
        row["version"] = spec.version_for(row["machine"])
    row["status"] = RunStatus(row["status"])
    row.setdefault("priority", spec.priority if spec else 3)
    for key in ("created_at", "started_at", "finished_at", "not_before"):
        if key in row:
            row[key] = as_time(row[key])
    if isinstance(row.get("slot"), datetime):  # an unquoted timestamp in the YAML
        row["slot"] = slot_key(utc(row["slot"]))
    return Run(**row)


def as_time(value) -> datetime:
    """A YAML time: a string, or the datetime YAML makes of an unquoted timestamp."""
    if isinstance(value, datetime):
        return utc(value)
    return parse_slot(str(value))


def check_details(plan: Plan, expect: dict) -> None:
    """The fields of an enqueue that `to_json` does not show: `held_until` and `slot`."""
    by_key = {f"{e.task}@{e.machine}": e for e in plan.enqueue}
    for key, when in (expect.get("held_until") or {}).items():
        held = by_key[key].held_until
        assert (slot_key(held) if held else None) == (slot_key(as_time(when)) if when else None), (
            key
        )
    for key, slot in (expect.get("slots") or {}).items():
        assert by_key[key].slot == slot, key
