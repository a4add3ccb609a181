"""Secrets at rest and in logs, and hostile input that once crashed: through the real command.

A vault bound to its team, redaction of encoded and cut secrets in stored output, library
logs at -vv, private file modes of the store, and integers too large for Python's int()."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from tests.support.alert_receiver import AlertReceiver
from tests.support.cli import spawn
from tests.support.vault_project import PROD_PASSWORD, SECRET, vault_set
from tests.support.waiting import wait_until

HUGE = "9" * 5000


def test_an_integer_too_large_for_python_in_a_task_file_is_a_located_exit_2(project):
    path = project.task("big", f"priority: {HUGE}\ncommand: echo hi\n")
    result = project.run("validate", code=2)
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert (
        f"{path.relative_to(project.root)}:3:11: an integer of 5000 characters is too large"
        in result.err
    )
    assert result.err.count("\n") == 1  # one located line


def test_a_huge_integer_in_the_body_of_a_plan_command_is_exit_2_not_internal(project):
    project.task("big", f"command: echo hi\npriority: 0x{'f' * 5000}\n")
    result = project.run("plan", code=2)
    assert "internal error" not in result.err and "too large" in result.err


def test_vault_set_of_a_value_of_5000_digits_stores_it_as_the_string_it_is(vaulted):
    p = vaulted
    p.run("vault", "set", "ops", "LONG", "-", "--identity", str(p.alice), code=0, input=HUGE + "\n")
    assert (
        p.run("vault", "get", "ops", "LONG", "--identity", str(p.alice), code=0).out == HUGE + "\n"
    )


# --- private state: item 12 -------------------------------------------------------------------


@pytest.fixture
def umask_022():
    """The common default umask, under which files are created world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_folder_database_wal_and_lock_are_private_while_a_pass_runs(project, umask_022):
    go = project.root / "go"
    project.task(
        "wait",
        f'command: {project.record("started")}; while [ ! -e "{go}" ]; do sleep 0.05; done\n',
    )
    proc = spawn("--once", "-q", cwd=project.root)
    try:
        wait_until(
            lambda: "started" in project.ledger_lines(), timeout=30, message="the task started"
        )
        folder = project.state.parent
        modes = {p.name: _mode(p) for p in [folder, *folder.iterdir()]}
        assert {"state.db", "state.db-wal", "state.db-shm", "state.db.lock"} <= set(modes)
        assert modes == {
            p.name: 0o700 if p.is_dir() else 0o600 for p in [folder, *folder.iterdir()]
        }
    finally:
        go.touch()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()


def test_prune_archives_and_audit_exports_are_private(project, umask_022):
    project.task("hello", "command: echo hello\n")
    project.run("--once", "-q", code=0)
    archive, export = project.root / "archive.jsonl", project.root / "export.jsonl.gz"
    project.run("queue", "prune", "--older-than", "0s", "--archive", str(archive), code=0)
    project.run("audit", "export", "-o", str(export), code=0)
    assert (_mode(archive), _mode(export)) == (0o600, 0o600)
    assert _mode(project.root / ".reconciler" / "audit.key") == 0o600


def test_an_existing_world_readable_store_is_made_private_by_the_next_pass(project, umask_022):
    project.task("hello", "command: echo hello\n")
    project.run("--once", "-q", code=0)
    folder = project.state.parent
    folder.chmod(0o755)
    project.state.chmod(0o644)
    project.run("--once", "-q", code=0)
    assert (_mode(folder), _mode(project.state)) == (0o700, 0o600)


# --- redaction of stored output: item 10, and the mark of a cut: issue 12 item 11 ----------------

LONG = "L0ng-Secret-" + "".join(chr(ord("a") + i % 26) for i in range(120))  # > 57 bytes: wraps


def _base64_cores(secret: str) -> list[str]:
    """The base64 characters that only `secret` decides, wherever it sits in a longer byte
    string (three alignments): what must never be readable in stored output."""
    import base64

    raw = secret.encode()
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        cores.append(encoded[-(-8 * offset // 6) : (8 * (offset + len(raw))) // 6])
    return cores


def _stored_output(project, *flags: str) -> str:
    data = project.run(
        "--once", "--format", "json", "--identity", str(project.alice), *flags, code=0
    ).json()
    run_id = data["runs"][0]["id"]
    return project.run("queue", "show", str(run_id), "--format", "json", code=0).json()["output"]


@pytest.fixture
def two_secrets(vaulted):
    vault_set(vaulted, "ops", "LONG", LONG + "\n", vaulted.alice)
    return vaulted


def test_base64_of_user_colon_secret_as_curl_prints_basic_auth_is_masked(two_secrets):
    p = two_secrets
    p.task(
        "curl",
        "env: {DB_PASSWORD: {vault: DB_PASSWORD}}\n"
        'command: |\n  for u in u us use; do printf "Authorization: Basic %s\\n" '
        '"$(printf %s "$u:$DB_PASSWORD" | base64)"; done\n',
    )
    output = _stored_output(p)
    assert output.count("Authorization: Basic ") == 3 and output.count("***") == 3
    for core in _base64_cores(SECRET):
        assert core not in output


def test_base64_wrapped_at_76_columns_is_masked_at_every_alignment(two_secrets):
    p = two_secrets
    p.task(
        "wrapped",
        "env: {LONG: {vault: LONG}}\n"
        'command: for u in "" u us; do printf %s "$u$LONG$u" | base64; echo; done\n',
    )
    output = _stored_output(p)
    joined = output.replace("\n", "")
    assert output.count("***") == 3
    for core in _base64_cores(LONG):
        for piece in (core[i : i + 16] for i in range(0, len(core) - 16)):
            assert piece not in joined


def test_a_secret_cut_by_the_output_cap_leaves_no_readable_piece(two_secrets):
    p = two_secrets
    kept = 65536 - 90  # the last 64 KiB start 90 characters into the secret
    p.task(
        "cut",
        "env: {LONG: {vault: LONG}}\n"
        f'command: printf %s "$LONG"; head -c {kept} /dev/zero | tr "\\\\0" x\n',
    )
    output = _stored_output(p)
    assert output.rstrip("x").endswith("***")
    for size in range(3, len(LONG)):
        assert not any(LONG[i : i + size] in output for i in range(len(LONG) - size + 1))


def test_output_over_64_kib_is_stored_with_a_mark_saying_how_much_was_dropped(project):
    total = 100_000
    project.task("loud", f'command: head -c {total} /dev/zero | tr "\\\\0" y\n')
    run_id = project.run("--once", "--format", "json", code=0).json()["runs"][0]["id"]
    output = project.run("queue", "show", str(run_id), "--format", "json", code=0).json()["output"]
    mark, _, tail = output.partition("\n")
    dropped = int(
        re.fullmatch(r"\[\.\.\. (\d+) bytes of earlier output dropped \.\.\.\]", mark).group(1)
    )
    assert set(tail) == {"y"} and dropped + len(tail) == total
    assert len(output.encode()) <= 64 * 1024


# --- every log record passes the redactor: item 11 ---------------------------------------------

HOOK_TOKEN = "Tk7qZ2xW9vB4nM1pL8sR"


def test_a_vault_held_alert_url_never_reaches_stderr_even_from_library_debug_logs(vaulted):
    receiver = AlertReceiver()
    try:
        p = vaulted
        url = receiver.url(f"/hooks/{HOOK_TOKEN}?key=Qk9vXw2Lm5Zr8Tn3")
        vault_set(p, "ops", "ALERT_URL", url + "\n", p.alice)
        team = (p.inventory / "teams" / "ops.yaml").read_text()
        p.write("teams/ops.yaml", team + "alerts:\n  - {vault: ALERT_URL}\n")
        p.task("broken", "command: exit 1\nretry: {count: 0}\n")
        result = p.run("--once", "-vv", "--identity", str(p.alice), code=1)
        assert [r["path"].split("?")[0] for r in receiver.requests] == [f"/hooks/{HOOK_TOKEN}"]
        assert "urllib3" in result.err or "apprise" in result.err  # library debug logs ran
        for piece in (HOOK_TOKEN, "Qk9vXw2Lm5Zr8Tn3", url):
            assert piece not in result.err and piece not in result.out
    finally:
        receiver.close()


# --- a vault is bound to its team: item 8 --------------------------------------------------------


def test_a_prod_vault_copied_over_the_dev_vault_gives_a_dev_task_nothing(two_teams):
    p = two_teams
    vaults = p.inventory / "vaults"
    (vaults / "dev.age").write_bytes((vaults / "prod.age").read_bytes())
    seen = p.root / "seen"
    p.write(
        "tasks/dev/leak.yaml",
        "name: leak\nmachines: [dev-box]\n"
        "env: {DB_PASSWORD: {vault: DB_PASSWORD}}\n"
        f'command: printf %s "$DB_PASSWORD" > "{seen}"\n',
    )
    result = p.run("--once", "--format", "json", "--identity", str(p.host_key), code=1)
    assert not seen.exists()
    [run] = result.json()["runs"]
    assert run["status"] == "failed"
    assert "team 'prod'" in run["error"] and "team 'dev'" in run["error"]
    for command in (["vault", "get", "dev", "DB_PASSWORD"], ["vault", "list", "dev"]):
        refused = p.run(*command, "--identity", str(p.host_key), code=2)
        assert PROD_PASSWORD not in refused.out + refused.err
        assert "'prod'" in refused.err and "'dev'" in refused.err
    # and nobody can stamp prod's secrets as dev's by rewriting it
    p.run("vault", "rekey", "dev", "--identity", str(p.host_key), code=2)
    p.run("vault", "set", "dev", "X", "y", "--identity", str(p.host_key), code=2)


def test_the_team_name_is_inside_the_standard_age_file_and_hidden_from_vault_list(two_teams):
    import subprocess

    from tests.support.integration import require_binary

    p = two_teams
    plain = subprocess.run(
        [
            require_binary("age"),
            "-d",
            "-i",
            str(p.host_key),
            str(p.inventory / "vaults" / "prod.age"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert plain.splitlines()[0] == "_team: prod"
    assert (
        p.run("vault", "list", "prod", "--identity", str(p.host_key), code=0).out == "DB_PASSWORD\n"
    )
    refused = p.run("vault", "set", "prod", "_team", "dev", "--identity", str(p.host_key), code=2)
    assert "reserved" in refused.err


def test_a_vault_written_before_vaults_named_their_team_is_refused_until_rekeyed(two_teams):
    import subprocess

    from tests.support.integration import require_binary

    p = two_teams
    legacy = p.inventory / "vaults" / "dev.age"
    public = p.run("vault", "list", "dev", "--identity", str(p.host_key), code=0)  # named: ok
    host_public = (p.root / "reconciler.key").read_text().split("public key: ")[1].split()[0]
    subprocess.run(
        [require_binary("age"), "-a", "-r", host_public, "-o", str(legacy)],
        input="DB_PASSWORD: old-dev-password\n",
        text=True,
        check=True,
    )
    refused = p.run("vault", "get", "dev", "DB_PASSWORD", "--identity", str(p.host_key), code=2)
    assert "names no team" in refused.err and "reconcile vault rekey dev" in refused.err
    p.run("vault", "rekey", "dev", "--identity", str(p.host_key), code=0)
    assert (
        p.run("vault", "get", "dev", "DB_PASSWORD", "--identity", str(p.host_key), code=0).out
        == "old-dev-password\n"
    )
    del public


def test_diff_of_a_commit_that_copies_the_prod_vault_over_the_dev_vault_is_refused(two_teams):
    import subprocess

    p = two_teams

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=p.root,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    git("add", "inventory")
    git("commit", "-q", "-m", "base")
    vaults = p.inventory / "vaults"
    (vaults / "dev.age").write_bytes((vaults / "prod.age").read_bytes())
    git("commit", "-q", "-am", "copy")
    result = p.run("diff", "HEAD~1", "HEAD", "--identity", str(p.host_key), code=2)
    assert "team 'prod'" in result.err and "team 'dev'" in result.err
    assert PROD_PASSWORD not in result.out + result.err
