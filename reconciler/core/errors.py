"""The error tree. Each branch carries its policy: the exit code, and whether to retry.

    ReconcilerError
    ├── InputError (exit 2)           all diagnostics at once; nothing ran
    │   └── VaultError                corrupt, tampered, wrong key: no partial plaintext
    ├── InfrastructureError (exit 3)  StoreError (StalePlanError), SourceError, LockError
    ├── TransportError                Unreachable (retryable), AuthFailed, HostKeyMismatch
    └── NotifyError                   logged and counted; never fails a pass

Foreign exceptions (sqlite3, subprocess, paramiko) are translated once, in their adapter,
with `raise ... from exc`.
"""

from __future__ import annotations

from reconciler.core.diagnostics import Diagnostics, Location


class ReconcilerError(Exception):
    """Base of every error the reconciler reports to a user."""

    exit_code = 1


class InputError(ReconcilerError):
    """Invalid input (inventory, flag, vault): exit 2, nothing was executed."""

    exit_code = 2

    def __init__(self, diagnostics: Diagnostics | str, location: Location | None = None):
        if isinstance(diagnostics, str):
            diags = Diagnostics()
            diags.error(location or Location("reconcile"), diagnostics)
            diagnostics = diags
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics.errors))


def raise_if_errors(diagnostics: Diagnostics) -> None:
    """Raise `InputError` carrying every diagnostic when any of them is an error."""
    if diagnostics.errors:
        raise InputError(diagnostics)


class UsageError(InputError):
    """A bad command-line flag or argument."""

    def __init__(self, message: str):
        super().__init__(message, Location("reconcile"))
        self.args = (message,)

    def __str__(self) -> str:
        return self.args[0]


class VaultError(InputError):
    """A vault could not be read: corrupt, tampered, wrong key. Never carries plaintext."""


class InfrastructureError(ReconcilerError):
    """The state store, git or a lock failed: exit 3."""

    exit_code = 3


class StoreError(InfrastructureError):
    """The state store could not be opened, read or written."""


class StalePlanError(StoreError):
    """A plan was recorded against executed state that changed underneath it."""


class SourceError(InfrastructureError):
    """The desired-state source (git, the inventory folder) could not be read."""


class LockError(InfrastructureError):
    """Another pass holds the lock past `--lock-timeout`."""


class TransportError(ReconcilerError):
    """A machine could not be reached or refused us. `retryable` says whether to try again."""

    retryable = False


class Unreachable(TransportError):
    retryable = True


class AuthFailed(TransportError):
    pass


class ConnectionLost(TransportError):
    """The connection died after the command was sent: whether it ran, and how it ended, is
    unknown. Not retryable: the run is recorded `unknown` (SPEC §2), and the transport's
    `reap` may resolve it from the target's markers at the next pass. `unreachable`: the
    peer stopped answering altogether (a partition), not just this connection."""

    unreachable = False


class HostKeyMismatch(TransportError):
    pass


class NotifyError(ReconcilerError):
    """An alert could not be delivered; logged, kept for later, never fails a pass."""
