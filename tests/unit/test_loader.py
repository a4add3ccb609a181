"""The loader: inventory folder -> Inventory, every error of every file at once."""

import json
import os
from pathlib import Path
from textwrap import dedent

import pytest
from jsonschema import Draft202012Validator

from reconciler.core.diagnostics import Location, Severity
from reconciler.core.errors import InputError
from reconciler.core.model import (
    AlertTarget,
    FailureAction,
    GitSettings,
    Member,
    RetrySpec,
    Role,
    Settings,
    Strategy,
    TaskDefaults,
    VaultRef,
    Window,
)
from reconciler.inventory.loader import display_path, load_inventory, load_schema

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
AGE = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
TEAM = "name: prod\n"
MACHINE = f"name: prod-01\nteam: prod\nhost: 10.0.0.5\nhost_key: {HOST_KEY}\n"
TASK = "name: web\nmachines: [prod-01]\ncommand: echo hi\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return root


@pytest.fixture
def inv(tmp_path, monkeypatch):
    """Build `inventory/` in a temporary working directory and load it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory").mkdir()

    def build(files, **kwargs):
        write(tmp_path / "inventory", files)
        return load_inventory("inventory")

    return build


@pytest.fixture
def errors(inv):
    """The error lines of loading an inventory built from `files` (which must fail)."""

    def run(files):
        with pytest.raises(InputError) as caught:
            inv(files)
        return [str(d) for d in caught.value.diagnostics.errors]

    return run


def base(**extra):
    return {"teams/prod.yaml": TEAM, "machines/prod-01.yaml": MACHINE, **extra}


# --------------------------------------------------------------------------- a valid inventory


SPEC_TEAM = f"""\
name: prod
description: Production
members:
  - name: alice
    role: admin
    age: {AGE}
    ssh: {HOST_KEY} alice@laptop
recipients: [{AGE}]
alerts:
  - mailto://ops@example.com
  - {{vault: ALERT_URL}}
  - url: json://127.0.0.1:8080/hook
    on: [failed, unknown, recovered]
  - url: {{vault: HOOK}}
defaults:
  priority: 3
  timeout: 10m
  retry: {{count: 3, delay: 30s, backoff: 2, max_delay: 10m, failure_action: alert}}
windows:
  - deny: "0 8 * * 1-5"
    duration: 10h
"""

SPEC_MACHINE = f"""\
name: prod-01
team: prod
transport: ssh
host: 10.0.0.5
port: 2222
user: deploy
host_key: {HOST_KEY}
key: {{vault: PROD_01_SSH_KEY}}
labels: {{role: web, region: eu-1}}
max_parallel: 2
windows:
  - {{deny: "@daily", duration: 3600}}
"""

SPEC_TASK = """\
name: restart-web
team: prod
description: Restart the web server after a config change
machines: [prod-01, prod-02]
strategy: one
command: systemctl restart webserver
priority: 1
schedule: "*/15 * * * *"
after: [backup-db]
timeout: 5m
retry:
  count: 3
  delay: 30s
  backoff: 1.5
  max_delay: 10m
  failure_action: ignore
env:
  MODE: fast
  DB_PASSWORD: {vault: DB_PASSWORD}
check: test -f /srv/web.ok
idempotent: true
"""


def test_spec_examples_load_into_model_values(inv):
    inventory, warnings = inv(
        {
            "teams/prod.yaml": SPEC_TEAM,
            "machines/prod-01.yaml": SPEC_MACHINE,
            "tasks/prod/web.yaml": SPEC_TASK,
            "reconciler.yaml": "state: sqlite:///x.db\nconcurrency: 4\npoll_interval: 1m\ngit: {remote: up, branch: prod, verify: head}\n",
        }
    )
    assert warnings == []
    team = inventory.teams["prod"]
    assert team.members == (Member("alice", Role.ADMIN, AGE, f"{HOST_KEY} alice@laptop"),)
    assert team.recipients == (AGE,)
    assert team.alerts == (
        AlertTarget("mailto://ops@example.com"),
        AlertTarget(VaultRef("ALERT_URL")),
        AlertTarget("json://127.0.0.1:8080/hook", ("failed", "unknown", "recovered")),
        AlertTarget(VaultRef("HOOK")),
    )
    assert team.defaults == TaskDefaults(3, 600, RetrySpec(3, 30, 2.0, 600, FailureAction.ALERT))
    assert team.windows == (Window("0 8 * * 1-5", 36000),)
    assert team.location == Location("inventory/teams/prod.yaml", 1, 1)

    machine = inventory.machines["prod-01"]
    assert (machine.transport, machine.host, machine.port, machine.user) == (
        "ssh",
        "10.0.0.5",
        2222,
        "deploy",
    )
    assert machine.host_key == (HOST_KEY,)
    assert machine.key == VaultRef("PROD_01_SSH_KEY")
    assert machine.key.location == Location("inventory/machines/prod-01.yaml", 8, 6)
    assert dict(machine.labels) == {"role": "web", "region": "eu-1"}
    assert machine.max_parallel == 2 and machine.windows == (Window("@daily", 3600),)

    task = inventory.tasks["prod/restart-web"]
    assert (
        task.id == "prod/restart-web"
        and task.machines == ("prod-01", "prod-02")
        and task.selector is None
    )
    assert (
        task.strategy is Strategy.ONE
        and task.command == "systemctl restart webserver"
        and task.script is None
    )
    assert (task.priority, task.schedule, task.after, task.timeout) == (
        1,
        "*/15 * * * *",
        ("backup-db",),
        300,
    )
    assert task.retry == RetrySpec(3, 30, 1.5, 600, FailureAction.IGNORE)
    assert task.env == (("MODE", "fast"), ("DB_PASSWORD", VaultRef("DB_PASSWORD")))
    assert task.check == "test -f /srv/web.ok" and task.idempotent is True

    assert inventory.settings == Settings(
        "sqlite:///x.db", 4, 60, GitSettings("up", "prod", "head")
    )
    assert inventory.root == os.path.abspath("inventory")


def test_task_field_locations_point_at_values(inv):
    inventory, _ = inv(
        {**base(), "tasks/prod/web.yaml": SPEC_TASK.replace("prod-01, prod-02", "prod-01")}
    )
    task = inventory.tasks["prod/restart-web"]
    path = "inventory/tasks/prod/web.yaml"
    assert task.location == Location(path, 1, 1)
    assert task.where("priority") == Location(path, 7, 11)
    assert task.where("command") == Location(path, 6, 10)
    assert task.where("check") == Location(path, 20, 8)
    assert task.where("env.MODE") == Location(path, 18, 9)
    assert task.where("env.DB_PASSWORD") == Location(path, 19, 16)
    assert task.where("after") == Location(path, 9, 8)
    assert task.where("selector") == task.location  # not written: the task itself


def test_defaults_when_fields_are_left_out(inv):
    inventory, _ = inv(base(**{"tasks/prod/web.yaml": TASK}))
    task = inventory.tasks["prod/web"]
    assert (task.priority, task.timeout, task.retry, task.schedule, task.env) == (
        None,
        None,
        None,
        None,
        (),
    )
    assert task.strategy is Strategy.ALL and task.idempotent is False and task.after == ()
    machine = inventory.machines["prod-01"]
    assert (machine.transport, machine.port, machine.max_parallel, dict(machine.labels)) == (
        "ssh",
        22,
        1,
        {},
    )
    assert inventory.teams["prod"].defaults == TaskDefaults()
    assert inventory.settings == Settings()


def test_a_file_may_hold_a_list_under_the_plural_key(inv):
    inventory, _ = inv(
        {
            "teams/all.yml": "teams:\n  - name: prod\n  - name: dev\n",
            "machines/all.yaml": f"machines:\n  - name: a\n    team: prod\n    transport: local\n"
            f"  - name: b\n    team: dev\n    host: b\n    host_key: [{HOST_KEY}, {HOST_KEY}x]\n",
            "tasks/prod/many.yaml": "tasks:\n  - {name: one, machines: [a], command: x}\n"
            '  - {name: two, selector: {role: db}, script: "y\\n"}\n',
            "tasks/empty-list.yaml": "tasks: []\n",
        }
    )
    assert list(inventory.teams) == ["dev", "prod"]
    assert inventory.machines["b"].host_key == (HOST_KEY, HOST_KEY + "x")
    assert list(inventory.tasks) == ["prod/one", "prod/two"]
    assert inventory.tasks["prod/two"].selector == {"role": "db"}


def test_other_files_vaults_and_hidden_entries_are_ignored(inv):
    inventory, warnings = inv(
        base(
            **{
                "tasks/prod/web.yaml": TASK,
                "tasks/README.md": "# tasks\n",
                "tasks/prod/notes.txt": "x: [",
                "vaults/prod.age": "-----BEGIN AGE ENCRYPTED FILE-----\n",
                ".hidden/x.yaml": "x: [",
                "tasks/.draft.yaml": "x: [",
                "README.md": "hello",
            }
        )
    )
    assert list(inventory.tasks) == ["prod/web"] and warnings == []


def test_team_comes_from_the_first_folder_under_tasks(inv):
    inventory, _ = inv(
        base(
            **{
                "tasks/prod/deep/er/web.yaml": TASK,
                "tasks/prod/x.yaml": TASK.replace("web", "x") + "team: prod\n",
            }
        )
    )
    assert sorted(inventory.tasks) == ["prod/web", "prod/x"]


def test_task_directly_in_tasks_may_name_its_team(inv):
    inventory, _ = inv(base(**{"tasks/web.yaml": TASK + "team: prod\n"}))
    assert list(inventory.tasks) == ["prod/web"]


def test_integral_float_priority_is_an_int(inv):
    inventory, _ = inv(base(**{"tasks/prod/web.yaml": TASK + "priority: 2.0\n"}))
    priority = inventory.tasks["prod/web"].priority
    assert priority == 2 and type(priority) is int


def test_empty_selector_is_allowed(inv):
    inventory, _ = inv(base(**{"tasks/prod/web.yaml": "name: web\nselector: {}\ncommand: x\n"}))
    assert inventory.tasks["prod/web"].selector == {}


@pytest.mark.parametrize(
    "cron", ["*/15 * * * *", "0 8 * * 1-5", "0 0 1 jan mon", "@hourly", "@weekly"]
)
def test_valid_schedules(inv, cron):
    inventory, _ = inv(base(**{"tasks/prod/web.yaml": TASK + f"schedule: '{cron}'\n"}))
    assert inventory.tasks["prod/web"].schedule == cron


def test_empty_settings_file_gives_defaults(inv):
    inventory, warnings = inv(base(**{"reconciler.yml": "# nothing yet\n"}))
    assert inventory.settings == Settings() and warnings == []


# --------------------------------------------------------------------------- warnings


def test_warnings_for_empty_files_stray_yaml_and_subfolders(inv):
    _, warnings = inv(
        base(**{"tasks/prod/empty.yaml": "", "extra.yaml": "a: 1\n", "teams/old/x.yaml": TEAM})
    )
    assert [str(w) for w in warnings] == [
        "inventory/extra.yaml: warning: this file is not read "
        "(hint: YAML files belong in teams/, machines/ or tasks/, settings in reconciler.yaml)",
        "inventory/tasks/prod/empty.yaml: warning: file is empty",
        "inventory/teams/old: warning: subfolders of teams/ are not read (hint: move its files into teams/)",
    ]
    assert all(w.severity is Severity.WARNING for w in warnings)


# --------------------------------------------------------------------------- the folder itself


def test_missing_inventory_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        load_inventory("nowhere")
    assert str(caught.value) == (
        "nowhere: inventory folder not found (hint: pass --inventory DIR "
        "(or set RECONCILE_INVENTORY), or create one with 'reconcile init')"
    )
    assert caught.value.exit_code == 2


def test_inventory_that_is_a_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inv").write_text("")
    with pytest.raises(InputError, match="inv: the inventory is not a folder"):
        load_inventory("inv")


def test_paths_are_absolute_when_the_inventory_is_outside_the_working_directory(
    tmp_path, monkeypatch
):
    root = write(tmp_path / "inventory", {"teams/prod.yaml": "name: prod\nbogus: 1\n"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(InputError) as caught:
        load_inventory(root)
    assert str(caught.value).startswith(f"{root}/teams/prod.yaml:2:1: unknown key 'bogus' in team")


def test_display_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "a" / "b.yaml") == "a/b.yaml"
    assert display_path("a/b.yaml") == "a/b.yaml"
    assert display_path(tmp_path) == "."
    assert display_path("/") == "/"
    # A sibling whose name starts like the working directory's is not under it.
    assert display_path(f"{tmp_path}x/a.yaml") == f"{tmp_path}x/a.yaml"
    assert display_path(tmp_path / "a" / ".." / "b.yaml") == "b.yaml"
    monkeypatch.chdir("/")
    assert display_path(tmp_path / "a.yaml") == str(tmp_path / "a.yaml").removeprefix("/")
    assert display_path("/") == "."


# --------------------------------------------------------------------------- symlinks


def test_symlinked_file_is_refused(tmp_path, errors):
    (tmp_path / "outside.yaml").write_text(TASK)
    target = tmp_path / "inventory" / "tasks" / "prod"
    target.mkdir(parents=True)
    (target / "web.yaml").symlink_to(tmp_path / "outside.yaml")
    assert errors(base()) == [
        "inventory/tasks/prod/web.yaml: symbolic links are not allowed in the inventory "
        "(hint: replace the link with the file or folder itself)"
    ]


@pytest.mark.parametrize(
    "link", ["tasks/prod", "tasks", "vaults/prod.age", "reconciler.yaml", "teams/x.yml"]
)
def test_symlinks_anywhere_in_the_inventory_are_refused(tmp_path, errors, link):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.yaml").write_text(TEAM)
    path = tmp_path / "inventory" / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(tmp_path / "elsewhere" / ("x.yaml" if "." in link else ""))
    assert errors(base()) == [
        f"inventory/{link}: symbolic links are not allowed in the inventory "
        "(hint: replace the link with the file or folder itself)"
    ]


def test_the_inventory_folder_itself_may_be_a_symlink(tmp_path, monkeypatch):
    write(tmp_path / "real", base())
    (tmp_path / "inventory").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    inventory, _ = load_inventory("inventory")
    assert list(inventory.machines) == ["prod-01"]


def test_a_fifo_is_refused(tmp_path, errors):
    (tmp_path / "inventory" / "tasks").mkdir(parents=True)
    os.mkfifo(tmp_path / "inventory" / "tasks" / "pipe.yaml")
    assert errors(base()) == [
        "inventory/tasks/pipe.yaml: not a regular file (hint: replace it with a plain file)"
    ]


# --------------------------------------------------------------------------- all errors at once


def test_every_error_of_every_file_is_reported_together(errors):
    lines = errors(
        {
            "teams/prod.yaml": "name: prod\nmembers: [{name: a, role: boss}]\n",
            "teams/broken.yaml": "name: [\n",
            "machines/m.yaml": "name: m\nteam: prod\ntransport: local\nhost: x\n",
            "tasks/prod/a.yaml": "name: a\nmachines: [m]\ncommand: x\npriority: 0\n",
            "tasks/prod/b.yaml": "name: b\nmachines: [m]\ncommand: x\nschedule: nope\n",
        }
    )
    assert [line.split(" ")[0] for line in lines] == [
        "inventory/machines/m.yaml:4:1:",
        "inventory/tasks/prod/a.yaml:4:11:",
        "inventory/tasks/prod/b.yaml:4:11:",
        "inventory/teams/broken.yaml:2:1:",
        "inventory/teams/prod.yaml:2:27:",
    ]


def test_yaml_problems_skip_schema_checks_of_that_file_only(errors):
    lines = errors(
        base(
            **{
                "tasks/prod/a.yaml": "name: a\nname: b\nbogus: 1\n",
                "tasks/prod/c.yaml": "name: c\n",
            }
        )
    )
    assert lines == [
        "inventory/tasks/prod/a.yaml:2:1: duplicate key 'name' (first defined on line 1, column 1) (hint: remove one of them)",
        "inventory/tasks/prod/c.yaml:1:1: task 'c' needs 'command' or 'script' (hint: command for one line, script: | for several)",
        "inventory/tasks/prod/c.yaml:1:1: task 'c' needs 'machines' or 'selector' "
        "(hint: machines lists targets by name, selector picks them by label)",
    ]


# --------------------------------------------------------------------------- schema messages


def task_errors(errors, text, path="tasks/prod/web.yaml"):
    return errors(base(**{path: text}))


def test_unknown_key_with_did_you_mean(errors):
    assert task_errors(errors, TASK + "prioritty: 2\n") == [
        "inventory/tasks/prod/web.yaml:4:1: unknown key 'prioritty' in task (hint: did you mean 'priority'?)"
    ]


def test_unknown_key_in_a_nested_object(errors):
    assert task_errors(errors, TASK + "retry: {count: 1, dealy: 5s}\n") == [
        "inventory/tasks/prod/web.yaml:4:19: unknown key 'dealy' in retry (hint: did you mean 'delay'?)"
    ]


def test_unknown_key_without_a_close_match_has_no_hint(errors):
    assert task_errors(errors, TASK + "zzz: 2\n") == [
        "inventory/tasks/prod/web.yaml:4:1: unknown key 'zzz' in task"
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('priority: "high"', 'priority must be an integer 1..5 (got "high")'),
        ("priority: 7", "priority must be an integer 1..5 (got 7)"),
        ("priority: true", "priority must be an integer 1..5 (got true)"),
        ("strategy: any", 'strategy must be one of all, one (got "any")'),
        ("idempotent: yes", 'idempotent must be true or false (got "yes")'),
        ("idempotent: NO", 'idempotent must be true or false (got "NO")'),
        ("description: 5", "description must be a string (got 5)"),
        ("after: backup", 'after must be a list of task names of the same team (got "backup")'),
        ("after: [a, a]", 'after lists "a" more than once (hint: remove the repeat)'),
        (
            "retry: 3",
            "retry must be a mapping of count, delay, backoff, max_delay and failure_action (got 3)",
        ),
        ("retry: {backoff: 0.5}", "retry.backoff must be a number from 1 to 100 (got 0.5)"),
        (
            "retry: {failure_action: page}",
            'retry.failure_action must be one of alert, ignore (got "page")',
        ),
        ("env: [A]", "env must be a mapping of variable names to values (got a list)"),
    ],
)
def test_wrong_values_get_specific_messages(errors, line, message):
    lines = task_errors(errors, TASK + line + "\n")
    assert len(lines) == 1 and lines[0].split(": ", 1)[1].startswith(message)


def test_strategy_typo_gets_a_hint(errors):
    assert task_errors(errors, TASK + "strategy: al\n")[0].endswith("(hint: did you mean 'all'?)")


def test_bad_name_suggests_a_valid_one(errors):
    assert task_errors(errors, TASK.replace("name: web", "name: Web Server")) == [
        "inventory/tasks/prod/web.yaml:1:7: name must be lowercase letters, digits, '.', '_' or '-', "
        'starting with a letter or digit (got "Web Server") '
        "(hint: use lowercase letters, digits, '.', '_' and '-', e.g. 'web-server')"
    ]


def test_overlong_name(errors):
    assert task_errors(errors, TASK.replace("name: web", "name: " + "w" * 129)) == [
        f'inventory/tasks/prod/web.yaml:1:7: name must be at most 128 characters long (got "{"w" * 56}...")'
    ]


def test_env_number_is_refused_with_a_hint_to_quote_it_and_no_value_echoed(errors):
    lines = task_errors(
        errors, TASK + "env:\n  PORT: 8080\n  DEBUG: true\n  BAD-NAME: x\n  K: {vault: 5x}\n"
    )
    assert lines == [
        "inventory/tasks/prod/web.yaml:5:9: env.PORT must be a string or {vault: NAME} (got a number) "
        '(hint: quote the value so it stays a string, e.g. "8080")',
        "inventory/tasks/prod/web.yaml:6:10: env.DEBUG must be a string or {vault: NAME} (got a boolean) "
        '(hint: quote the value so it stays a string, e.g. "8080")',
        "inventory/tasks/prod/web.yaml:7:3: env name 'BAD-NAME' must be letters, digits and '_', not starting with a digit",
        "inventory/tasks/prod/web.yaml:8:14: env.K.vault must be a vault key name: letters, digits and '_', "
        "not starting with a digit (got a string)",
    ]
    assert not any("8080)" in line or "5x" in line for line in lines)


def test_unknown_key_in_vault_reference(errors):
    assert task_errors(errors, TASK + "env: {A: {vault: X, default: y}}\n") == [
        "inventory/tasks/prod/web.yaml:4:21: unknown key 'default' in vault reference (hint: did you mean 'vault'?)"
    ]


def test_missing_name(errors):
    assert task_errors(errors, "machines: [a]\ncommand: x\n") == [
        "inventory/tasks/prod/web.yaml:1:1: task needs 'name'"
    ]


def test_scalar_file_is_refused(errors):
    assert task_errors(errors, "just text\n") == [
        "inventory/tasks/prod/web.yaml:1:1: expected a task mapping (got a string)"
    ]


def test_bare_list_is_refused_with_a_hint(errors):
    assert task_errors(errors, "- name: web\n") == [
        "inventory/tasks/prod/web.yaml:1:1: expected a task mapping (got a list) (hint: put the list under 'tasks:')"
    ]


def test_plural_key_problems(errors):
    assert task_errors(
        errors, "tasks:\n  - 5\n  - {name: x, machines: [a], command: x}\nother: 1\n"
    ) == [
        "inventory/tasks/prod/web.yaml:2:5: each entry of 'tasks:' must be a task mapping (got a number)",
        "inventory/tasks/prod/web.yaml:4:1: unknown key 'other' next to 'tasks:' "
        "(hint: a file holds one task, or only a 'tasks:' list)",
    ]
    assert task_errors(errors, "tasks: {name: x}\n") == [
        "inventory/tasks/prod/web.yaml:1:8: 'tasks:' must be a list of tasks (got a mapping)"
    ]


def test_plural_key_of_another_kind(errors):
    assert task_errors(errors, "teams:\n  - name: x\n") == [
        "inventory/tasks/prod/web.yaml:1:1: 'teams:' found in a task file (hint: move this file to teams/)"
    ]


# --------------------------------------------------------------------------- task rules


def test_both_machines_and_selector(errors):
    assert task_errors(errors, TASK + "selector: {role: web}\n") == [
        "inventory/tasks/prod/web.yaml:4:1: task 'web' has both 'machines' and 'selector' "
        "(hint: keep only one: machines lists targets by name, selector picks them by label)"
    ]


def test_neither_command_nor_script(errors):
    assert task_errors(errors, "name: web\nmachines: [a]\n") == [
        "inventory/tasks/prod/web.yaml:1:1: task 'web' needs 'command' or 'script' "
        "(hint: command for one line, script: | for several)"
    ]


def test_both_command_and_script(errors):
    assert task_errors(errors, "name: web\nscript: y\nmachines: [a]\ncommand: x\n") == [
        "inventory/tasks/prod/web.yaml:4:1: task 'web' has both 'command' and 'script' "
        "(hint: keep only one: command for one line, script: | for several)"
    ]


def test_team_contradicting_its_folder(errors):
    assert task_errors(errors, TASK + "team: dev\n") == [
        "inventory/tasks/prod/web.yaml:4:7: team 'dev' contradicts the folder tasks/prod/ "
        "(hint: move the file into tasks/dev/, or set team: prod)"
    ]


def test_task_directly_in_tasks_needs_a_team(errors):
    assert task_errors(errors, TASK, "tasks/web.yaml") == [
        "inventory/tasks/web.yaml:1:1: task 'web' needs 'team' (hint: add team: NAME, or move the file into tasks/<team>/)"
    ]


def test_folder_that_is_not_a_team_name(errors):
    assert task_errors(errors, TASK, "tasks/Prod Team/web.yaml") == [
        "inventory/tasks/Prod Team/web.yaml:1:1: folder tasks/Prod Team/ is not a valid team name "
        "(hint: rename the folder after its team (lowercase letters, digits, '.', '_', '-'))"
    ]


@pytest.mark.parametrize(
    ("cron", "extra"),
    [
        ("* * * *", " (4 fields, not 5)"),
        ("0 0 * * * *", " (6 fields, not 5)"),
        ("every day", " (2 fields, not 5)"),
    ],
)
def test_bad_cron_is_located(errors, cron, extra):
    assert task_errors(errors, TASK + f"schedule: '{cron}'\n") == [
        f'inventory/tasks/prod/web.yaml:4:11: schedule is not a valid cron expression{extra} (got "{cron}") '
        '(hint: use 5 fields: minute hour day-of-month month day-of-week (UTC), e.g. "*/15 * * * *")'
    ]


def test_cron_value_out_of_range_names_its_field(errors):
    assert task_errors(errors, TASK + "schedule: '61 * * * *'\n") == [
        "inventory/tasks/prod/web.yaml:4:11: schedule is not a valid cron expression (the minute "
        "field '61': '61' is out of range) (got \"61 * * * *\") (hint: use 0-59)"
    ]


def test_unsupported_macro_lists_the_documented_ones(errors):
    [line] = task_errors(errors, TASK + "schedule: '@reboot'\n")
    assert line.startswith(
        "inventory/tasks/prod/web.yaml:4:11: schedule is not a valid cron "
        "expression (@reboot is not a supported macro)"
    )
    assert "@daily" in line and "@hourly" in line


def test_cron_word_suggests_its_macro(errors):
    assert task_errors(errors, TASK + "schedule: daily\n") == [
        'inventory/tasks/prod/web.yaml:4:11: schedule is not a valid cron expression (1 field, not 5) (got "daily") '
        "(hint: did you mean '@daily'?)"
    ]


def test_cron_of_the_wrong_type(errors):
    assert task_errors(errors, TASK + "schedule: 5\n")[0].startswith(
        "inventory/tasks/prod/web.yaml:4:11: schedule must be a cron expression (got 5)"
    )


@pytest.mark.parametrize(
    ("line", "where", "message"),
    [
        (
            "timeout: 5x",
            "4:10",
            'timeout must be a duration such as 30s, 5m or 1h30m (got "5x") '
            "(hint: unknown unit 'x'; use d, h, m or s, such as 30s, 5m, 1h30m or 2d)",
        ),
        (
            "timeout: 30m1h",
            "4:10",
            'timeout must be a duration such as 30s, 5m or 1h30m (got "30m1h") '
            "(hint: write units once each, largest first, such as 30s, 5m, 1h30m or 2d)",
        ),
        (
            "timeout: 1.5",
            "4:10",
            "timeout must be a duration such as 30s, 5m or 1h30m (got 1.5) "
            "(hint: use a number of seconds or a string such as 30s, 5m, 1h30m or 2d)",
        ),
        ("timeout: 0", "4:10", "timeout must be at least 1s (got 0)"),
        (
            "retry: {delay: -5}",
            "4:16",
            "retry.delay must be a duration such as 30s, 5m or 1h30m (got -5) "
            "(hint: a duration cannot be negative)",
        ),
        (
            "retry: {max_delay: 1w}",
            "4:20",
            'retry.max_delay must be a duration such as 30s, 5m or 1h30m (got "1w") '
            "(hint: unknown unit 'w'; use d, h, m or s, such as 30s, 5m, 1h30m or 2d)",
        ),
    ],
)
def test_bad_durations_are_located(errors, line, where, message):
    assert task_errors(errors, TASK + line + "\n") == [
        f"inventory/tasks/prod/web.yaml:{where}: {message}"
    ]


def test_durations_become_seconds(inv):
    inventory, _ = inv(
        base(
            **{
                "tasks/prod/web.yaml": TASK
                + "timeout: 90\nretry: {delay: 1h30m, max_delay: '2d'}\n"
            }
        )
    )
    task = inventory.tasks["prod/web"]
    assert (task.timeout, task.retry.delay, task.retry.max_delay) == (90, 5400, 172800)


# --------------------------------------------------------------------------- machines


def machine_errors(errors, text):
    return errors({"teams/prod.yaml": TEAM, "machines/m.yaml": text})


def test_ssh_machine_needs_host_key_with_a_keyscan_hint(errors):
    assert machine_errors(errors, "name: m\nteam: prod\nhost: 10.0.0.5\nport: 2222\n") == [
        "inventory/machines/m.yaml:1:1: machine 'm' uses ssh and needs 'host_key' (the server's key is pinned) "
        "(hint: run 'reconcile machines keyscan 10.0.0.5:2222', check the key and paste the host_key line it prints)"
    ]


def test_ssh_machine_needs_host(errors):
    assert machine_errors(errors, f"name: m\nteam: prod\nhost_key: {HOST_KEY}\n") == [
        "inventory/machines/m.yaml:1:1: machine 'm' uses ssh and needs 'host' "
        "(hint: add host: ADDRESS, or set transport: local to run on the reconciler's own host)"
    ]


def test_local_machine_must_not_have_connection_settings(errors):
    lines = machine_errors(
        errors,
        f"name: m\nteam: prod\ntransport: local\nhost: x\nhost_key: {HOST_KEY}\n"
        "key: {vault: K}\nkey_file: /k\n",
    )
    assert [line.split(" (hint")[0] for line in lines] == [
        "inventory/machines/m.yaml:4:1: 'host' has no meaning for a local machine",
        "inventory/machines/m.yaml:5:1: 'host_key' has no meaning for a local machine",
        "inventory/machines/m.yaml:6:1: 'key' has no meaning for a local machine",
        "inventory/machines/m.yaml:7:1: 'key_file' has no meaning for a local machine",
        "inventory/machines/m.yaml:7:1: machine 'm' has both 'key' and 'key_file'",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "host_key: not a key",
            'host_key must be an SSH public key line such as "ssh-ed25519 AAAA..."',
        ),
        (
            "host_key: []",
            "host_key must be a non-empty list of SSH public key lines (got an empty list)",
        ),
        ("port: 70000", "port must be an integer 1..65535 (got 70000)"),
        ("max_parallel: 0", "max_parallel must be an integer 1..1000000 (got 0)"),
        (
            "labels: {tier: 1}",
            'labels.tier must be a string (got 1) (hint: quote the value so it stays a string, e.g. "1")',
        ),
        ("transport: tcp", 'transport must be one of ssh, local (got "tcp")'),
        (
            "key: /path/to/key",
            "key must be {vault: NAME} (got a string)",
        ),  # a path belongs in key_file
    ],
)
def test_machine_value_errors(errors, line, message):
    without_key = "\n".join(
        x for x in MACHINE.splitlines() if not x.startswith(line.split(":")[0] + ":")
    )
    lines = machine_errors(errors, without_key + "\n" + line + "\n")
    assert len(lines) == 1 and message in lines[0], lines


def test_machine_needs_a_team(errors):
    assert machine_errors(errors, "name: m\ntransport: local\n") == [
        "inventory/machines/m.yaml:1:1: machine 'm' needs 'team'"
    ]


# --------------------------------------------------------------------------- teams and settings


def test_team_errors(errors):
    lines = errors(
        {
            "teams/prod.yaml": dedent("""\
        name: prod
        members:
          - {name: alice, role: admin}
          - {name: alice, role: viewer}
          - {name: bob, role: owner}
          - {role: admin}
        alerts:
          - 5
          - {url: "json://x", on: [failed, bogus]}
          - {url: x, when: [failed]}
        windows:
          - {deny: "0 8 * * *"}
          - {deny: "0 8 * * *", duration: 0}
        """)
        }
    )
    assert lines == [
        "inventory/teams/prod.yaml:4:12: member 'alice' is listed twice in team 'prod' (hint: keep one entry per member)",
        'inventory/teams/prod.yaml:5:23: members[2].role must be one of admin, operator, viewer (got "owner")',
        "inventory/teams/prod.yaml:6:5: member needs 'name'",
        "inventory/teams/prod.yaml:8:5: alerts[0] must be an apprise URL, {vault: NAME} or {url: ..., on: [...]} (got a number)",
        'inventory/teams/prod.yaml:9:36: alerts[1].on[1] must be one of failed, unknown, blocked, recovered, unreachable, drift, overdue, missed, halted, awaiting_approval, killed, succeeded (got "bogus")',
        "inventory/teams/prod.yaml:10:14: unknown key 'when' in alert",
        "inventory/teams/prod.yaml:12:5: window needs 'duration'",
        "inventory/teams/prod.yaml:13:35: windows[1].duration must be at least 1s (got 0)",
    ]


def test_alert_url_values_are_not_echoed(errors):
    lines = errors({"teams/prod.yaml": "name: prod\nalerts:\n  - url: ''\n"})
    assert lines == [
        "inventory/teams/prod.yaml:3:10: alerts[0].url must be an apprise URL or {vault: NAME} (got a string)"
    ]


def test_settings_errors(errors):
    lines = errors(
        {
            "reconciler.yaml": "state: 5\nconcurrency: 0\npoll_interval: 0\ngit: {verify: sign}\nbogus: 1\n"
        }
    )
    assert lines == [
        "inventory/reconciler.yaml:1:8: state must be a state store URL (got a number)",
        "inventory/reconciler.yaml:2:14: concurrency must be an integer of at least 1 (got 0)",
        "inventory/reconciler.yaml:3:16: poll_interval must be at least 1s (got 0)",
        'inventory/reconciler.yaml:4:15: git.verify must be one of none, head, range (got "sign")',
        "inventory/reconciler.yaml:5:1: unknown key 'bogus' in settings",
    ]


def test_two_settings_files_are_refused(errors):
    assert errors(
        {"reconciler.yaml": "concurrency: 2\n", "reconciler.yml": "concurrency: 3\n"}
    ) == [
        "inventory/reconciler.yml:1:1: both reconciler.yaml and reconciler.yml exist "
        "(hint: keep only one (the other is inventory/reconciler.yaml))"
    ]


# --------------------------------------------------------------------------- duplicates


def test_duplicate_task_id_across_files(errors):
    assert errors(base(**{"tasks/prod/a.yaml": TASK, "tasks/prod/b/c.yaml": TASK})) == [
        "inventory/tasks/prod/b/c.yaml:1:7: duplicate task id 'prod/web' (first defined at inventory/tasks/prod/a.yaml:1:7) "
        "(hint: rename or remove one of the two tasks)"
    ]


def test_same_task_name_in_two_teams_is_fine(inv):
    inventory, _ = inv(
        {
            **base(),
            "teams/dev.yaml": "name: dev\n",
            "tasks/prod/web.yaml": TASK,
            "tasks/dev/web.yaml": TASK,
        }
    )
    assert list(inventory.tasks) == ["dev/web", "prod/web"]


def test_duplicate_team_and_machine_names(errors):
    assert errors(
        {
            "teams/a.yaml": TEAM,
            "teams/b.yaml": "teams:\n  - name: prod\n",
            "machines/a.yaml": MACHINE,
            "machines/b.yaml": MACHINE,
        }
    ) == [
        "inventory/machines/b.yaml:1:7: duplicate machine 'prod-01' (first defined at inventory/machines/a.yaml:1:7) "
        "(hint: rename or remove one of the two machines)",
        "inventory/teams/b.yaml:2:11: duplicate team 'prod' (first defined at inventory/teams/a.yaml:1:7) "
        "(hint: rename or remove one of the two teams)",
    ]


def test_duplicate_is_reported_even_when_the_first_has_other_errors(errors):
    lines = errors(base(**{"tasks/prod/a.yaml": TASK + "priority: 9\n", "tasks/prod/b.yaml": TASK}))
    assert len(lines) == 2 and "duplicate task id 'prod/web'" in lines[1]


def test_cross_object_references_are_not_checked_here(inv):
    inventory, _ = inv(
        {
            "teams/prod.yaml": TEAM,
            "machines/m.yaml": MACHINE.replace("team: prod", "team: ghost"),
            "tasks/prod/web.yaml": "name: web\nmachines: [nope]\nafter: [missing]\ncommand: x\n",
        }
    )
    assert inventory.tasks["prod/web"].machines == ("nope",)


# --------------------------------------------------------------------------- the schemas


KINDS = {"team": "teams", "machine": "machines", "task": "tasks", "settings": None}


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_valid_draft_2020_12_with_ids_titles_and_descriptions(kind):
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:reconciler:schema:{kind}"  # a name, not a place to fetch
    assert schema["title"] and schema["description"]
    obj = schema["$defs"][kind]
    assert obj["additionalProperties"] is False
    for name, prop in obj["properties"].items():
        described = prop.get("description") or schema["$defs"][prop["$ref"].split("/")[-1]].get(
            "description"
        )
        assert described, f"{kind}.{name} has no description"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_files_are_reachable_through_the_top_level_symlink(kind):
    top = Path(__file__).resolve().parents[2] / "schemas" / f"{kind}.schema.json"
    assert json.loads(top.read_text()) == load_schema(kind)


def test_shared_definitions_are_identical_across_schemas():
    seen = {}
    for kind in KINDS:
        for name, definition in load_schema(kind)["$defs"].items():
            assert seen.setdefault(name, definition) == definition, (
                f"$defs/{name} differs in {kind}"
            )


@pytest.mark.parametrize(
    ("kind", "document"),
    [
        ("team", {"name": "prod"}),
        ("team", {"teams": [{"name": "a"}, {"name": "b"}]}),
        ("machine", {"name": "m", "team": "t", "transport": "local"}),
        ("machine", {"machines": [{"name": "m", "team": "t", "host": "h", "host_key": HOST_KEY}]}),
        ("task", {"name": "w", "selector": {}, "command": "x"}),
        (
            "task",
            {
                "tasks": [
                    {"name": "w", "machines": ["m"], "script": "x", "env": {"A": {"vault": "B"}}}
                ]
            },
        ),
        ("settings", {"concurrency": 2, "git": {"verify": "range"}}),
    ],
)
def test_whole_file_schemas_accept_one_object_or_a_plural_list(kind, document):
    Draft202012Validator(load_schema(kind)).validate(document)


@pytest.mark.parametrize(
    ("kind", "document"),
    [
        ("task", {"tasks": [{"name": "w"}], "extra": 1}),
        ("task", {"name": "w", "machines": ["m"]}),
        ("task", {"name": "w", "machines": ["m"], "selector": {}, "command": "x"}),
        ("machine", {"name": "m", "team": "t", "host": "h"}),
        ("machine", {"name": "m", "team": "t", "transport": "local", "host": "h"}),
        ("team", {"teams": {"name": "a"}}),
    ],
)
def test_whole_file_schemas_reject_what_editors_should_flag(kind, document):
    assert list(Draft202012Validator(load_schema(kind)).iter_errors(document))


@pytest.mark.parametrize(
    "cron, ok",
    [
        ("*/15 * * * *", True),
        ("0 8 * * mon-fri", True),
        ("@daily", True),
        ("@daily ", False),
        (" @hourly", False),
        ("0 0 ? * *", False),
        ("0 0 * * 5#3", False),
        ("* * * * * *", False),
        ("@reboot", False),
    ],
)
def test_editor_schema_flags_what_the_loader_refuses_in_a_schedule(cron, ok):
    validator = Draft202012Validator(load_schema("task"))
    document = {"name": "w", "machines": ["m"], "command": "x", "schedule": cron}
    assert validator.is_valid(document) is ok
