"""`--format json` prints exactly one JSON document on stdout on every exit code (issue 19).

The commands are not listed by hand: every command and action whose `--format` accepts `json`
is read from the parser (`reconciler/cli/args.py`), and each must have a success case and
failure cases below, so a command added later without them fails this test. Each case runs
`reconcile` as a user would (a subprocess) and checks that stdout parses as one JSON document
(nothing before or after it), that stderr holds no traceback, and that a failure's document
says what went wrong (an invalid inventory: where, with file, line and column).
"""

from __future__ import annotations

import argparse
import getpass
import json
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from reconciler.cli.args import CommandParser, build_parser
from tests.support.cli import clean_environment
from tests.support.project import Project
from tests.support.vault_project import keygen, vault_set

# A PostgreSQL URL nothing answers (port 1): an infrastructure failure, exit 3.
NO_POSTGRES = "postgresql://nobody@127.0.0.1:1/none"


def json_commands() -> set[tuple[str, ...]]:
    """Every command path (`("queue", "list")`, `("--once",)`) that accepts `--format json`."""
    root = build_parser()
    found = {("--once",), ("--once", "--dry-run")}  # the root's own --format
    for name, parser in _subcommands(root).items():
        found |= set(_walk(parser, (name,)))
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    if isinstance(parser, CommandParser):
        parser.declared()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...], json: bool = True
) -> Iterator[tuple[str, ...]]:
    """The command paths under `parser` that accept `--format json` (or, with `json` false,
    that do not)."""
    children = _subcommands(parser)
    if children:  # a command with actions: each action is a command of its own
        for name, child in children.items():
            yield from _walk(child, (*path, name), json)
        return
    formats = [a for a in parser._actions if a.dest == "format"]
    if any("json" in (a.choices or ()) for a in formats) == json:
        yield path


def text_only_commands() -> set[tuple[str, ...]]:
    """Every command path that refuses `--format json`, and the daemon (no command)."""
    found = {()}
    for name, parser in _subcommands(build_parser()).items():
        found |= set(_walk(parser, (name,), json=False))
    return found


@dataclass(frozen=True)
class Case:
    """`reconcile ARGS --format json` and the exit code it must end with. `located`: the
    failure is an invalid inventory, whose errors must name file, line and column."""

    args: tuple[str, ...]
    code: int
    located: bool = False
    env: dict = field(default_factory=dict)
    input: str | None = None


def broken(*args: str, **kw) -> Case:
    """The command over an inventory with a schema error (exit 2, located)."""
    return Case(("--inventory", "broken", *args), 2, located=True, **kw)


def no_store(*args: str) -> Case:
    """The command with a PostgreSQL store that does not answer (exit 3)."""
    return Case(("--state", NO_POSTGRES, *args), 3)


def unreadable_store(*args: str) -> Case:
    """The command with a state file that is no database (exit 3)."""
    return Case(("--state", "sqlite:///garbage.db", *args), 3)


def with_identity(*args: str, code: int = 0, **kw) -> Case:
    return Case((*args, "--identity", "alice.key"), code, **kw)


# For each command: its success case, then its failure cases. The world they run in is
# `world` below: team ops (admin alice, whose key opens the vault), a local machine box,
# tasks `ok` and `fails` (run once: a succeeded and a failed run), `held` (pending behind a
# deny window), a git repository, and a copy of the inventory with a schema error.
CASES: dict[tuple[str, ...], tuple[Case, list[Case]]] = {
    ("--once",): (
        Case(("--once",), 0),
        [broken("--once"), no_store("--once"), unreadable_store("--once")],
    ),
    ("--once", "--dry-run"): (
        Case(("--once", "--dry-run"), 0),
        [broken("--once", "--dry-run"), no_store("--once", "--dry-run")],
    ),
    ("validate",): (
        Case(("validate",), 0),
        [broken("validate"), Case(("validate", "--inventory", "nowhere"), 2)],
    ),
    ("plan",): (
        Case(("plan",), 0),
        [broken("plan"), no_store("plan"), unreadable_store("plan")],
    ),
    ("status",): (
        Case(("status",), 0),
        [broken("status"), no_store("status"), unreadable_store("status")],
    ),
    ("queue", "list"): (
        Case(("queue", "list"), 0),
        [Case(("queue", "list", "--status", "bogus"), 2), no_store("queue", "list")],
    ),
    ("queue", "show"): (
        Case(("queue", "show", "{fails}"), 0),
        [Case(("queue", "show", "999"), 2), unreadable_store("queue", "show", "{ok}")],
    ),
    ("queue", "cancel"): (
        Case(("queue", "cancel", "{held}"), 0),
        [Case(("queue", "cancel", "{ok}"), 2), no_store("queue", "cancel", "{held}")],
    ),
    # No success case: killing `held` (pending) would cancel it under `queue cancel`'s case.
    ("queue", "kill"): (
        None,
        [
            Case(("queue", "kill", "{ok}"), 2),
            Case(("queue", "kill", "999"), 2),
            Case(("queue", "kill", "{held}", "--grace", "soon"), 2),
            no_store("queue", "kill", "{held}"),
        ],
    ),
    ("queue", "retry"): (
        Case(("queue", "retry", "{fails}"), 0),
        [Case(("queue", "retry", "999"), 2), broken("queue", "retry", "{fails}")],
    ),
    ("queue", "prune"): (
        Case(("queue", "prune", "--older-than", "30d"), 0),
        [
            Case(("queue", "prune", "--older-than", "soon"), 2),
            no_store("queue", "prune", "--older-than", "30d"),
        ],
    ),
    ("audit", "verify"): (
        Case(("audit", "verify"), 0),
        [Case(("audit", "verify", "--checkpoint", "nowhere"), 2), no_store("audit", "verify")],
    ),
    ("audit", "export"): (
        Case(("audit", "export", "-o", "export.jsonl"), 0),
        [
            Case(("audit", "export"), 2),  # JSON lines on stdout are not one document
            no_store("audit", "export", "-o", "export.jsonl"),
        ],
    ),
    ("vault", "list"): (
        with_identity("vault", "list", "ops"),
        [with_identity("vault", "list", "nobody", code=2), broken("vault", "list", "ops")],
    ),
    ("vault", "get"): (
        with_identity("vault", "get", "ops", "DB_PASSWORD"),
        [
            with_identity("vault", "get", "ops", "NOPE", code=2),
            Case(("vault", "get", "ops", "X"), 2),
        ],
    ),
    ("vault", "set"): (
        with_identity("vault", "set", "ops", "TOKEN", "-", input="t0ken\n"),
        [with_identity("vault", "set", "ops", "bad-name", "-", code=2, input="x")],
    ),
    ("vault", "unset"): (
        with_identity("vault", "unset", "ops", "SPARE"),
        [with_identity("vault", "unset", "ops", "NOPE", code=2)],
    ),
    ("vault", "edit"): (
        with_identity("vault", "edit", "ops", env={"EDITOR": "true", "VISUAL": ""}),
        [with_identity("vault", "edit", "ops", code=2, env={"EDITOR": "false", "VISUAL": ""})],
    ),
    ("vault", "rekey"): (
        with_identity("vault", "rekey", "ops"),
        [with_identity("vault", "rekey", "nobody", code=2), Case(("vault", "rekey", "ops"), 2)],
    ),
    ("machines",): (
        Case(("machines", "--timeout", "5"), 0),
        [
            broken("machines"),
            Case(("machines", "keyscan", "127.0.0.1:1", "--timeout", "5"), 1),
            Case(("machines", "keyscan", "not a host:x"), 2),
        ],
    ),
    ("diff",): (
        Case(("diff", "HEAD"), 0),
        [
            Case(("diff", "no-such-revision"), 3),
            Case(("diff", "HEAD", "--inventory", "broken"), 2),
        ],
    ),
    ("init",): (
        Case(("init", "fresh"), 0),
        [Case(("init", "."), 2)],  # the inventory is there: refused without --force
    ),
    ("run",): (
        Case(("run", "ops/ok", "--reason", "json", "--wait"), 0),
        [
            Case(("run", "ops/fails", "--reason", "json", "--wait"), 1),
            Case(("run", "ops/ok", "--reason", "json", "--param", "NOPE=1"), 2),
            broken("run", "ops/ok", "--reason", "json"),
            no_store("run", "ops/ok", "--reason", "json"),
        ],
    ),
    ("approvals",): (
        Case(("approvals",), 0),
        [no_store("approvals"), unreadable_store("approvals")],
    ),
    ("keys", "status"): (
        Case(("keys", "status"), 0),
        [broken("keys", "status")],
    ),
    # rotate and prune succeed only against a machine whose key is in a vault, over real SSH:
    # test_keys_rotate_and_prune_print_one_json_document below.
    ("keys", "rotate"): (
        None,
        [Case(("keys", "rotate", "nosuch"), 2), broken("keys", "rotate", "box")],
    ),
    ("keys", "prune"): (
        None,
        [Case(("keys", "prune", "nosuch"), 2), broken("keys", "prune", "box")],
    ),
}


# What the commands that write text alone need to get as far as refusing --format json.
TEXT_ONLY_ARGS = {
    ("vault", "encrypt"): ("-r", "age1x"),
    ("accept-history",): ("HEAD", "--reason", "r"),
    ("approve",): ("ops/ok", "--key", "nowhere.key"),
}


@pytest.mark.parametrize(
    "path", sorted(text_only_commands()), ids=lambda path: " ".join(path) or "daemon"
)
def test_a_command_that_writes_no_json_refuses_the_flag_with_a_json_error(world, path):
    """Refused (exit 2) before anything runs, and said as a JSON error document too."""
    result = world.run(*path, *TEXT_ONLY_ARGS.get(path, ()), "--format", "json")
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err, result.err
    document = json.loads(result.out)
    assert document["kind"] == "usage" and "--format" in document["errors"][0]["message"]
    assert not (world.root / "CODEOWNERS").exists()


def test_every_command_that_writes_json_has_cases_here():
    assert json_commands() == set(CASES), (
        "commands accepting --format json without cases here (or cases of a command that "
        f"no longer does): {sorted(json_commands() ^ set(CASES))}"
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("json"))
    alice_key, alice = keygen(project, "alice")
    project.write(
        "teams/ops.yaml", f"name: ops\nmembers: [{{name: alice, role: admin, age: {alice}}}]\n"
    )
    project.task("ok", "command: 'true'\n")
    project.task("fails", "command: 'exit 3'\n")
    project.write(
        "machines/shut.yaml",
        (
            "name: shut\nteam: ops\ntransport: local\n"
            "windows: [{deny: '0 0 * * *', duration: 1000d}]\n"
        ),
    )
    project.write("tasks/ops/held.yaml", "name: held\nmachines: [shut]\ncommand: 'true'\n")
    vault_set(project, "ops", "DB_PASSWORD", "pa55word\n", alice_key)
    vault_set(project, "ops", "SPARE", "spare\n", alice_key)
    for words in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "inventory"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *words],
            cwd=project.root,
            check=True,
        )
    first = project.run("--once", "-q", "--format", "json", code=1).json()
    project.ids = {r["task"].removeprefix("ops/"): str(r["id"]) for r in first["runs"]}
    assert {r["status"] for r in first["runs"]} == {"succeeded", "failed", "pending"}, first
    shutil.copytree(project.inventory, project.root / "broken")
    (project.root / "broken" / "tasks" / "ops" / "ok.yaml").write_text(
        "name: ok\nmachines: [box]\ncommand: 'true'\npriority: 9\n"
    )
    (project.root / "garbage.db").write_text("this is no database\n")
    return project


def _cases() -> list:
    cases = []
    for path, (success, failures) in sorted(CASES.items()):
        if success is not None:
            cases.append(pytest.param(success, id=" ".join(path) + " ok"))
        for index, case in enumerate(failures):
            cases.append(pytest.param(case, id=f"{' '.join(path)} fails {index}"))
    return cases


@pytest.mark.parametrize("case", _cases())
def test_one_json_document_on_stdout(world, case: Case):
    args = tuple(word.format(**world.ids) for word in case.args)
    result = world.run(*args, "--format", "json", env=case.env, input=case.input)
    assert result.code == case.code, f"exit {result.code}\n{result.out}\n{result.err}"
    assert "Traceback" not in result.err, result.err
    try:
        document = json.loads(result.out)  # one document: anything after it is an error
    except ValueError as exc:
        pytest.fail(f"stdout is not one JSON document ({exc}):\n{result.out!r}")
    if case.code == 0:
        return
    assert isinstance(document, dict), document
    assert document.get("ok") is False or document.get("valid") is False, document
    errors = document.get("errors") or document.get("problems")
    assert errors, document
    if case.located:
        assert any(
            e["path"] and e["line"] and e["column"] and e["message"] for e in document["errors"]
        ), document


def test_keyscan_of_a_real_sshd_is_one_json_document(world, sshd):
    """`machines keyscan`'s success needs a server: a real sshd on 127.0.0.1."""
    result = world.run("machines", "keyscan", f"127.0.0.1:{sshd.port}", "--format", "json")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert json.loads(result.out)["keys"], result.out


def test_vault_get_and_set_in_json_say_the_value_and_the_names(world):
    ident = ("--identity", "alice.key", "--format", "json")
    got = world.run("vault", "get", "ops", "DB_PASSWORD", *ident, code=0).json()
    assert got == {"team": "ops", "name": "DB_PASSWORD", "value": "pa55word"}
    result = world.run("vault", "set", "ops", "API_KEY", "-", *ident, code=0, input="k3y-VALUE\n")
    assert result.json() == {
        "team": "ops",
        "file": "inventory/vaults/ops.age",
        "action": "set",
        "changed": True,
        "names": ["API_KEY"],
    }
    assert "k3y-VALUE" not in result.out + result.err


def test_keys_rotate_and_prune_print_one_json_document(tmp_path, sshd, client_key):
    """Their success needs a machine whose key is in a vault, over SSH: a real sshd."""
    project = Project(tmp_path)
    identity, public = keygen(project, "me")
    project.write(
        "teams/ops.yaml", f"name: ops\nmembers: [{{name: me, role: admin, age: {public}}}]\n"
    )
    vault_set(project, "ops", "SSH_KEY", client_key.private, identity)
    project.write(
        "machines/box.yaml",
        f"name: box\nteam: ops\nhost: 127.0.0.1\nport: {sshd.port}\nuser: {getpass.getuser()}\n"
        f"host_key: {sshd.host_key}\nkey: {{vault: SSH_KEY}}\n",
    )
    where = ("--identity", str(identity), "--authorized-keys", str(sshd.authorized))
    for action in ("rotate", "prune"):
        result = project.run("keys", action, "box", *where, "--format", "json")
        assert result.code == 0 and "Traceback" not in result.err, result.out + result.err
        assert json.loads(result.out)["machine"] == "box", result.out
        assert "PRIVATE KEY" not in result.out


# ---------------------------------------------------------------- the store of a broken inventory


def _configured_store(tmp_path) -> Project:
    """A project whose reconciler.yaml names its own store, with one run in it."""
    project = Project(tmp_path)
    project.write("reconciler.yaml", "state: sqlite:///elsewhere.db\n")
    project.task("deploy", f"command: {project.record('deploy')}\n")
    project.run("--once", "-q", code=0)
    return project


def test_a_typo_in_a_task_leaves_queue_and_audit_on_the_configured_store(tmp_path):
    """reconciler.yaml is valid: its `state:` is the store, whatever else is broken."""
    project = _configured_store(tmp_path)
    project.task("deploy", "command: 'true'\ntimeout: soon\n")  # a typo in the task
    project.run("validate", code=2)
    assert len(project.run("queue", "list", "--format", "json", code=0).json()) == 1
    verified = project.run("audit", "verify", "--format", "json", code=0).json()
    assert verified["entries"] > 0, verified
    assert not project.state.exists(), "the default store was created"


def test_a_typo_in_reconciler_yaml_refuses_queue_and_audit_naming_the_file(tmp_path):
    """reconciler.yaml has an error: its `state:` cannot be trusted, the default store would be
    the wrong one; refused (exit 2, one JSON document naming the file) unless --state says."""
    project = _configured_store(tmp_path)
    project.write("reconciler.yaml", "state: sqlite:///elsewhere.db\npoll_interval: soon\n")
    for args in (("queue", "list"), ("audit", "verify"), ("queue", "prune", "--older-than", "1d")):
        result = project.run(*args, "--format", "json", code=2)
        document = json.loads(result.out)
        assert document["exit_code"] == 2 and "Traceback" not in result.err, result
        paths = {e["path"] for e in document["errors"]}
        assert paths == {"inventory/reconciler.yaml"}, document
        assert "--state" in result.err, result.err
    assert not project.state.exists(), "the default store was created"
    named = project.run("queue", "list", "--state", "sqlite:///elsewhere.db", "--format", "json")
    assert named.code == 0 and len(named.json()) == 1, named


# ------------------------------------------------------------------------- a file that fails


def _full_disk() -> None:  # files cannot grow past 100 bytes: EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))


def test_init_on_a_full_disk_is_one_json_error_naming_the_file_not_stdout(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "init", "new", "--format", "json"],
        cwd=tmp_path,
        env=clean_environment({"PYTHONDONTWRITEBYTECODE": "1"}),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_full_disk,
    )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc
    assert "standard output" not in proc.stderr, proc.stderr
    document = json.loads(proc.stdout)
    assert document["exit_code"] == 3 and document["kind"] == "infrastructure", document
    assert "new/inventory/" in document["errors"][0]["message"], document


def test_a_result_that_cannot_be_written_on_stdout_is_blamed_on_stdout(tmp_path):
    """The other side: a full /dev/full under stdout is stdout's failure (exit 3), said on
    stderr, and no JSON document is attempted."""
    project = Project(tmp_path)
    project.task("deploy", "command: 'true'\n")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", "plan", "--format", "json"],
            cwd=project.root,
            env=clean_environment(None),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 3, proc.stderr
    assert "cannot write standard output" in proc.stderr and "Traceback" not in proc.stderr


def test_a_prune_archive_under_a_file_is_one_json_error_naming_it(tmp_path):
    """The archive's folder is a file: exit 2 naming the archive, nothing pruned (the clean-up
    of the temporary under that file raised NotADirectoryError, which escaped naming it)."""
    project = _configured_store(tmp_path)
    (project.root / "notes.txt").write_text("not a folder\n")
    args = ("queue", "prune", "--older-than", "0s", "--archive", "notes.txt/runs.jsonl.gz")
    result = project.run(*args, "--format", "json", code=2)
    document = json.loads(result.out)
    assert document["exit_code"] == 2 and "Traceback" not in result.err, result
    message = document["errors"][0]["message"]
    assert "notes.txt is a file, not a folder" in message and "the archive" in message, message
    assert ".tmp" not in message, "the error names a temporary file the user never named"
    assert len(project.run("queue", "list", "--format", "json", code=0).json()) == 1
