"""`reconcile diff`'s pure core and views: what changed, what re-runs, where, in which order.

Golden cases live in tests/cases/diff/<case>/: `base/` and `head/` inventory folders, an
optional `vaults.yaml` (each side's vault plaintext), and `expected.txt`, `expected.json`,
`expected.md`. Here both sides are loaded straight from the folders (no git); the e2e test
commits the same folders into a repository and runs `reconcile diff` on it, and must print
the same files. Set RECONCILER_UPDATE_GOLDEN=1 to rewrite them (then read the diff).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import pytest
import yaml

from reconciler.cli.diff_views import diff_json, diff_markdown, diff_text
from reconciler.core.compile import compile_inventory
from reconciler.core.diff import (
    Diff,
    KeyDiff,
    Revision,
    RoleChange,
    Side,
    diff_sides,
    planned_reruns,
)
from reconciler.core.model import (
    CredentialGrants,
    Inventory,
    LocalMachineSettings,
    Machine,
    Member,
    Role,
    Settings,
    Strategy,
    Task,
    Team,
)
from reconciler.core.state import ExecutedState, Run, RunStatus
from reconciler.inventory.loader import load_inventory
from tests.support.diff_cases import BASE_COMMIT, CASES, HEAD_COMMIT, case_dirs, vault_plaintexts

UPDATE = os.environ.get("RECONCILER_UPDATE_GOLDEN") == "1"
REQUIRED_CASES = {
    "added",
    "removed",
    "command-changed",
    "priority-only-changed",
    "machine-target-changed",
    "vault-key-changed",
    "role-changed",
}


# --------------------------------------------------------------------------- golden cases


def render_all(diff: Diff) -> dict[str, str]:
    """{golden file name: rendering}; the same three files the e2e test compares."""
    return {
        "expected.txt": diff_text(diff),
        "expected.json": json.dumps(diff_json(diff), indent=2) + "\n",
        "expected.md": diff_markdown(diff),
    }


def case_side(case: Path, side: str, commit: str, label: str) -> Side:
    inventory, warnings = load_inventory(case / side)
    assert [str(w) for w in warnings] == [], "golden inventories are written cleanly"
    vaults = vault_plaintexts(case)[side]
    return Side(
        Revision(label, commit),
        inventory,
        compile_inventory(inventory),
        vaults={t: yaml.safe_dump(v, sort_keys=True).encode() for t, v in vaults.items()},
        vault_keys={t: _digests(v) for t, v in vaults.items()},
    )


def _digests(secrets: dict[str, str]) -> dict[str, str]:
    return {k: hashlib.sha256(v.encode()).hexdigest() for k, v in secrets.items()}


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_diff_case_matches_golden_files(case: Path):
    diff = diff_sides(
        case_side(case, "base", BASE_COMMIT, "HEAD~1"), case_side(case, "head", HEAD_COMMIT, "HEAD")
    )
    for name, text in render_all(diff).items():
        if UPDATE:
            (case / name).write_text(text)
        assert text == (case / name).read_text(), f"{case.name}/{name}"


def test_every_required_case_exists():
    assert REQUIRED_CASES <= {p.name for p in case_dirs()}


def test_golden_output_never_holds_a_vault_value():
    case = CASES / "vault-key-changed"
    values = [
        v
        for side in vault_plaintexts(case).values()
        for vault in side.values()
        for v in vault.values()
    ]
    for name in ("expected.txt", "expected.json", "expected.md"):
        text = (case / name).read_text()
        assert "API_TOKEN" in text
        assert not any(value in text for value in values)


# --------------------------------------------------------------------------- small inventories


def _side(tasks=(), machines=None, teams=None, label="base", **extra) -> Side:
    teams = teams or [Team("ops")]
    machines = (
        machines
        if machines is not None
        else [
            Machine("m1", "ops", transport="local", labels={"role": "web"}),
            Machine("m2", "ops", transport="local", labels={"role": "web"}),
        ]
    )
    # The same admin settings on both sides: ops may use the ssh-agent, and local machines
    # without `user:` are allowed in an inventory of several teams (compile refuses both else).
    settings = Settings(
        credentials=CredentialGrants(agent=("ops",) if any(t.name == "ops" for t in teams) else ()),
        local_machines=LocalMachineSettings(allow_shared_user=True),
    )
    inventory = Inventory(
        root="inventory",
        teams={t.name: t for t in teams},
        machines={m.name: m for m in machines},
        tasks={t.id: t for t in tasks},
        settings=settings,
    )
    return Side(Revision(label), inventory, compile_inventory(inventory), **extra)


def _task(name="t", **fields) -> Task:
    fields.setdefault("machines", ("m1",))
    fields.setdefault("command", "echo hi")
    return Task(name=name, team="ops", **fields)


def _diff(base_tasks, head_tasks, **kw) -> Diff:
    return diff_sides(_side(base_tasks), _side(head_tasks, label="head"), **kw)


def test_identical_revisions_have_an_empty_diff():
    diff = _diff([_task()], [_task()])
    assert diff.is_empty and diff.runs == ()
    assert "no changes" in diff_text(diff) and "no changes" in diff_markdown(diff)


def test_priority_description_timeout_and_retry_changes_do_not_rerun():
    head = _task(priority=1, description="now", timeout=60)
    diff = _diff([_task()], [head])
    (change,) = diff.tasks.changed
    assert change.fields == ("priority", "timeout", "description")
    assert change.reruns is False and diff.runs == ()
    assert (change.previous_priority, change.priority) == (3, 1)


def test_a_schedule_added_to_a_task_that_ran_reruns_its_due_slot_as_the_pass_would():
    diff = _diff([_task()], [_task(schedule="0 3 * * *")])
    (change,) = diff.tasks.changed
    assert change.fields == ("schedule",) and change.reruns
    assert [(r.task, r.reason) for r in diff.runs] == [("ops/t", "schedule")]


def test_a_schedule_change_reruns_only_when_it_makes_a_new_slot_due():
    from datetime import datetime

    from reconciler.core.diff import diff_sides

    base, head = [_task(schedule="@daily")], [_task(schedule="@hourly")]
    at = lambda h, m: datetime(2026, 12, 6, h, m, tzinfo=UTC)  # noqa: E731
    sides = [_side(base), _side(head, label="head")]
    assert diff_sides(*sides, now=at(5, 30)).runs[0].reason == "schedule"
    assert diff_sides(*sides, now=at(0, 30)).runs == ()  # the daily slot is the hourly one


def test_a_timezone_change_is_listed_and_reruns_only_a_slot_that_has_not_run():
    """02:00 UTC to 02:00 Berlin (01:00 UTC in December): at 01:30 UTC today's Berlin slot is
    due and has not run; at 03:00 UTC the UTC slot of 02:00 already ran after it."""
    from datetime import datetime

    base = [_task(schedule="0 2 * * *")]
    head = [_task(schedule="0 2 * * *", timezone="Europe/Berlin")]
    sides = [_side(base), _side(head, label="head")]
    early = diff_sides(*sides, now=datetime(2026, 12, 6, 1, 30, tzinfo=UTC))
    (change,) = early.tasks.changed
    assert change.fields == ("timezone",)
    assert [(r.task, r.reason) for r in early.runs] == [("ops/t", "schedule")]
    assert diff_sides(*sides, now=datetime(2026, 12, 6, 3, tzinfo=UTC)).runs == ()
    assert "timezone" in diff_markdown(early)


def test_command_change_reruns_on_every_target_at_its_priority():
    diff = _diff(
        [_task(machines=("m1", "m2"), priority=2)],
        [_task(machines=("m1", "m2"), priority=2, command="echo new")],
    )
    assert diff.tasks.changed[0].fields == ("command",) and diff.tasks.changed[0].reruns
    assert [(r.task, r.machine, r.priority, r.reason) for r in diff.runs] == [
        ("ops/t", "m1", 2, "changed"),
        ("ops/t", "m2", 2, "changed"),
    ]


def test_command_moved_to_script_with_the_same_text_does_not_rerun():
    diff = _diff([_task()], [_task(command=None, script="echo hi")])
    assert diff.tasks.changed[0].fields == ("command", "script")
    assert diff.tasks.changed[0].reruns is False


def test_new_target_reruns_only_on_the_new_machine():
    diff = _diff([_task()], [_task(machines=("m1", "m2"))])
    assert diff.tasks.changed[0].fields == ("machines", "targets")
    assert [(r.machine, r.reason) for r in diff.runs] == [("m2", "new-target")]


def test_selector_to_machines_with_the_same_targets_does_not_rerun():
    diff = _diff([_task(machines=None, selector={"role": "web"})], [_task(machines=("m1", "m2"))])
    assert diff.tasks.changed[0].fields == ("machines", "selector")
    assert diff.runs == ()


def test_a_target_that_moved_reruns_and_names_targets():
    base = _side([_task()])
    moved = [
        Machine(
            "m1", "ops", transport="ssh", host="10.0.0.9", host_key=("k",), labels={"role": "web"}
        ),
        Machine("m2", "ops", transport="local", labels={"role": "web"}),
    ]
    diff = diff_sides(base, _side([_task()], machines=moved, label="head"))
    assert diff.tasks.changed[0].fields == ("targets",) and diff.tasks.changed[0].reruns
    assert diff.machines.changed[0].name == "m1"
    assert diff.machines.changed[0].fields == ("transport", "host", "host_key")


def test_runs_are_in_plan_order_priority_then_after():
    base = [_task("setup", priority=1)]
    head = [
        _task("setup", priority=1, command="echo v2"),
        _task("migrate", priority=1, after=("backup",)),
        _task("backup", priority=3),
        _task("report", priority=2),
    ]
    runs = _diff(base, head).runs
    # backup inherits priority 1 from migrate, which must wait for it; then task id order.
    assert [r.task for r in runs] == ["ops/backup", "ops/setup", "ops/migrate", "ops/report"]
    assert [r.order for r in runs] == [1, 2, 3, 4]
    assert {r.task: r.reason for r in runs}["ops/setup"] == "changed"


def test_unchanged_scheduled_and_check_tasks_are_not_listed_as_reruns():
    tasks = [_task("cron", schedule="*/5 * * * *"), _task("drift", check="test -f /x")]
    diff = _diff(tasks, tasks + [_task("new")])
    assert [r.task for r in diff.runs] == ["ops/new"]


def test_strategy_one_change_reruns_on_one_machine():
    base = _task(machines=("m1", "m2"), strategy=Strategy.ONE)
    diff = _diff([base], [replace(base, command="echo v2")])
    assert [r.machine for r in diff.runs] == ["m1"]


def test_team_default_priority_change_shows_on_the_task_that_inherits_it():
    from reconciler.core.model import TaskDefaults

    base = _side([_task()], teams=[Team("ops", defaults=TaskDefaults(priority=3))])
    head = _side([_task()], teams=[Team("ops", defaults=TaskDefaults(priority=5))], label="h")
    diff = diff_sides(base, head)
    assert diff.tasks.changed[0].fields == ("priority",)
    assert diff.teams.changed[0].fields == ("defaults",)


def test_added_and_removed_tasks_and_machines():
    machines = [Machine("m1", "ops", transport="local"), Machine("m3", "ops", transport="local")]
    diff = diff_sides(_side([_task("old")]), _side([_task("new")], machines=machines))
    assert diff.tasks.added == ("ops/new",) and diff.tasks.removed == ("ops/old",)
    assert diff.machines.added == ("m3",) and diff.machines.removed == ("m2",)
    assert [(r.task, r.reason) for r in diff.runs] == [("ops/new", "new")]


def test_role_changes_are_flagged_member_by_member():
    base = [
        Team(
            "ops",
            members=(
                Member("a", Role.ADMIN),
                Member("b", Role.OPERATOR),
                Member("c", Role.VIEWER),
                Member("d", Role.OPERATOR, age="age1x"),
            ),
        )
    ]
    head = [
        Team(
            "ops",
            members=(
                Member("a", Role.ADMIN),
                Member("b", Role.ADMIN),
                Member("d", Role.OPERATOR, age="age1y"),
                Member("e", Role.VIEWER),
            ),
        ),
        Team("sec", members=(Member("f", Role.ADMIN),)),
    ]
    diff = diff_sides(_side(teams=base), _side(teams=head, label="head"))
    assert diff.roles == (
        RoleChange("ops", "b", "role", "operator", "admin"),
        RoleChange("ops", "c", "removed", "viewer", None),
        RoleChange("ops", "d", "keys", "operator", "operator"),
        RoleChange("ops", "e", "added", None, "viewer"),
        RoleChange("sec", "f", "added", None, "admin"),
    )
    assert diff.teams.added == ("sec",) and diff.teams.changed[0].fields == ("members",)


def test_vault_keys_added_removed_changed_by_digest():
    base = _side(vaults={"ops": b"a"}, vault_keys={"ops": {"K": "1", "OLD": "2", "SAME": "3"}})
    head = _side(
        vaults={"ops": b"b"}, vault_keys={"ops": {"K": "9", "NEW": "8", "SAME": "3"}}, label="head"
    )
    (change,) = diff_sides(base, head).vaults
    assert change.file == "changed"
    assert change.keys == KeyDiff(added=("NEW",), removed=("OLD",), changed=("K",))


def test_vault_without_identity_is_just_changed_and_an_unchanged_file_is_not_listed():
    base = _side(vaults={"ops": b"a", "dev": b"same"})
    head = _side(vaults={"ops": b"b", "dev": b"same", "web": b"new"}, label="head")
    diff = diff_sides(base, head)
    assert [(v.team, v.file, v.keys) for v in diff.vaults] == [
        ("ops", "changed", None),
        ("web", "added", None),
    ]
    assert "pass --identity" in diff_text(diff)


def test_vault_that_cannot_be_decrypted_says_why():
    base = _side(vaults={"ops": b"a"}, vault_errors={"ops": "at base: wrong key"})
    head = _side(vaults={"ops": b"b"}, vault_keys={"ops": {"K": "1"}}, label="head")
    (change,) = diff_sides(base, head).vaults
    assert change.keys is None and change.note == "at base: wrong key"


def test_reencrypted_vault_with_the_same_keys_says_so():
    base = _side(vaults={"ops": b"a"}, vault_keys={"ops": {"K": "1"}})
    head = _side(vaults={"ops": b"b"}, vault_keys={"ops": {"K": "1"}}, label="head")
    assert "no key changed" in diff_text(diff_sides(base, head))


def test_ran_reports_the_latest_run_of_the_head_version_per_target():
    base, head = _side([_task()]), _side([_task(command="echo v2", machines=("m1", "m2"))])
    version = head.desired.tasks["ops/t"].version_for("m1")
    executed = ExecutedState.of([Run(7, "ops/t", "m1", version, 3, RunStatus.SUCCEEDED)])
    diff = diff_sides(base, head, executed)
    assert [(r.machine, r.run, r.status) for r in diff.ran] == [
        ("m1", 7, RunStatus.SUCCEEDED),
        ("m2", None, None),
    ]
    data = diff_json(diff)
    assert data["tasks"]["changed"][0]["ran"] == [
        {"run": 7, "status": "succeeded", "machine": "m1"},
        {"run": None, "status": None, "machine": "m2"},
    ]
    assert [r["ran"] for r in data["runs"]] == [{"run": 7, "status": "succeeded"}, None]
    assert "succeeded (run 7)" in diff_text(diff) and "not yet" in diff_markdown(diff)


def test_json_has_the_spec_shape():
    data = diff_json(_diff([_task("a"), _task("b")], [_task("a", command="x"), _task("c")]))
    assert data["tasks"]["added"] == ["ops/c"] and data["tasks"]["removed"] == ["ops/b"]
    assert data["tasks"]["changed"][0] | {} == {
        "task": "ops/a",
        "fields": ["command"],
        "reruns": True,
        "machines": ["m1"],
        "priority": 3,
        "order": [1],
    }
    assert set(data["machines"]) == set(data["teams"]) == {"added", "removed", "changed"}
    assert data["vaults"]["changed"] == []
    assert "ran" not in data["runs"][0]


def test_markdown_is_a_summary_line_a_table_and_details():
    md = diff_markdown(_diff([_task("a")], [_task("a", command="x", priority=1), _task("c")]))
    first, *rest = md.splitlines()
    assert first.startswith("**reconcile diff** `base` → `head`")
    assert "| changed | `ops/a` | command, priority | yes | `m1` | 3 → 1 |" in md
    assert "<details><summary>Run order: 2 runs" in md and md.count("</details>") == 1


def test_markdown_of_a_huge_change_fits_in_one_pull_request_comment():
    machines = [Machine(f"m{i}", "ops", transport="local") for i in range(400)]
    tasks = [_task(f"t{i}", machines=(f"m{i}",)) for i in range(400)]
    changed = [replace(t, command="echo v2") for t in tasks]
    diff = diff_sides(_side(tasks, machines=machines), _side(changed, machines=machines))
    md = diff_markdown(diff)
    assert len(diff.runs) == 400 and len(md) < 65_536
    assert "… and 250 more tasks" in md and "… and 250 more runs" in md
    assert diff_text(diff).count("changed  ops/t") == 400  # text is never cut


def test_planned_reruns_of_an_empty_base_is_every_first_run():
    head = _side([_task("a", machines=("m1", "m2"))]).desired
    empty = _side([]).desired
    assert [(r.machine, r.reason) for r in planned_reruns(empty, head)] == [
        ("m1", "new"),
        ("m2", "new"),
    ]
