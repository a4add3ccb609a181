"""Third hostile review of issue 19, aimed at the second review's last fixes: store-URL
password masking, signals (SIGTERM, SIGHUP) at other moments, odd names in `codeowners`.
Through the CLI, in scratch projects, with real git, a real age vault and real signals.

Each defect found is a test marked `xfail(strict=True)` whose reason names it and where its
cause seems to be: it passes while the defect stands and turns red once it is fixed (then drop
the mark). None needs PostgreSQL: an unreachable store is a closed port on 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.support.cli import Result, clean_environment, reaped, reconcile
from tests.support.review import git, one_document
from tests.support.vault_project import SECRET
from tests.support.waiting import wait_until


def _editor(tmp_path: Path, name: str, body: str) -> Path:
    """An editor script that first notes the folder of the file it edits."""
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\ndirname "$1" > "{tmp_path}/folder"\n{body}')
    script.chmod(0o755)
    return script


def _edit_folder(tmp_path: Path) -> Path:
    return Path((tmp_path / "folder").read_text().strip())


def _remove(folder: Path) -> None:
    """A plaintext folder the defect left behind goes, whatever the test's outcome."""
    if folder.is_dir():
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()


# =============================================================================================
# vault edit: an editor's own files beside the plaintext (the OSError guard of _edit_file)
# =============================================================================================


def test_an_editor_backup_file_neither_loses_the_edit_nor_leaves_the_plaintext(vaulted, tmp_path):
    editor = _editor(
        tmp_path,
        "backup-editor",
        'cp "$1" "$1~"\nprintf "_team: ops\\nDB_PASSWORD: changed-Value-99\\n" > "$1"\n',
    )
    try:
        edited = vaulted.run(
            "vault",
            "edit",
            "ops",
            "--identity",
            str(vaulted.alice),
            env={"EDITOR": str(editor), "VISUAL": ""},
        )
        folder = _edit_folder(tmp_path)
        assert not folder.exists(), (edited, sorted(p.name for p in folder.iterdir()))
        assert edited.code == 0, edited
        got = vaulted.run("vault", "get", "ops", "DB_PASSWORD", "--identity", str(vaulted.alice))
        assert got.out.strip() == "changed-Value-99", got
    finally:
        _remove(_edit_folder(tmp_path))


def test_sigterm_during_vault_edit_with_a_swap_file_is_stopped_and_leaves_nothing(
    vaulted, tmp_path
):
    editor = _editor(
        tmp_path,
        "swap-editor",
        f'cp "$1" "$(dirname "$1")/.vault.yaml.swp"\ntouch "{tmp_path}/editing"\nexec sleep 600\n',
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "vault", "edit", "ops"]
        + ["--identity", str(vaulted.alice), "--format", "json"],
        cwd=vaulted.root,
        env=clean_environment({"EDITOR": str(editor), "VISUAL": ""}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with reaped(proc):
            wait_until(lambda: (tmp_path / "editing").exists(), timeout=60, message="the editor")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        folder = _edit_folder(tmp_path)
        assert not folder.exists(), sorted(p.name for p in folder.iterdir())
        document = one_document(Result(proc.returncode, out, err))
        assert proc.returncode == 143 and document["kind"] == "stopped", (proc.returncode, err)
        assert SECRET not in out + err
    finally:
        _remove(_edit_folder(tmp_path))


# =============================================================================================
# Store URLs: other shapes of a password
# =============================================================================================


@pytest.mark.parametrize(
    "url",
    [
        "host=127.0.0.1 port=1 user=admin password=Sup3rSecret-DSN dbname=reconciler",
        " postgresql://admin:Sup3rSecret-SP@127.0.0.1:1/reconciler",
        "postgresql:/admin:Sup3rSecret-SL@127.0.0.1:1/reconciler",
    ],
    ids=["key-value", "leading-space", "one-slash"],
)
def test_a_store_url_without_its_scheme_is_not_a_sqlite_path_named_with_its_password(project, url):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--state", url, "--once", "--format", "json")
    named = [str(p) for p in project.root.rglob("*Sup3rSecret*")]
    assert not named, named
    assert result.code in (2, 3), result
    assert "Sup3rSecret" not in result.out + result.err, result


def test_a_password_with_a_raw_at_sign_does_not_show_its_tail(project):
    url = "postgresql://admin:Sup3r@Secret-Tail@127.0.0.1:1/reconciler"
    result = project.run("--state", url, "status", "--format", "json")
    one_document(result)
    assert result.code in (2, 3), result
    assert "Secret-Tail" not in result.out + result.err, result.err


# =============================================================================================
# codeowners: a control character in the inventory folder's own name
# =============================================================================================


def test_codeowners_for_an_inventory_folder_with_a_newline_writes_no_broken_rule(tmp_path):
    root = tmp_path / "repo"
    inventory = root / "in\nv"
    files = {
        "teams/all.yaml": "teams:\n  - {name: prod, members: [{name: alice, role: admin}]}\n"
        "  - {name: dev, members: [{name: carol, role: admin}, {name: dan, role: operator}]}\n",
        "machines/d1.yaml": "{name: d1, team: dev, transport: local, user: nobody}\n",
        "tasks/dev/x.yaml": "{name: x, machines: [d1], command: 'true'}\n",
    }
    for relative, text in files.items():
        (inventory / relative).parent.mkdir(parents=True, exist_ok=True)
        (inventory / relative).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "inventory")
    reconcile("--inventory", "in\nv", "validate", cwd=root, check_code=0)
    written = reconcile("--inventory", "in\nv", "codeowners", cwd=root)
    if written.code == 2:
        return  # refused with its reason: what a fix may do
    assert written.code == 0, written
    for line in written.out.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pattern, *owners = line.split()
        assert pattern.startswith(("/", "*")), (line, written.out)
        assert owners and all(o.startswith("@") for o in owners), (line, written.out)


# =============================================================================================
# SIGTERM while a JSON document is half written to a slow reader
# =============================================================================================


def _pipe_bytes(fd: int) -> int:
    buffered = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buffered)
    return int.from_bytes(buffered, sys.byteorder)


def test_sigterm_while_the_json_document_is_being_written_leaves_one_document(project):
    for number in range(1500):
        project.task(f"t{number}", "command: 'true'\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "plan", "--format", "json"],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with reaped(proc):
        # The command blocks once the pipe is full (64 KiB on Linux) and nobody reads.
        wait_until(
            lambda: _pipe_bytes(proc.stdout.fileno()) >= 65536,
            timeout=120,
            message="stdout's pipe to fill",
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    result = Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    # A fix may finish the document it started (the plan, exit 143 or 0) or end it cleanly;
    # what it may not do is leave half of one.
    assert proc.returncode in (0, 143), result.err
    one_document(result)


@pytest.mark.parametrize(
    "url",
    [
        '"postgresql://admin:Sup3rSecret-Q@127.0.0.1:1/reconciler"',
        "postgresql//admin:Sup3rSecret-S@127.0.0.1:1/reconciler",
        "keepalives=1 host=127.0.0.1 port=1 user=admin password=Sup3rSecret-K",
    ],
    ids=["double-quoted", "colon-missing", "other-keyword-first"],
)
def test_a_store_url_in_another_wrong_shape_is_not_a_path_named_with_its_password(project, url):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--state", url, "--once", "--format", "json")
    named = [str(p) for p in project.root.rglob("*Sup3rSecret*")]
    assert not named, named
    assert result.code in (2, 3), result
    assert "Sup3rSecret" not in result.out + result.err, result


def test_sigint_while_the_json_document_is_being_written_leaves_one_document(project):
    for number in range(1500):
        project.task(f"t{number}", "command: 'true'\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "plan", "--format", "json"],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with reaped(proc):
        wait_until(
            lambda: _pipe_bytes(proc.stdout.fileno()) >= 65536,
            timeout=120,
            message="stdout's pipe to fill",
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    result = Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    assert proc.returncode in (0, 130), result.err
    one_document(result)


@pytest.mark.parametrize(
    "password", ["Sup3r/Secret+Z9", "Sup3rSecret+Z9/"], ids=["slash-inside", "slash-last"]
)
def test_a_password_with_a_raw_slash_never_shows(project, password):
    url = f"postgresql://admin:{password}@127.0.0.1:1/reconciler"
    result = project.run("--state", url, "status", "--format", "json")
    one_document(result)
    assert result.code in (2, 3), result
    assert "Secret+Z9" not in result.out + result.err, result.err
