"""Integration prerequisites: skip on a user's machine, fail in CI.

`.ci/run` sets RECONCILER_REQUIRE_INTEGRATION=1: there a missing `sshd`, `age` or PostgreSQL
fails the run instead of skipping, so nothing integration-level is silently left out.
"""

from __future__ import annotations

import os
import shutil

import pytest


def integration_required() -> bool:
    return os.environ.get("RECONCILER_REQUIRE_INTEGRATION") == "1"


def missing(reason: str) -> None:
    """Skip the test with `reason`, or fail it when integration tests are required."""
    if integration_required():
        pytest.fail(f"{reason} (RECONCILER_REQUIRE_INTEGRATION=1: integration tests may not skip)")
    pytest.skip(reason)


def require_binary(name: str, *candidates: str) -> str:
    """The path of an executable (`name` on PATH or one of `candidates`), else skip/fail."""
    for path in (shutil.which(name), *candidates):
        if path and os.access(path, os.X_OK):
            return path
    missing(f"'{name}' is not installed")
    raise AssertionError("unreachable")
