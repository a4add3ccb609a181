"""compile: references, defaults, targets, and exactly what changes a task's version."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.core.compile import compile_inventory, resolve_retry
from reconciler.core.diagnostics import Location
from reconciler.core.errors import InputError
from reconciler.core.model import (
    CredentialGrants,
    FailureAction,
    Inventory,
    LocalMachineSettings,
    Machine,
    RetrySpec,
    Rollout,
    RolloutSpec,
    Settings,
    Share,
    Strategy,
    Task,
    TaskDefaults,
    Team,
    VaultRef,
)


def _inventory(tasks=(), machines=None, teams=None) -> Inventory:
    teams = teams or [
        Team(
            "ops", defaults=TaskDefaults(priority=2, timeout=120, retry=RetrySpec(count=3, delay=5))
        )
    ]
    machines = (
        machines
        if machines is not None
        else [
            Machine("m1", "ops", transport="local", labels={"role": "web"}),
            Machine("m2", "ops", transport="local", labels={"role": "db"}),
        ]
    )
    return Inventory(
        root="inventory",
        teams={t.name: t for t in teams},
        machines={m.name: m for m in machines},
        tasks={t.id: t for t in tasks},
    )


def _task(name="t", **fields) -> Task:
    fields.setdefault("machines", ("m1",))
    fields.setdefault("command", "echo hi")
    loc = Location(f"inventory/tasks/ops/{name}.yaml", 1, 1)
    return Task(
        name=name,
        team=fields.pop("team", "ops"),
        location=loc,
        field_locations={"after": Location(loc.path, 4, 8), "machines": Location(loc.path, 2, 11)},
        **fields,
    )


def _version(task: Task, machine="m1", machines=None) -> str:
    return compile_inventory(_inventory([task], machines)).tasks[task.id].version_for(machine)


BASE = _task()


@pytest.mark.parametrize(
    "change",
    [
        {"command": "echo bye"},
        {"env": (("MODE", "fast"),)},
        {"env": (("PASSWORD", VaultRef("OTHER")),)},
        {"check": "test -f /x"},
    ],
)
def test_execution_changes_change_the_version(change):
    assert _version(replace(BASE, **change)) != _version(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"priority": 5},
        {"retry": RetrySpec(count=9)},
        {"timeout": 3600},
        {"description": "new words"},
        {"schedule": "*/5 * * * *"},
        {"idempotent": True},
    ],
)
def test_priority_retry_timeout_description_schedule_do_not_change_the_version(change):
    assert _version(replace(BASE, **change)) == _version(BASE)


def test_script_with_the_same_text_as_a_command_has_the_same_version():
    assert _version(replace(BASE, command=None, script="echo hi")) == _version(BASE)


def test_env_order_does_not_change_the_version():
    a = replace(BASE, env=(("A", "1"), ("B", "2")))
    b = replace(BASE, env=(("B", "2"), ("A", "1")))
    assert _version(a) == _version(b)


def test_vault_reference_name_changes_version_but_never_a_secret_value():
    a = replace(BASE, env=(("DB", VaultRef("DB_PASSWORD")),))
    b = replace(BASE, env=(("DB", VaultRef("DB_PASSWORD", Location("elsewhere", 9, 9))),))
    assert _version(a) == _version(b)  # where it is written does not matter


def test_adding_a_target_keeps_existing_targets_versions():
    wider = replace(BASE, machines=("m1", "m2"))
    assert _version(wider, "m1") == _version(BASE, "m1")


def test_moving_a_machine_to_another_host_changes_its_version():
    ssh = [
        Machine(
            "m1", "ops", host="10.0.0.1", host_key=("ssh-ed25519 AAAA",), key=VaultRef("SSH_KEY")
        )
    ]
    moved = [replace(ssh[0], host="10.0.0.2")]
    assert _version(BASE, machines=ssh) != _version(BASE, machines=moved)


def test_strategy_one_shares_one_version_across_candidates():
    spec = compile_inventory(
        _inventory([replace(BASE, machines=("m1", "m2"), strategy=Strategy.ONE)])
    ).tasks["ops/t"]
    assert spec.versions["m1"] == spec.versions["m2"]


def test_team_defaults_apply_and_task_fields_override_them_field_by_field():
    spec = compile_inventory(_inventory([replace(BASE, retry=RetrySpec(delay=60))])).tasks["ops/t"]
    assert (spec.priority, spec.timeout) == (2, 120)
    assert (spec.retry.count, spec.retry.delay, spec.retry.backoff) == (3, 60, 2.0)


def test_rollout_fields_come_from_the_task_then_the_team_default_and_stay_out_of_the_version():
    team = Team("ops", defaults=TaskDefaults(rollout=RolloutSpec(max_failed=Share(1), pause=120)))
    task = replace(BASE, rollout=RolloutSpec(batches=(Share(1), Share(50, percent=True))))
    spec = compile_inventory(_inventory([task], teams=[team])).tasks["ops/t"]
    assert spec.rollout == Rollout(
        batches=(Share(1), Share(50, percent=True)), max_failed=Share(1), pause=120
    )
    assert _version(task) == _version(BASE)
    # Neither the task nor its team asks for one: none (all at once, as before rollouts).
    assert compile_inventory(_inventory([BASE])).tasks["ops/t"].rollout is None


def test_a_team_default_rollout_does_not_apply_to_a_strategy_one_task():
    team = Team("ops", defaults=TaskDefaults(rollout=RolloutSpec(pause=60)))
    one = replace(BASE, machines=("m1", "m2"), strategy=Strategy.ONE)
    assert compile_inventory(_inventory([one], teams=[team])).tasks["ops/t"].rollout is None


@pytest.mark.parametrize(
    ("batches", "total", "sizes"),
    [
        ((Share(1), Share(25, percent=True), Share(100, percent=True)), 8, (1, 2, 8)),
        ((Share(1), Share(25, percent=True), Share(100, percent=True)), 4, (1, 4)),
        ((Share(1), Share(25, percent=True), Share(100, percent=True)), 2, (1, 2)),
        ((Share(1), Share(50, percent=True)), 5, (1, 3, 5)),  # the last batch takes the rest
        ((Share(10),), 3, (3,)),
        ((Share(100, percent=True),), 0, ()),
    ],
)
def test_rollout_batch_sizes_are_cumulative_rounded_up_and_end_with_every_target(
    batches, total, sizes
):
    assert Rollout(batches=batches).sizes(total) == sizes


def test_a_percentage_failure_budget_rounds_down():
    assert Rollout(max_failed=Share(10, percent=True)).budget(5) == 0
    assert Rollout(max_failed=Share(50, percent=True)).budget(5) == 2


def test_builtin_retry_is_no_retries_with_alert():
    policy = resolve_retry(None, None)
    assert policy.count == 0 and policy.failure_action is FailureAction.ALERT


def test_selector_picks_only_own_team_machines_with_matching_labels():
    other = Team("web")
    machines = [
        Machine("m1", "ops", transport="local", user="ops", labels={"role": "web"}),
        Machine("m3", "web", transport="local", user="web", labels={"role": "web"}),
    ]
    inv = _inventory(
        [replace(BASE, machines=None, selector={"role": "web"})], machines, [Team("ops"), other]
    )
    assert compile_inventory(inv).tasks["ops/t"].targets == ("m1",)


def _errors(inventory) -> list[str]:
    with pytest.raises(InputError) as info:
        compile_inventory(inventory)
    return [str(d) for d in info.value.diagnostics.errors]


def test_unknown_machine_is_reported_at_machines_with_a_hint():
    errors = _errors(_inventory([replace(BASE, machines=("m11",))]))
    assert errors == [
        "inventory/tasks/ops/t.yaml:2:11: task 'ops/t' targets unknown machine "
        "'m11' (hint: did you mean 'm1'?)"
    ]


def test_machine_of_another_team_is_an_error():
    machines = [
        Machine("m1", "ops", transport="local", user="ops"),
        Machine("x", "web", transport="local", user="web"),
    ]
    errors = _errors(
        _inventory([replace(BASE, machines=("x",))], machines, [Team("ops"), Team("web")])
    )
    assert "of team 'web'; a task targets machines of its own team only" in errors[0]


def test_unknown_after_task_and_cycles_are_all_reported_at_once():
    tasks = [_task("a", after=("b",)), _task("b", after=("a",)), _task("c", after=("nope",))]
    errors = _errors(_inventory(tasks))
    assert any("dependency cycle: ops/a -> ops/b -> ops/a" in e for e in errors)
    assert any(
        e.startswith("inventory/tasks/ops/c.yaml:4:8: task 'ops/c' runs after unknown task 'nope'")
        for e in errors
    )
    assert len(errors) == 2


def test_machine_naming_unknown_team_is_an_error():
    machines = [Machine("m1", "opps", transport="local", location=Location("m.yaml", 1, 1))]
    errors = _errors(_inventory([], machines))
    assert errors == [
        "m.yaml:1:1: machine 'm1' names unknown team 'opps' (hint: did you mean 'ops'?)"
    ]


# ---------------------------------------------------------------- credentials and local users


def _machine_errors(machines, teams=("ops", "web"), settings=None) -> list[str]:
    inv = replace(
        _inventory([], machines, [Team(t) for t in teams]), settings=settings or Settings()
    )
    try:
        compile_inventory(inv)
    except InputError as exc:
        return [str(d) for d in exc.diagnostics.errors]
    return []


SSH = dict(host="10.0.0.1", host_key=("ssh-ed25519 AAAA",))
GRANTS = Settings(credentials=CredentialGrants(key_files={"/keys/ops": ("ops",)}, agent=("ops",)))


def test_key_file_needs_a_grant_to_the_machines_own_team():
    assert (
        _machine_errors([Machine("a", "ops", key_file="/keys/ops", **SSH)], settings=GRANTS) == []
    )
    errors = _machine_errors(
        [Machine("b", "web", key_file="/keys/x/../ops", **SSH)], settings=GRANTS
    )
    assert (
        len(errors) == 1
        and "may not use key_file /keys/x/../ops: the settings grant it to ops only" in errors[0]
    )


def test_agent_needs_a_grant_and_a_vault_key_needs_none():
    assert (
        _machine_errors(
            [Machine("a", "ops", **SSH), Machine("v", "web", key=VaultRef("K"), **SSH)],
            settings=GRANTS,
        )
        == []
    )
    errors = _machine_errors([Machine("b", "web", **SSH)], settings=GRANTS)
    assert len(errors) == 1 and "ssh-agent" in errors[0] and "{agent: [web]}" in errors[0]


def test_local_machine_without_user_is_refused_only_with_several_teams_unless_allowed():
    shared = [Machine("l", "ops", transport="local")]
    assert _machine_errors(shared, teams=("ops",)) == []
    assert "reconciler's own rights (no user:)" in _machine_errors(shared)[0]
    allowed = Settings(local_machines=LocalMachineSettings(allow_shared_user=True))
    assert _machine_errors(shared, settings=allowed) == []
    assert _machine_errors([Machine("l", "ops", transport="local", user="svc")]) == []
    assert (
        "(user: root)" in _machine_errors([Machine("l", "ops", transport="local", user="root")])[0]
    )
