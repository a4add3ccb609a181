"""Files named with `-o`: a symlink is written through (the link stays), a regular file keeps
its mode, a new plaintext is private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from tests.support.cli import clean_environment
from tests.support.vault_project import keygen


def test_an_audit_export_through_a_symlink_writes_its_target_and_keeps_the_link(project):
    project.task("hello", "command: 'true'\n")
    project.run("--once", "-q", code=0)
    target = project.root / "exports" / "audit.jsonl"
    target.parent.mkdir()
    link = project.root / "latest.jsonl"
    link.symlink_to(target)
    project.run("audit", "export", "-o", str(link), code=0)
    assert stat.S_ISLNK(os.lstat(link).st_mode)
    assert b'"head"' in target.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_decrypted_file_is_created_private(project):
    key, public = keygen(project, "k")
    (project.root / "p.txt").write_text("secret\n")
    project.run("vault", "encrypt", "-r", public, "-o", "p.age", "p.txt", code=0)
    project.run("vault", "decrypt", "-i", str(key), "-o", "out.txt", "p.age", code=0)
    out = project.root / "out.txt"
    assert out.read_text() == "secret\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_decrypted_file_replacing_another_keeps_its_mode(project):
    key, public = keygen(project, "k")
    (project.root / "p.txt").write_text("secret\n")
    project.run("vault", "encrypt", "-r", public, "-o", "p.age", "p.txt", code=0)
    out = project.root / "out.txt"
    out.write_text("old\n")
    out.chmod(0o640)
    project.run("vault", "decrypt", "-i", str(key), "-o", "out.txt", "p.age", code=0)
    assert out.read_text() == "secret\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_codeowners_to_a_full_disk_is_a_write_failure_naming_it(project):
    project.write("teams/ops.yaml", "name: ops\nmembers: [{name: alice, role: admin}]\n")
    result = project.run("codeowners", "-o", "/dev/full", code=3)
    assert "bug" not in result.err and "cannot write /dev/full" in result.err, result.err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_command_output_to_a_full_stdout_is_a_write_failure_not_a_bug(project):
    project.write("teams/ops.yaml", "name: ops\nmembers: [{name: alice, role: admin}]\n")
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", "codeowners"],
            cwd=project.root,
            env=clean_environment(None),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert result.returncode == 3, result.stderr
    assert "bug" not in result.stderr and "No space left" in result.stderr, result.stderr
