"""A task's version is the hash SPEC §1 describes, computed here from scratch: compile may
write it faster, never differently (a changed hash would re-run every task after an upgrade)."""

from __future__ import annotations

import hashlib
import json

import pytest

from reconciler.core.compile import compile_inventory
from reconciler.core.model import Inventory, Machine, Strategy, Task, Team, VaultRef

MACHINES = (
    Machine("a", "ops", transport="local"),
    Machine(
        "b", "ops", transport="ssh", host="b.example", port=2222, host_key=("k",), key=VaultRef("K")
    ),
    Machine("ü-c", "ops", transport="ssh", host="10.0.0.3", host_key=("k",), key=VaultRef("K")),
)


def _hash(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _identity(machine: Machine) -> dict:
    if machine.transport == "local":
        return {"machine": machine.name, "transport": "local"}
    return {
        "machine": machine.name,
        "transport": machine.transport,
        "host": machine.host,
        "port": machine.port,
    }


def _expected(task: Task, run: str, check: str | None) -> dict[str, str]:
    executes = {
        "run": run,
        "env": sorted(
            [name, {"vault": v.name} if isinstance(v, VaultRef) else v] for name, v in task.env
        ),
        "check": check,
    }
    targets = sorted(task.machines)
    by_name = {m.name: m for m in MACHINES}
    if task.strategy is Strategy.ONE:
        one = _hash({**executes, "target": {"one_of": [_identity(by_name[m]) for m in targets]}})
        return {m: one for m in targets}
    return {m: _hash({**executes, "target": _identity(by_name[m])}) for m in targets}


TASKS = [
    Task("plain", "ops", machines=("a",), command="echo hi"),
    Task(
        "env",
        "ops",
        machines=("a", "b", "ü-c"),
        command='printf "%s" "$MODE" — déjà',
        env=(("MODE", "fast"), ("A", VaultRef("PASSWORD")), ("Z", "")),
        check="test -f /x",
    ),
    Task("one", "ops", machines=("b", "ü-c"), script="a\nb\n", strategy=Strategy.ONE),
    Task("trailing", "ops", machines=("a", "b"), command="true  ", check="test -d /\n"),
    Task("quotes", "ops", machines=("ü-c",), command='echo "\\"}{,:\\u0000"', check=None),
]


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_versions_are_the_hash_of_what_executes_and_where(task):
    inventory = Inventory(
        root="inventory",
        teams={"ops": Team("ops")},
        machines={m.name: m for m in MACHINES},
        tasks={task.id: task},
    )
    spec = compile_inventory(inventory).tasks[task.id]
    run = task.command if task.command is not None else task.script
    check = task.check
    assert dict(spec.versions) == _expected(task, run.rstrip(), check and check.rstrip())
    # Runs recorded before trailing whitespace was ignored still count (legacy versions).
    legacy = _expected(task, run, check)
    assert dict(spec.legacy_versions) == {m: v for m, v in legacy.items() if v != spec.versions[m]}
    if run == run.rstrip() and check == (check and check.rstrip()):
        assert spec.legacy_versions == {}
    else:
        assert spec.legacy_versions
