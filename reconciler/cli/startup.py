"""Start-up: take the reconciler's identity (and the HTTP listener's token and the webhook's
secret, adapters/host_secrets.py) out of its argument list and environment.

Why a re-exec: any process of the same OS user (a local task of a machine without `user:`)
can read /proc/PID/environ and /proc/PID/cmdline of the reconciler, and the kernel shows there
the environment block and the arguments the process was *started* with: `os.environ.pop` or
`unsetenv` do not change them. So when an identity is configured (`--identity PATH`,
`RECONCILE_IDENTITY_FILE`, `RECONCILE_IDENTITY`), the process executes itself again once (same
pid, same interpreter and entry point) without them, and hands them over through a pipe that
the new process reads and closes before anything else runs. Its children (tasks, `sh`, git)
then inherit an environment that never held the identity.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, NoReturn

# Only names: the vault (and with it the loader, jsonschema, croniter) is imported after the
# re-exec, so a start with an identity pays for those imports once, not twice.
from reconciler.adapters.host_secrets import HIDDEN_VARS
from reconciler.adapters.vault.identity_names import (
    IDENTITY_FILE_VAR,
    IDENTITY_FLAG,
    IDENTITY_KEY_VAR,
)
from reconciler.core.errors import UsageError

if TYPE_CHECKING:
    from reconciler.adapters.vault.secrets import StartupIdentity

# The number of the inherited pipe's read end; only a number, harmless to leave visible.
HANDOVER_VAR = "RECONCILE_HANDOVER_FD"
# The payload is written before exec, with no reader yet: it must fit in the pipe's buffer.
PIPE_CAPACITY = 1 << 20
# argparse accepts unambiguous abbreviations of long options; `--ide` is the shortest one
# that names --identity and nothing else.
SHORTEST_ABBREVIATION = len("--ide")


def hide_identity(argv: Sequence[str], environ: MutableMapping[str, str]) -> None:
    """At a real start (`argv` = sys.argv[1:]): adopt an identity handed over by the previous
    image of this process, or, when the identity is in argv or the environment, re-execute
    without it (does not return). Returns when there is nothing to hide."""
    if HANDOVER_VAR in environ:
        from reconciler.adapters import host_secrets
        from reconciler.adapters.vault.secrets import adopt_startup_identity

        identity, hidden = _receive(environ.pop(HANDOVER_VAR))
        adopt_startup_identity(identity)
        host_secrets.adopt(hidden)
        return
    args, flag_path = scrub_identity_args(argv)
    hidden = {name: environ[name] for name in HIDDEN_VARS if name in environ}
    if (
        flag_path is None
        and IDENTITY_FILE_VAR not in environ
        and IDENTITY_KEY_VAR not in environ
        and not hidden
    ):
        return
    _restart(
        args,
        {
            "file": flag_path or environ.get(IDENTITY_FILE_VAR) or None,
            "key_text": environ.get(IDENTITY_KEY_VAR) or None,
            "hidden": hidden,
        },
        environ,
    )


def scrub_identity_args(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """`argv` without `--identity PATH`, `--identity=PATH` (or an abbreviation argparse would
    take for it), and the path argparse would use (the last one given), or None."""
    kept: list[str] = []
    path: str | None = None
    tokens = iter(argv)
    for token in tokens:
        if token == "--":  # everything after it is positional
            kept += ["--", *tokens]
            break
        name, equals, value = token.partition("=")
        if not _names_identity_flag(name):
            kept.append(token)
        elif equals:
            path = value
        else:
            path = next(tokens, None)
    return kept, path


def _names_identity_flag(name: str) -> bool:
    return len(name) >= SHORTEST_ABBREVIATION and IDENTITY_FLAG.startswith(name)


def _restart(
    args: list[str], identity: dict[str, str | None], environ: MutableMapping[str, str]
) -> NoReturn:
    """Execute this program again with `args`, an environment without the identity, and the
    identity (`file`, `key_text`) in an inherited pipe."""
    payload = json.dumps(identity).encode()
    read_end = _pipe_holding(payload)
    taken = (IDENTITY_FILE_VAR, IDENTITY_KEY_VAR, *HIDDEN_VARS)
    env = {k: v for k, v in environ.items() if k not in taken}
    env[HANDOVER_VAR] = str(read_end)
    program = _entry_point()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [*program, *args], env)
    except OSError as exc:  # nothing ran yet; fail closed rather than keep the identity visible
        os.close(read_end)
        raise UsageError(
            f"cannot restart {sys.executable} to hide the identity from tasks: {exc.strerror}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _pipe_holding(payload: bytes) -> int:
    """A pipe holding `payload` with its write end closed; returns the inheritable read end."""
    read_end, write_end = os.pipe()
    try:
        try:  # Linux: grow the buffer so a large identity file still fits
            capacity = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_CAPACITY)
        except (AttributeError, OSError):
            capacity = 65536
        if len(payload) > capacity:
            raise UsageError(
                f"the identity is too large ({len(payload)} bytes; at most "
                f"{capacity}): give one identity file of age or OpenSSH keys"
            )
        view = memoryview(payload)
        while view:
            view = view[os.write(write_end, view) :]
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    return read_end


def _entry_point() -> list[str]:
    """The interpreter arguments this process was started with, without the user's arguments
    (`python /venv/bin/reconcile`, `python -m reconciler`, ...)."""
    original = list(getattr(sys, "orig_argv", []))
    user_args = sys.argv[1:]
    split = len(original) - len(user_args)
    if original and split >= 1 and original[split:] == user_args:
        return original[:split]
    return [sys.executable, "-m", "reconciler"]


def _receive(fd_text: str) -> tuple[StartupIdentity, dict[str, str]]:
    """Read and close the hand-over pipe named by `fd_text`: the identity, and the other
    host secrets taken out of the environment."""
    from reconciler.adapters.vault.secrets import StartupIdentity

    try:
        fd = int(fd_text)
        with os.fdopen(fd, "rb", closefd=True) as pipe:
            data = json.loads(pipe.read())
        hidden = data.get("hidden") or {}
        identity = StartupIdentity(file=data.get("file"), key_text=data.get("key_text"))
        return identity, {str(k): str(v) for k, v in hidden.items()}
    except (ValueError, OSError, AttributeError) as exc:
        raise UsageError(
            f"{HANDOVER_VAR} is set by the reconciler for itself; unset it ({type(exc).__name__})"
        ) from None
