"""Helpers of the review test modules: a git command with a fixed identity, and stdout read
as exactly one JSON document (the contract of every command under --format json)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.cli import Result


def git(root: Path, *args: str) -> str:
    """Run git in `root` with a fixed identity, no signing and `main` as the first branch."""
    return subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def one_document(result: Result) -> dict:
    """stdout as exactly one JSON document, and no traceback on stderr."""
    assert "Traceback" not in result.err, result.err
    try:
        return json.loads(result.out)
    except ValueError as exc:
        raise AssertionError(
            f"exit {result.code}: stdout is not one JSON document ({exc}): "
            f"{result.out[-300:]!r}\nstderr: {result.err}"
        ) from None
