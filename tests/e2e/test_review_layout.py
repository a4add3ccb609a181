"""Review of issue 14 (a repository that stands alone, a layout that shows the architecture):
what a new user or a tired operator meets through `reconcile` itself. Each test is a defect
found in review, marked xfail(strict=True) until it is fixed."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import clean_environment, spawn
from tests.support.vault_project import SECRET, keygen
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PLAINTEXT = b"review-plaintext-line\n" * 200_000  # 4.4 MB: many 64 KiB age chunks


def _encrypted(project, name: str) -> tuple[Path, Path]:
    """An identity and a binary age file of PLAINTEXT encrypted to it, both in the project."""
    key, public = keygen(project, "review")
    plain = project.root / f"{name}.txt"
    plain.write_bytes(PLAINTEXT)
    sealed = project.root / f"{name}.age"
    project.run("vault", "encrypt", "-r", public, "-o", str(sealed), str(plain), code=0)
    plain.unlink()
    return key, sealed


def test_a_worker_refusing_an_sqlite_store_creates_no_store(project):
    result = project.run("worker", "--state", "sqlite:///typo.db", code=2)
    assert "PostgreSQL" in result.err
    assert not (project.root / "typo.db").exists()


@pytest.mark.parametrize("source", ["--state", "RECONCILE_STATE", "reconciler.yaml"])
def test_a_malformed_state_url_names_where_it_came_from(project, source):
    args, env = ["plan"], {}
    if source == "--state":
        args += ["--state", "junk://x"]
    elif source == "RECONCILE_STATE":
        env["RECONCILE_STATE"] = "junk://x"
    else:
        project.write("reconciler.yaml", "state: junk://x\n")
    result = project.run(*args, env=env, code=2)
    assert source in result.err, result.err


def test_decrypting_a_file_onto_itself_is_refused_and_leaves_it_encrypted(project):
    key, sealed = _encrypted(project, "vault")
    before = sealed.read_bytes()
    result = project.run("vault", "decrypt", "-i", str(key), "-o", str(sealed), str(sealed))
    assert result.code == 2, result.err
    assert sealed.read_bytes() == before


def test_encrypting_a_file_onto_itself_is_refused_and_leaves_it_as_it_was(project):
    _, public = keygen(project, "someone-else")
    plain = project.root / "notes.txt"
    plain.write_bytes(b"only copy\n")
    result = project.run("vault", "encrypt", "-r", public, "-o", str(plain), str(plain))
    assert result.code == 2, result.err
    assert plain.read_bytes() == b"only copy\n"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_decrypt_stopped_mid_stream_leaves_no_plaintext_beside_its_output(project, stop):
    key, sealed = _encrypted(project, "big")
    out_dir = project.root / "out"
    out_dir.mkdir()
    ciphertext = sealed.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "vault", "decrypt", "-i", str(key)]
        + ["-o", str(out_dir / "plain.txt")],
        cwd=project.root,
        env=clean_environment(None),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Half the ciphertext, then nothing: the command is mid-stream, plaintext written so far.
        proc.stdin.write(ciphertext[: len(ciphertext) // 2])
        proc.stdin.flush()
        wait_until(
            lambda: any(p.stat().st_size > 0 for p in out_dir.iterdir()),
            timeout=30,
            message="decrypt to start writing",
        )
        proc.send_signal(stop)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    left = sorted(p.name for p in out_dir.iterdir())
    assert left == [], f"left behind after {stop.name}: {left}"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_vault_edit_stopped_by_a_signal_leaves_no_decrypted_copy(vaulted, stop):
    p = vaulted
    told = p.root / "editor-told.txt"
    editor = p.root / "editor.sh"
    # The editor says which file it was given and its pid, then waits like a person would.
    editor.write_text(
        f'#!/bin/sh\necho "$$ $1" > "{told}.tmp" && mv "{told}.tmp" "{told}"\nexec sleep 300\n'
    )
    editor.chmod(0o755)
    proc = spawn(
        "vault", "edit", "ops", "--identity", str(p.alice), cwd=p.root, env={"VISUAL": str(editor)}
    )
    editor_pid = None
    try:
        told_text = wait_until(
            lambda: told.exists() and told.read_text(), timeout=30, message="the editor"
        )
        editor_pid, decrypted = told_text.split(maxsplit=1)
        decrypted = Path(decrypted.strip())
        assert SECRET in decrypted.read_text()
        proc.send_signal(stop)
        # wait, not communicate: the editor still holds the pipes until it is killed below.
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if editor_pid is not None:
            try:
                os.kill(int(editor_pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()
    left = decrypted.exists()
    if left:  # do not leave the secret on the test machine either
        decrypted.unlink()
        decrypted.parent.rmdir()
    assert not left, f"{decrypted} survived {stop.name} (exit {proc.returncode})"


def test_a_full_disk_is_reported_as_a_write_failure_not_as_a_bug(project):
    key, sealed = _encrypted(project, "vault")
    result = project.run("vault", "decrypt", "-i", str(key), "-o", "/dev/full", str(sealed))
    assert result.code == 3, result.err
    assert "bug" not in result.err and "/dev/full" in result.err, result.err


@pytest.mark.parametrize("action", ["decrypt", "encrypt"])
def test_an_output_that_is_a_directory_is_a_usage_error(project, action):
    key, sealed = _encrypted(project, "vault")
    (project.root / "outdir").mkdir()
    if action == "decrypt":
        args = ["vault", "decrypt", "-i", str(key), "-o", "outdir", str(sealed)]
    else:
        public = key.read_text().split("# public key: ")[1].split()[0]
        (project.root / "p.txt").write_text("hello\n")
        args = ["vault", "encrypt", "-r", public, "-o", "outdir", "p.txt"]
    result = project.run(*args)
    assert result.code == 2, result.err
    assert "bug" not in result.err and "outdir" in result.err, result.err


@pytest.mark.parametrize("command", ["keygen", "encrypt", "decrypt", "codeowners"])
def test_a_json_format_a_command_cannot_write_is_refused(project, command):
    key, public = keygen(project, "k")
    (project.root / "p.txt").write_text("hello\n")
    if command == "keygen":
        args = ["vault", "keygen", "--format", "json"]
    elif command == "encrypt":
        args = ["vault", "encrypt", "-a", "-r", public, "p.txt", "--format", "json"]
    elif command == "decrypt":
        project.run("vault", "encrypt", "-a", "-r", public, "-o", "p.age", "p.txt", code=0)
        args = ["vault", "decrypt", "-i", str(key), "p.age", "--format", "json"]
    else:
        project.write("teams/ops.yaml", "name: ops\nmembers: [{name: alice, role: admin}]\n")
        args = ["--format", "json", "codeowners"]
    result = project.run(*args)
    assert result.code == 2, f"exit {result.code}, stdout starts {result.out[:60]!r}"


@pytest.mark.parametrize("command", ["keygen", "set", "unset", "rekey", "codeowners"])
def test_json_logs_leave_no_plain_text_line_on_stderr(vaulted, command):
    p = vaulted
    ident = ["--identity", str(p.alice)]
    args = {
        "keygen": ["vault", "keygen", "-o", str(p.root / "new.key")],
        "set": ["vault", "set", "ops", "API_TOKEN", "-", *ident],
        "unset": ["vault", "unset", "ops", "DB_PASSWORD", *ident],
        "rekey": ["vault", "rekey", "ops", *ident],
        "codeowners": ["codeowners", "-o", str(p.root / "CODEOWNERS")],
    }[command]
    result = p.run("--log-format", "json", *args, input="tok-0987654\n", code=0)
    plain = [line for line in result.err.splitlines() if line and not line.startswith("{")]
    assert plain == [], plain


def test_an_audit_export_to_a_pipe_writes_into_it_and_leaves_it_a_pipe(project):
    project.task("hello", "command: 'true'\n")
    project.run("--once", "-q", code=0)
    fifo = project.root / "export.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that the export can open it
    try:
        result = project.run("audit", "export", "-o", str(fifo))
        received = b""
        while chunk := _read_available(reader):
            received += chunk
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), f"{fifo} is no longer a pipe"
    assert result.code == 0, result.err
    assert b'"head"' in received, "the reader of the pipe got no checkpoint"


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def _section(command: str) -> str:
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    start = text.index(f"## `reconcile {command}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


@pytest.mark.parametrize("command", ["audit", "codeowners"])
def test_every_long_option_of_help_is_in_the_commands_section(command):
    assert re.search(r"(?<![\w-])--output(?![\w-])", _section(command))


def test_the_readme_schema_path_resolves_from_a_task_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    path = re.search(r"\$schema=([^\s`]+task\.schema\.json)", readme).group(1)
    task_file = next((ROOT / "inventory" / "tasks").glob("*/*.yaml"))
    assert os.path.exists(task_file.parent / path), f"{path} from {task_file.parent}"
