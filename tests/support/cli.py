"""Running `reconcile` as a user would: a subprocess with its own working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def clean_environment(extra: dict | None) -> dict:
    """Our environment without the user's RECONCILE_* settings, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    return {**base, **(extra or {})}


def reconcile(
    *args: str,
    cwd: Path,
    env: dict | None = None,
    timeout: float = 120,
    check_code: int | None = None,
    input: str | None = None,
) -> Result:
    """Run `python -m reconciler ARGS` in `cwd`; assert the exit code when given."""
    full_env = clean_environment(env)
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check_code is not None:
        assert result.code == check_code, (
            f"exit {result.code}, expected {check_code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
        )
    return result


def spawn(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `reconcile ARGS` in the background (for kill -9 and concurrency tests)."""
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=clean_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`with reaped(spawn(...)) as p:` kills `p` on the way out if it is still running, so a
    failed assertion never leaves a pass behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
