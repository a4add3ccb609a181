"""Team vaults and secrets in tasks, through the real command: keys, set/get/edit/rekey,
resolution at run time, and the secret's bytes absent from every sink."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from tests.support.cli import spawn
from tests.support.vault_project import SECRET, keygen
from tests.support.waiting import wait_until


def test_keygen_writes_a_private_identity_file_and_prints_the_public_key(project):
    key, public = keygen(project, "k")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text()
    assert f"# public key: {public}" in text and "AGE-SECRET-KEY-1" in text
    assert public.startswith("age1")
    project.run("vault", "keygen", "-o", str(key), code=2)  # never overwrites a key


def test_set_get_list_unset_round_trip_and_unchanged_set_leaves_file_alone(vaulted):
    p = vaulted
    vault = p.inventory / "vaults" / "ops.age"
    assert vault.read_text().startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    assert SECRET not in vault.read_text()
    ident = ("--identity", str(p.alice))
    assert p.run("vault", "get", "ops", "DB_PASSWORD", *ident, code=0).out == SECRET + "\n"
    before = vault.read_bytes()
    result = p.run("vault", "set", "ops", "DB_PASSWORD", "-", *ident, code=0, input=SECRET)
    assert "unchanged" in result.err and vault.read_bytes() == before
    p.run("vault", "set", "ops", "API_TOKEN", "-", *ident, code=0, input="tok-0987654\n")
    assert p.run("vault", "list", "ops", *ident, code=0).out.split() == ["API_TOKEN", "DB_PASSWORD"]
    p.run("vault", "unset", "ops", "API_TOKEN", *ident, code=0)
    assert p.run("vault", "list", "ops", "--format", "json", *ident, code=0).json() == [
        "DB_PASSWORD"
    ]


def test_viewer_cannot_decrypt_and_no_identity_is_a_clear_error(vaulted):
    result = vaulted.run(
        "vault", "get", "ops", "DB_PASSWORD", "--identity", str(vaulted.bob), code=2
    )
    assert "none of your identities" in result.err and result.out == ""
    vaulted.run("vault", "get", "ops", "DB_PASSWORD", code=2)


def test_tampered_vault_is_exit_2_with_no_plaintext(vaulted):
    vault = vaulted.inventory / "vaults" / "ops.age"
    lines = vault.read_text().splitlines()
    body = lines[-2]
    lines[-2] = body[:-3] + ("A" if body[-3] != "A" else "B") + body[-2:]
    vault.write_text("\n".join(lines) + "\n")
    result = vaulted.run(
        "vault", "get", "ops", "DB_PASSWORD", "--identity", str(vaulted.alice), code=2
    )
    assert result.out == "" and SECRET not in result.err and "Traceback" not in result.err


def test_secret_reaches_the_command_and_is_masked_in_state_logs_and_json(vaulted):
    p = vaulted
    p.task(
        "use",
        "env: {DB_PASSWORD: {vault: DB_PASSWORD}}\n"
        'command: echo "pw=$DB_PASSWORD"; printf %s "$DB_PASSWORD" | base64; '
        f'printf %s "$DB_PASSWORD" > "{p.root / "seen"}"\n',
    )
    result = p.run("--once", "-vv", "--format", "json", "--identity", str(p.alice), code=0)
    assert (p.root / "seen").read_text() == SECRET  # the command got the real value
    run_id = result.json()["runs"][0]["id"]
    shown = p.run("queue", "show", str(run_id), "--format", "json", code=0).json()
    assert shown["output"].splitlines() == ["pw=***", "***"]
    for text in (result.out, result.err, shown["output"]):
        assert SECRET not in text
    for db_file in p.state.parent.glob("state.db*"):
        assert SECRET.encode() not in db_file.read_bytes(), db_file


def test_secret_is_never_in_any_process_argument_list(vaulted):
    p = vaulted
    p.task(
        "sleepy",
        "env: {DB_PASSWORD: {vault: DB_PASSWORD}}\n"
        f'command: echo $$ >> "{p.ledger}"; {p.record("started")}; sleep 30\n',
    )
    proc = spawn("--once", "-q", "--identity", str(p.alice), cwd=p.root)
    try:
        wait_until(lambda: "started" in p.ledger_lines(), timeout=30, message="task started")
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert SECRET.encode() not in cmdline.read_bytes(), cmdline
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    finally:
        proc.kill()
        proc.wait(timeout=10)
        try:
            os.killpg(int(p.ledger_lines()[0]), signal.SIGKILL)  # the task's own group
        except (ProcessLookupError, IndexError, ValueError):
            pass


def test_missing_key_fails_only_the_runs_that_need_it(vaulted):
    p = vaulted
    p.task("good", f"command: {p.record('good')}\n")
    p.task("bad", "env: {X: {vault: NOPE}}\ncommand: echo never\n")
    data = p.run("--once", "--format", "json", "--identity", str(p.alice), code=1).json()
    by_task = {r["task"]: r for r in data["runs"]}
    assert by_task["ops/good"]["status"] == "succeeded"
    assert by_task["ops/bad"]["status"] == "failed" and by_task["ops/bad"]["attempt"] == 1
    assert "secret 'NOPE' is not in the vault of team 'ops'" in by_task["ops/bad"]["error"]


def test_plan_needs_no_identity_and_a_run_without_one_fails_clearly(vaulted):
    p = vaulted
    p.task("use", "env: {DB_PASSWORD: {vault: DB_PASSWORD}}\ncommand: echo hi\n")
    p.run("plan", code=0)
    data = p.run("--once", "--format", "json", code=1).json()
    assert "no identity" in data["runs"][0]["error"]


def test_validate_checks_references_by_name_when_an_identity_is_given(vaulted):
    p = vaulted
    p.task("use", "env: {DB: {vault: DB_PASSWROD}}\ncommand: echo hi\n")
    p.run("validate", code=0)  # no identity: names are not checked
    result = p.run("validate", "--identity", str(p.alice), code=2)
    assert "inventory/tasks/ops/use.yaml:3:" in result.err
    assert "did you mean 'DB_PASSWORD'" in result.err


def test_edit_saves_through_a_private_file_that_is_removed(vaulted, tmp_path):
    p = vaulted
    log = tmp_path / "editor.log"
    editor = tmp_path / "editor.sh"
    editor.write_text(
        f'#!/bin/sh\nstat -c %a "$1" > "{log}"\necho "$1" >> "{log}"\n'
        'printf \'NEW_KEY: "fresh-value"\\n\' >> "$1"\n'
    )
    editor.chmod(0o755)
    p.run("vault", "edit", "ops", "--identity", str(p.alice), code=0, env={"EDITOR": str(editor)})
    mode, path = log.read_text().split()
    assert mode == "600" and not Path(path).exists()
    assert (
        p.run("vault", "get", "ops", "NEW_KEY", "--identity", str(p.alice)).out == "fresh-value\n"
    )


def test_failed_editor_leaves_vault_and_no_plaintext_behind(vaulted, tmp_path):
    p = vaulted
    vault = p.inventory / "vaults" / "ops.age"
    before = vault.read_bytes()
    editor = tmp_path / "fail.sh"
    editor.write_text(f'#!/bin/sh\necho "$1" > "{tmp_path / "path"}"\nexit 1\n')
    editor.chmod(0o755)
    result = p.run(
        "vault", "edit", "ops", "--identity", str(p.alice), code=2, env={"EDITOR": str(editor)}
    )
    assert "unchanged" in result.err
    assert vault.read_bytes() == before
    assert not Path((tmp_path / "path").read_text().strip()).exists()


def test_rekey_after_membership_change_lets_the_new_operator_decrypt(vaulted):
    p = vaulted
    carol_key, carol = keygen(p, "carol")
    team = (p.inventory / "teams" / "ops.yaml").read_text()
    p.write("teams/ops.yaml", team + f"  - {{name: carol, role: operator, age: {carol}}}\n")
    p.run("vault", "get", "ops", "DB_PASSWORD", "--identity", str(carol_key), code=2)
    p.run("vault", "rekey", "ops", "--identity", str(p.alice), code=0)
    assert (
        p.run("vault", "get", "ops", "DB_PASSWORD", "--identity", str(carol_key), code=0).out
        == SECRET + "\n"
    )


def _encrypt_to(project, key_public: str, plaintext: str, *flags: str) -> Path:
    out = project.root / "file.age"
    project.run(
        "vault", "encrypt", "-r", key_public, *flags, "-o", str(out), code=0, input=plaintext
    )
    return out


@pytest.mark.parametrize("damage", ["tamper", "truncate", "wrong-key"])
def test_decrypt_of_a_damaged_file_or_with_a_wrong_key_is_exit_2_with_nothing_on_stdout(
    project, damage
):
    key, public = keygen(project, "k")
    other, _ = keygen(project, "other")
    plaintext = "line one of the plaintext\n" * 5000  # several STREAM chunks
    encrypted = _encrypt_to(project, public, plaintext)
    data = bytearray(encrypted.read_bytes())
    if damage == "tamper":
        data[-100] ^= 0x01  # in the last chunk: earlier chunks would decrypt fine
    elif damage == "truncate":
        del data[-1000:]
    encrypted.write_bytes(bytes(data))
    identity = other if damage == "wrong-key" else key
    result = project.run("vault", "decrypt", "-i", str(identity), str(encrypted), code=2)
    assert result.out == "" and "line one" not in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_passphrase_encryption_round_trip_takes_the_passphrase_from_the_environment(project):
    out = project.root / "p.age"
    env = {"RECONCILE_PASSPHRASE": "correct horse battery"}
    project.run("vault", "encrypt", "-p", "-a", "-o", str(out), code=0, input="hello\n", env=env)
    assert out.read_text().startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    assert project.run("vault", "decrypt", str(out), code=0, env=env).out == "hello\n"
    wrong = project.run("vault", "decrypt", str(out), code=2, env={"RECONCILE_PASSPHRASE": "wrong"})
    assert wrong.out == ""


def test_files_from_our_cli_and_the_age_binary_read_each_other(project):
    from tests.support.integration import require_binary

    age_bin = require_binary("age")
    import subprocess

    key, public = keygen(project, "k")
    ours = _encrypt_to(project, public, "from reconciler\n", "-a")
    decrypted = subprocess.run(
        [age_bin, "-d", "-i", str(key), str(ours)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert decrypted.stdout == "from reconciler\n"
    theirs = project.root / "theirs.age"
    subprocess.run(
        [age_bin, "-r", public, "-o", str(theirs)], input=b"from age\n", timeout=30, check=True
    )
    assert project.run("vault", "decrypt", "-i", str(key), str(theirs), code=0).out == "from age\n"
