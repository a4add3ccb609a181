"""Who may change what (SPEC §1 roles, §6/§7 `git.verify`): pure policy, no git, no I/O.

Every changed path of the repository needs a signer with a role:
- `teams/<t>.yaml` and `vaults/<t>.age` of the inventory: an admin of `t` (a new team: an
  admin of any team);
- tasks and machines of team `t` (before or after the change): an operator or admin of `t`;
- `reconciler.yaml` (settings, including `git.verify` and `paths:` itself): an admin of any team;
- any other path (scripts a task runs, a README, CI files): an operator or admin of the team
  that the admin-owned `paths:` setting gives it to (the last matching pattern wins), else an
  admin of any team.
Roles and `paths:` always come from the *trusted* inventory (the last reconciled commit), never
from the commit being judged, so a commit cannot grant its own signer rights.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.core.model import Inventory, Role

ADMIN = frozenset({Role.ADMIN})
OPERATOR = frozenset({Role.ADMIN, Role.OPERATOR})
ANY_TEAM = None


@dataclass(frozen=True)
class FileChange:
    """A changed path under the inventory and the teams owning it before and after."""

    path: str  # relative to the repository root, e.g. "inventory/tasks/prod/web.yaml"
    teams_before: frozenset[str] = frozenset()
    teams_after: frozenset[str] = frozenset()

    @property
    def teams(self) -> frozenset[str]:
        return self.teams_before | self.teams_after


@dataclass(frozen=True)
class Requirement:
    """`roles` in `team` (None: in any team) are needed because of `path`."""

    team: str | None
    roles: frozenset[Role]
    path: str

    def __str__(self) -> str:
        who = " or ".join(sorted(r.value for r in self.roles))
        return f"{who} of {'any team' if self.team is None else f'team {self.team}'} ({self.path})"


def requirements(change: FileChange, trusted: Inventory, inventory: str = "") -> list[Requirement]:
    """What signing `change` takes; `inventory` is the inventory folder's path in the
    repository with a trailing slash ("" when it is the repository itself)."""
    if not change.path.startswith(inventory):
        return [owner_of(change.path, trusted)]
    path = change.path[len(inventory) :]
    top = path.split("/", 1)[0]
    if path in ("reconciler.yaml", "reconciler.yml"):
        return [Requirement(ANY_TEAM, ADMIN, change.path)]
    if top == "vaults" and path.count("/") == 1 and path.endswith(".age"):
        team = path.rsplit("/", 1)[-1].removesuffix(".age")
        return [_admin_of(team, trusted, change.path)]
    if top in ("teams", "tasks", "machines") and not change.teams:
        # A file whose objects name no team (unreadable, or emptied): only an admin.
        return [Requirement(ANY_TEAM, ADMIN, change.path)]
    if top == "teams":
        return [_admin_of(team, trusted, change.path) for team in sorted(change.teams)]
    if top in ("tasks", "machines"):
        return [Requirement(team, OPERATOR, change.path) for team in sorted(change.teams)]
    return [owner_of(change.path, trusted)]  # anything else: `paths:` or an admin


def owner_of(path: str, trusted: Inventory) -> Requirement:
    """The role a path outside the team-owned inventory files needs: an operator of the team
    the last matching `paths:` pattern gives it to, else an admin of any team."""
    team = None
    for pattern, owner in trusted.settings.paths:
        if path_matches(pattern, path):
            team = owner
    if team is None or team not in trusted.teams:
        return Requirement(ANY_TEAM, ADMIN, path)
    return Requirement(team, OPERATOR, path)


def path_matches(pattern: str, path: str) -> bool:
    """Whether repository path `path` matches `pattern`: `*` and `?` stay within one folder,
    `**` spans folders, a trailing `/` means everything under that folder. Patterns are
    relative to the repository root (a leading `/` is allowed). Comparison is exact."""
    return _pattern(pattern).fullmatch(path) is not None


def _pattern(pattern: str) -> re.Pattern[str]:
    text = pattern.lstrip("/")
    if text.endswith("/"):
        text += "**"
    out, i = [], 0
    while i < len(text):
        if text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif text[i] == "*":
            out.append("[^/]*")
            i += 1
        elif text[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(text[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def _admin_of(team: str, trusted: Inventory, path: str) -> Requirement:
    # A team that does not exist yet has no admin to ask: an admin of any team creates it.
    return Requirement(team if team in trusted.teams else ANY_TEAM, ADMIN, path)


def key_fingerprint(public_key: str) -> str | None:
    """`SHA256:...` of an OpenSSH public key line (`ssh-ed25519 AAAA... comment`), as git
    and ssh-keygen print it; None when it is not one."""
    parts = public_key.split()
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def memberships(trusted: Inventory) -> dict[str, dict[str, Role]]:
    """Key fingerprint -> {team: role} of every member's `ssh:` key in the trusted inventory."""
    found: dict[str, dict[str, Role]] = {}
    for team in trusted.teams.values():
        for member in team.members:
            fingerprint = key_fingerprint(member.ssh) if member.ssh else None
            if fingerprint:
                found.setdefault(fingerprint, {})[team.name] = member.role
    return found


def signers(trusted: Inventory) -> list[str]:
    """The public keys allowed to sign: every member's `ssh:` key, each once."""
    keys = (m.ssh for t in trusted.teams.values() for m in t.members if m.ssh)
    return sorted({" ".join(k.split()[:2]) for k in keys})


def unmet(needed: Iterable[Requirement], roles: Mapping[str, Role]) -> list[Requirement]:
    """The requirements a signer holding `roles` ({team: role}) does not meet."""

    def met(req: Requirement) -> bool:
        if req.team is None:
            return any(role in req.roles for role in roles.values())
        return roles.get(req.team) in req.roles

    return [req for req in needed if not met(req)]
