"""Resolving `{vault: NAME}` when a run starts, and finding the reconciler's identity.

A team's vault is decrypted at most once per pass and only when a run that needs it starts,
so `plan`, `validate` and `diff` never need a key. Every decrypted value is taught to the
redactor before it is handed out, so it is masked at every sink from then on.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import InputError, VaultError
from ..loader import display_path
from ..model import VaultRef
from ..redact import Redactor, Secret
from . import age, team_vault


def load_identities(path: str | None, environ: Mapping[str, str] = os.environ) -> list[age.Identity]:
    """Identities from `--identity FILE`, else `RECONCILE_IDENTITY_FILE`, plus the key text in
    `RECONCILE_IDENTITY`. An empty list when none is configured; InputError when one is bad."""
    identities: list[age.Identity] = []
    file = path or environ.get("RECONCILE_IDENTITY_FILE")
    if file:
        try:
            text = Path(file).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read identity file {file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        identities += _parse(text, f"identity file {file}")
    if environ.get("RECONCILE_IDENTITY"):
        identities += _parse(environ["RECONCILE_IDENTITY"], "RECONCILE_IDENTITY")
    return identities


def _parse(text: str, where: str) -> list[age.Identity]:
    try:
        return age.parse_identities(text)
    except age.AgeError as exc:
        raise InputError(f"{where}: not an age identity or OpenSSH private key ({exc})") from None


class VaultSecrets:
    """The executor's secret resolver: `resolver(team, ref) -> Secret`, thread-safe."""

    def __init__(self, inventory_root: str | Path, identities: Sequence[age.Identity],
                 redactor: Redactor):
        self.root = Path(inventory_root)
        self.identities = list(identities)
        self.redactor = redactor
        self._lock = threading.Lock()
        self._vaults: dict[str, dict[str, str] | VaultError] = {}

    def team_secrets(self, team: str) -> dict[str, str]:
        """The decrypted vault of `team` (cached, failures too); raises VaultError."""
        with self._lock:
            if team not in self._vaults:
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

    def __call__(self, team: str, ref: VaultRef) -> Secret:
        secrets = self.team_secrets(team)
        if ref.name not in secrets:
            where = f"{ref.location}: " if ref.location else ""
            raise VaultError(f"{where}secret '{ref.name}' is not in the vault of team '{team}' "
                             f"(add it with: reconcile vault set {team} {ref.name} -)")
        return Secret(secrets[ref.name])
