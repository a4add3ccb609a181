"""Local tasks and the reconciler's identity (issue 11, item 9), through the real command.

A local task runs on the reconciler's own host. It must not find the identity (key text or
path) in the environment or argument list of the reconciler or any ancestor (/proc), and on a
machine with `user:` it runs as that OS user, who cannot read a root-only identity file.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.vault_project import vault_set

SECRET = "isolation-Secret-8812"

# Walks from the task's shell up through every ancestor, dumping what /proc shows of each.
DUMP_ANCESTORS = """\
pid=$$
while [ "$pid" -gt 1 ]; do
  cat /proc/$pid/environ /proc/$pid/cmdline >> "{dump}" 2>/dev/null
  printf '\\n--\\n' >> "{dump}"
  pid=$(awk '/^PPid:/ {{print $2}}' /proc/$pid/status)
done
test "$DB_PASSWORD" = "{secret}" && echo vault-ok >> "{dump}"
"""


def _identity(project) -> tuple[Path, str, str]:
    """An age identity file, its key text and its public key."""
    key = project.root / "reconciler.key"
    result = project.run("vault", "keygen", "-o", str(key), code=0)
    public = result.err.strip().split("Public key: ")[1]
    text = next(line for line in key.read_text().splitlines() if line.startswith("AGE-SECRET"))
    return key, text, public


@pytest.fixture
def isolated(project):
    """An ops team whose vault holds DB_PASSWORD, readable with the reconciler's identity."""
    key, text, public = _identity(project)
    project.write(
        "teams/ops.yaml", f"name: ops\nmembers:\n  - {{name: host, role: admin, age: {public}}}\n"
    )
    vault_set(project, "ops", "DB_PASSWORD", SECRET + "\n", key)
    project.key, project.key_text = key, text
    return project


@pytest.mark.parametrize("how", ["flag", "file-variable", "key-variable"])
def test_local_task_finds_no_identity_in_the_reconcilers_proc_entries(isolated, how):
    p = isolated
    dump = p.root / "dump.txt"
    p.task(
        "snoop",
        "env:\n  DB_PASSWORD: {vault: DB_PASSWORD}\nscript: |\n"
        + "".join(
            f"  {line}\n" for line in DUMP_ANCESTORS.format(dump=dump, secret=SECRET).splitlines()
        ),
    )
    args, env = {
        "flag": (["--identity", str(p.key)], {}),
        "file-variable": ([], {"RECONCILE_IDENTITY_FILE": str(p.key)}),
        "key-variable": ([], {"RECONCILE_IDENTITY": p.key_text}),
    }[how]
    p.run("--once", *args, env=env, code=0)
    seen = dump.read_text()
    assert "vault-ok" in seen  # the identity still reached the vault, so the dump is real
    assert seen.count("\n--\n") >= 2  # the task's shell and at least the reconciler
    assert p.key_text not in seen
    assert str(p.key) not in seen and "reconciler.key" not in seen


def test_identity_given_with_equals_or_among_other_options_is_hidden_too(isolated):
    p = isolated
    dump = p.root / "dump.txt"
    p.task("snoop", f"command: cat /proc/$PPID/cmdline /proc/$PPID/environ > {dump}\n")
    p.run("--once", f"--identity={p.key}", code=0)
    assert "reconciler.key" not in dump.read_text()
    p.task("snoop", f"command: cat /proc/$PPID/cmdline > {dump}; echo again >> {dump}\n")
    p.run("--once", "--identity", str(p.key), "-q", code=0)
    assert "reconciler.key" not in dump.read_text() and "again" in dump.read_text()


@pytest.fixture
def root_only_identity(isolated):
    """The identity in a 0600 root-owned file, in a folder everyone may traverse: only the
    file's own mode keeps another user out."""
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root (CI and the dev container run as root)")
    folder = Path(tempfile.mkdtemp(prefix="reconciler-identity-"))
    os.chmod(folder, 0o755)
    key = folder / "identity.txt"
    shutil.copy(isolated.key, key)
    os.chmod(key, 0o600)
    isolated.root_key = key
    yield isolated
    shutil.rmtree(folder)


def _task_output(project, task: str) -> dict:
    runs = project.run("queue", "list", "--format", "json", code=0).json()
    run = next(r for r in runs if r["task"] == f"ops/{task}")
    return project.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()


READ_IDENTITY = "command: id -u; id -g; cat {key} >/dev/null 2>&1 && echo READABLE || echo DENIED\n"


def test_task_on_a_machine_with_user_runs_as_that_user_and_cannot_read_the_identity(
    root_only_identity,
):
    p = root_only_identity
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nuser: nobody\n")
    p.task("probe", READ_IDENTITY.format(key=p.root_key))
    p.run("--once", "--identity", str(p.root_key), code=0)
    shown = _task_output(p, "probe")
    nobody = pwd.getpwnam("nobody")
    lines = shown["output"].split()
    assert lines[:2] == [str(nobody.pw_uid), str(nobody.pw_gid)], shown
    assert lines[2] == "DENIED", shown


def test_task_on_a_machine_without_user_runs_with_the_reconcilers_rights(root_only_identity):
    p = root_only_identity
    p.task("probe", READ_IDENTITY.format(key=p.root_key))
    p.run("--once", "--identity", str(p.root_key), code=0)
    lines = _task_output(p, "probe")["output"].split()
    assert lines[0] == "0" and lines[2] == "READABLE"  # the control: why `user:` matters


def test_task_as_another_user_gets_that_users_home_and_name(root_only_identity):
    p = root_only_identity
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nuser: nobody\n")
    p.task("whoami", 'command: echo "$USER $LOGNAME $HOME"\n')
    p.run("--once", code=0)
    nobody = pwd.getpwnam("nobody")
    assert _task_output(p, "whoami")["output"].split() == ["nobody", "nobody", nobody.pw_dir]


def test_unknown_user_fails_the_run_with_the_reason(project):
    project.write(
        "machines/box.yaml", "name: box\nteam: ops\ntransport: local\nuser: no-such-user-4711\n"
    )
    project.task("t", f"command: {project.record('ran')}\n")
    result = project.run("--once", "--format", "json", code=1)
    assert project.ledger_lines() == []
    run = result.json()["runs"][0]
    shown = project.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert "no-such-user-4711" in (shown["error"] or "") and "no such user" in shown["error"]


# ---------------------------------------------------------------- local machines without user:

SHARED = "runs its tasks with the reconciler's own rights"


def test_validate_warns_that_a_local_machine_without_user_has_the_reconcilers_rights(project):
    result = project.run("validate", code=0)
    assert re.search(
        r"^inventory/machines/box\.yaml:1:1: warning: machine 'box' " + SHARED, result.err, re.M
    ), result.err
    assert "add user: OS_USER" in result.err


def _second_team(project) -> None:
    project.write("teams/dev.yaml", "name: dev\n")
    project.task("t", f"command: {project.record('ran')}\n")


def test_with_two_teams_a_local_machine_without_user_is_refused_and_nothing_runs(project):
    _second_team(project)
    result = project.run("--once", code=2)
    assert re.search(
        r"^error: inventory/machines/box\.yaml:1:1: machine 'box' "
        + SHARED
        + r" \(no user:\).*2 teams",
        result.err,
        re.M,
    ), result.err
    assert "local_machines: {allow_shared_user: true}" in result.err
    assert project.ledger_lines() == [] and project.run_count() == 0
    assert project.run("validate", code=2).err.count("error:") == 1


def test_with_two_teams_user_root_is_refused_like_no_user(project):
    _second_team(project)
    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nuser: root\n")
    result = project.run("validate", code=2)
    assert re.search(
        r"^error: inventory/machines/box\.yaml:4:7: machine 'box' " + SHARED + r" \(user: root\)",
        result.err,
        re.M,
    ), result.err


def test_the_admins_may_allow_the_shared_user_in_the_settings(project):
    _second_team(project)
    project.write("reconciler.yaml", "local_machines: {allow_shared_user: true}\n")
    assert SHARED in project.run("validate", code=0).err  # still stated
    project.run("--once", code=0)
    assert project.ledger_lines() == ["ran"]


def test_with_two_teams_a_local_machine_with_its_own_user_is_valid_without_warning(project):
    _second_team(project)
    project.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nuser: nobody\n")
    assert "warning" not in project.run("validate", code=0).err


def test_a_bad_local_machines_setting_is_a_located_error(project):
    project.write("reconciler.yaml", "local_machines: {allow_shared_user: yes-please}\n")
    result = project.run("validate", code=2)
    assert re.search(r"^error: inventory/reconciler\.yaml:1:\d+: ", result.err, re.M), result.err
    assert "allow_shared_user" in result.err and "Traceback" not in result.err
