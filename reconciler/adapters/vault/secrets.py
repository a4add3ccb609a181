"""Resolving `{vault: NAME}` when a run starts, and finding the reconciler's identity.

A team's vault is decrypted at most once per pass and only when a run that needs it starts,
so `plan`, `validate` and `diff` never need a key. Every decrypted value is taught to the
redactor before it is handed out, so it is masked at every sink from then on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Where the identity is configured from outside (defined apart so start-up imports nothing).
from reconciler.adapters.vault.identity_names import (  # noqa: F401
    IDENTITY_FILE_VAR,
    IDENTITY_FLAG,
    IDENTITY_KEY_VAR,
)
from reconciler.core.errors import InputError, VaultError
from reconciler.core.redact import Redactor, Secret

# Finding identities needs nothing, reading them age alone (`validate` without an identity,
# `vault decrypt`, start-up's hand-over); the vault format (YAML, the model, the loader's
# paths) is imported where a vault is read.
if TYPE_CHECKING:
    from reconciler.adapters.vault import age
    from reconciler.core.model import VaultRef


@dataclass(frozen=True)
class StartupIdentity:
    """The identity as configured when the process started: the file to read it from and/or
    the key text. Kept in memory only, once start-up has taken it out of the environment and
    the argument list (where every local task could read it from /proc), see `handover`."""

    file: str | None = None
    key_text: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.file or self.key_text)


# Set once at start-up by `handover.receive`; None when the process was not started that way.
_startup: StartupIdentity | None = None


def adopt_startup_identity(identity: StartupIdentity) -> None:
    """Remember the identity start-up took out of argv and the environment."""
    global _startup
    _startup = identity


def configured_identity(path: str | None, environ: Mapping[str, str]) -> StartupIdentity:
    """The identity a command should use: `--identity FILE`, else `RECONCILE_IDENTITY_FILE`,
    plus `RECONCILE_IDENTITY`; what start-up handed over fills in what those leave unset."""
    handed = _startup or StartupIdentity()
    return StartupIdentity(
        file=path or environ.get(IDENTITY_FILE_VAR) or handed.file,
        key_text=environ.get(IDENTITY_KEY_VAR) or handed.key_text,
    )


def load_identities(
    path: str | None, environ: Mapping[str, str] = os.environ
) -> list[age.Identity]:
    """Identities from `--identity FILE`, else `RECONCILE_IDENTITY_FILE`, plus the key text in
    `RECONCILE_IDENTITY` (or what start-up handed over of them). An empty list when none is
    configured; InputError when one is bad."""
    identities: list[age.Identity] = []
    configured = configured_identity(path, environ)
    file = configured.file
    if file:
        try:
            text = Path(file).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"cannot read identity file {file}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        identities += _parse(text, f"identity file {file}")
    if configured.key_text:
        identities += _parse(configured.key_text, IDENTITY_KEY_VAR)
    return identities


def _parse(text: str, where: str) -> list[age.Identity]:
    from reconciler.adapters.vault import age

    try:
        return age.parse_identities(text)
    except age.AgeError as exc:
        raise InputError(f"{where}: not an age identity or OpenSSH private key ({exc})") from None


class VaultSecrets:
    """The executor's secret resolver: `resolver(team, ref) -> Secret`, thread-safe."""

    def __init__(
        self, inventory_root: str | Path, identities: Sequence[age.Identity], redactor: Redactor
    ):
        self.root = Path(inventory_root)
        self.identities = list(identities)
        self.redactor = redactor
        self._lock = threading.Lock()
        self._vaults: dict[str, dict[str, str] | VaultError] = {}

    def team_secrets(self, team: str) -> dict[str, str]:
        """The decrypted vault of `team` (cached, failures too); raises VaultError."""
        with self._lock:
            if team not in self._vaults:
                from reconciler.adapters.vault import team_vault
                from reconciler.inventory.loader import display_path

                path = team_vault.vault_path(self.root, team)
                try:
                    secrets = team_vault.read(path, self.identities, display_path(path))
                    self.redactor.add(*secrets.values())
                    self._vaults[team] = secrets
                except VaultError as exc:
                    self._vaults[team] = exc
            found = self._vaults[team]
        if isinstance(found, VaultError):
            raise found
        return found

    def learn_every_vault(self, teams) -> None:
        """Teach the redactor the values of every vault this identity can open, before any
        run: a task that names no secret may still print one (a config file another task
        wrote it to), and what the redactor has not seen is stored in the clear. A vault that
        cannot be opened is left for the run that needs it to report."""
        if not self.identities:
            return
        from reconciler.adapters.vault import team_vault

        for team in teams:
            if team_vault.vault_path(self.root, team).exists():
                try:
                    self.team_secrets(team)
                except VaultError:
                    pass

    def __call__(self, team: str, ref: VaultRef) -> Secret:
        secrets = self.team_secrets(team)
        if ref.name not in secrets:
            where = f"{ref.location}: " if ref.location else ""
            raise VaultError(
                f"{where}secret '{ref.name}' is not in the vault of team '{team}' "
                f"(add it with: reconcile vault set {team} {ref.name} -)"
            )
        return Secret(secrets[ref.name])
