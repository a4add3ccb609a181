"""Team vaults: `vaults/<team>.age`, an armored age file holding a YAML mapping NAME -> string.

Reading is all-or-nothing: the whole file is decrypted and parsed, or a `VaultError` says what
went wrong in one line (never with any plaintext). Writing encrypts to the team's recipients:
its admins' and operators' `age` and `ssh` keys plus its `recipients` (viewers are not
recipients), replaces the file atomically, and leaves an unchanged vault untouched so git
shows no diff.

A vault names its team inside the encrypted content, as the reserved first key of the mapping
(`_team: prod`; `age -d` still shows a plain YAML mapping of strings). The file name says
which team a vault is for, but anyone who can write `vaults/dev.age` could copy prod's
ciphertext there, and a reconciler whose identity reads both vaults would hand prod's
secrets to dev's tasks. So every read checks the name against the team it reads for and
refuses another team's vault (`VaultTeamError`, naming both). A vault with no name (written
before vaults were bound) is refused too — old ciphertext of any team stays in git history —
until `reconcile vault rekey TEAM`, run by someone who can decrypt it and checked it holds
that team's secrets, writes the name in (set, unset and edit refuse it: see team_vault_cmd).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.adapters.vault import age
from reconciler.core.diagnostics import Diagnostics, Location
from reconciler.core.errors import InfrastructureError, VaultError
from reconciler.core.model import Role, Team
from reconciler.inventory.yamlio import MapNode, ScalarNode, parse_yaml, resolve_plain

KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TEAM_KEY = "_team"  # reserved: the team a vault belongs to, never a secret


class VaultTeamError(VaultError):
    """A vault that belongs to another team, or to none (exit 2)."""


@dataclass(frozen=True)
class Vault:
    """A decrypted vault: the team its content names (None: written before vaults named
    their team) and its secrets (without the reserved name)."""

    team: str | None
    secrets: dict[str, str]

    def secrets_of(self, team: str, name: str) -> dict[str, str]:
        """The secrets, if this vault belongs to `team`; else VaultTeamError naming both."""
        if self.team == team:
            return self.secrets
        if self.team is None:
            raise VaultTeamError(
                f"{name}: the vault names no team (written before vaults were bound to their "
                f"team); refusing to use it for team '{team}' (an admin of '{team}' checks that "
                f"it holds {team}'s secrets, then runs: reconcile vault rekey {team})"
            )
        raise VaultTeamError(
            f"{name}: this vault belongs to team '{self.team}' (its encrypted content says "
            f"so), not to team '{team}': refusing to use it for '{team}' (was it copied from "
            f"vaults/{self.team}.age?)"
        )


def vault_path(inventory_root: str | Path, team: str) -> Path:
    return Path(inventory_root) / "vaults" / f"{team}.age"


def team_recipients(team: Team) -> list[str]:
    """The recipient strings a team's vault is encrypted to (SPEC §1, §5)."""
    keys: list[str] = []
    for member in team.members:
        if member.role in (Role.ADMIN, Role.OPERATOR):
            keys += [k for k in (member.age, member.ssh) if k]
    keys += list(team.recipients)
    return list(dict.fromkeys(keys))


def parse_recipients(team: Team) -> list[age.Recipient]:
    """The team's recipients, parsed; raises VaultError when there are none or one is bad."""
    texts = team_recipients(team)
    if not texts:
        raise VaultError(
            f"team '{team.name}' has no vault recipients: give an admin or "
            "operator an `age:` or `ssh:` key, or add `recipients:`"
        )
    try:
        return [age.parse_recipient(text) for text in texts]
    except age.AgeError as exc:
        raise VaultError(f"team '{team.name}': bad recipient: {exc}") from None


def decode(plaintext: bytes, name: str) -> dict[str, str]:
    """The secrets of a vault's plaintext, without its team name (see `decode_vault`)."""
    return decode_vault(plaintext, name).secrets


def decode_vault(plaintext: bytes, name: str) -> Vault:
    """Parse a vault's plaintext: a YAML mapping of NAME to string (empty means no secrets),
    `_team` naming the team."""
    if not plaintext.strip():
        return Vault(None, {})
    diags = Diagnostics()
    node = parse_yaml(plaintext, name, diags)
    if diags.errors or node is None:
        first = diags.errors[0] if diags.errors else None
        raise VaultError(
            f"{first.location if first else name}: the decrypted vault is not "
            "valid YAML" + (f" ({first.message})" if first else "")
        )
    if not isinstance(node, MapNode):
        raise VaultError(f"{name}: the decrypted vault must be a mapping of NAME: value")
    secrets: dict[str, str] = {}
    for key, (location, value) in node.entries.items():
        if not KEY_NAME.fullmatch(key):
            raise VaultError(f"{location}: vault key '{key}' must match [A-Za-z_][A-Za-z0-9_]*")
        if not (isinstance(value, ScalarNode) and isinstance(value.value, str)):
            raise VaultError(f"{location}: the value of '{key}' must be a string (quote it)")
        secrets[key] = value.value
    team = secrets.pop(TEAM_KEY, None)
    return Vault(team, secrets)


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line values as `|` blocks, so `vault edit` shows keys as they are."""


def _str_representer(dumper: yaml.SafeDumper, value: str):
    if "\n" in value and not value.endswith((" ", "\t")):
        style = "|"
    elif resolve_plain(value) != value:
        style = '"'  # YAML 1.2 would read it as another type (`0o17`, `1e3`, `true`)
    else:
        style = None  # PyYAML still quotes what YAML 1.1 would retype (`NO`, `1:30`)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def encode(secrets: Mapping[str, str], team: str | None = None) -> bytes:
    """Plaintext of a vault: `_team: TEAM` first (when given), then the keys sorted; every
    value quoted where YAML 1.1 or 1.2 could retype it, so it reads back as the same string."""
    if TEAM_KEY in secrets:
        raise VaultError(f"secret name '{TEAM_KEY}' is reserved (it holds the vault's team)")
    named = _dump({TEAM_KEY: team}) if team is not None else b""
    if not secrets:
        return named or b"{}\n"
    return named + _dump(dict(sorted(secrets.items())))


def _dump(mapping: Mapping[str, str]) -> bytes:
    return yaml.dump(
        dict(mapping),
        Dumper=_LiteralDumper,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=True,
    ).encode()


def decrypt_file(
    path: Path, identities: Sequence[age.Identity], display: str | None = None
) -> bytes:
    """The plaintext of an age file, all or nothing; VaultError with a one-line reason."""
    name = display or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VaultError(f"{name}: no such vault") from None
    except OSError as exc:
        raise VaultError(f"{name}: cannot read: {exc.strerror}") from None
    if not identities:
        raise VaultError(
            f"{name}: no identity to decrypt it (use --identity, "
            "RECONCILE_IDENTITY_FILE or RECONCILE_IDENTITY)"
        )
    try:
        return age.decrypt(data, identities)
    except age.AgeError as exc:
        raise VaultError(f"{name}: {explain(exc)}") from None


def explain(exc: age.AgeError) -> str:
    """One line for a failed decryption, saying what to check."""
    if exc.stage == "no_match":
        return "none of your identities can decrypt it (are you a recipient of this vault?)"
    return f"corrupt or tampered vault ({exc})"


def read_vault(path: Path, identities: Sequence[age.Identity], display: str | None = None) -> Vault:
    """One vault file decrypted, whichever team it names (check it with `Vault.secrets_of`)."""
    name = display or str(path)
    return decode_vault(decrypt_file(path, identities, name), name + " (decrypted)")


def read(
    path: Path,
    identities: Sequence[age.Identity],
    display: str | None = None,
    *,
    team: str | None = None,
) -> dict[str, str]:
    """The secrets of one vault file, which must name `team` (by default the one its file
    name says: `vaults/<team>.age`); VaultTeamError otherwise."""
    name = display or str(path)
    return read_vault(path, identities, name).secrets_of(team or team_of(path), name)


def team_of(path: Path) -> str:
    """The team a vault file is for, by its name."""
    return Path(path).name.removesuffix(".age")


def write(
    path: Path,
    secrets: Mapping[str, str],
    recipients: Sequence[age.Recipient],
    *,
    previous: Mapping[str, str] | None = None,
    team: str | None = None,
) -> bool:
    """Encrypt `secrets` to `recipients` into `path`, atomically, naming `team` (by default
    the one the file name says) inside. Returns False (and writes nothing) when `previous` —
    what the file held, under this team's name — is equal: no needless git diff."""
    if previous is not None and dict(previous) == dict(secrets):
        return False
    data = age.encrypt(encode(secrets, team or team_of(path)), recipients, armor=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # ciphertext, committed to git: the usual file mode
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


# A vault that cannot be written for these reasons is the machine's trouble (exit 3); for any
# other (no right to replace it, a read-only checkout) the user's to fix (exit 2). The vault
# is unchanged either way.
_MACHINE_TROUBLE = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}


def _write_error(path: Path, exc: OSError) -> InfrastructureError | VaultError:
    from reconciler.inventory.loader import display_path

    shown = display_path(path)
    reason = exc.strerror or str(exc)
    if exc.errno in _MACHINE_TROUBLE:
        return InfrastructureError(f"cannot write the vault {shown}: {reason}; it is unchanged")
    diags = Diagnostics()
    diags.error(
        Location(shown),
        f"cannot write the vault: {reason}; it is unchanged",
        "check that you may replace it: the rights on it and its folder, an immutable flag",
    )
    return VaultError(diags)
