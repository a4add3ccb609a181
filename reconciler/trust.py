"""Who may change what (SPEC §1 roles, §6 `git.verify`): pure policy, no git, no I/O.

A changed file of the inventory needs a signer with a role in the team that owns it:
- `teams/<t>.yaml` and `vaults/<t>.age`: an admin of `t` (a new team: an admin of any team);
- tasks and machines of team `t` (before or after the change): an operator or admin of `t`;
- `reconciler.yaml` (settings, including `git.verify` itself): an admin of any team.
Roles always come from the *trusted* inventory (the last reconciled commit), never from the
commit being judged, so a commit cannot grant its own signer rights.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from .model import Inventory, Role

ADMIN = frozenset({Role.ADMIN})
OPERATOR = frozenset({Role.ADMIN, Role.OPERATOR})
ANY_TEAM = None


@dataclass(frozen=True)
class FileChange:
    """A changed path under the inventory and the teams owning it before and after."""

    path: str  # relative to the inventory folder, e.g. "tasks/prod/web.yaml"
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


def requirements(change: FileChange, trusted: Inventory) -> list[Requirement]:
    """What signing `change` takes."""
    top = change.path.split("/", 1)[0]
    if change.path in ("reconciler.yaml", "reconciler.yml"):
        return [Requirement(ANY_TEAM, ADMIN, change.path)]
    if top == "vaults":
        team = change.path.rsplit("/", 1)[-1].removesuffix(".age")
        return [_admin_of(team, trusted, change.path)]
    if top in ("teams", "tasks", "machines") and not change.teams:
        # A file whose objects name no team (unreadable, or emptied): only an admin.
        return [Requirement(ANY_TEAM, ADMIN, change.path)]
    if top == "teams":
        return [_admin_of(team, trusted, change.path) for team in sorted(change.teams)]
    if top in ("tasks", "machines"):
        return [Requirement(team, OPERATOR, change.path) for team in sorted(change.teams)]
    return []  # anything else in the folder (a README) is no object of ours


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


def codeowners(inventory: Inventory, prefix: str = "/inventory") -> str:
    """A CODEOWNERS file from the same rules, for the git host's review gate. Owners are
    written `@<member name>`: name members after their git host accounts."""
    def owners(team: str, roles: frozenset[Role]) -> str:
        names = sorted({f"@{m.name}" for m in inventory.teams[team].members if m.role in roles})
        return " ".join(names)

    any_admin = " ".join(sorted({f"@{m.name}" for t in inventory.teams.values()
                                 for m in t.members if m.role is Role.ADMIN}))
    lines = ["# Generated by `reconcile codeowners` from the teams' roles; do not edit by hand.",
             f"{prefix}/reconciler.yaml {any_admin}".rstrip()]
    for team in sorted(inventory.teams):
        lines += [f"{prefix}/teams/{team}.yaml {owners(team, ADMIN)}".rstrip(),
                  f"{prefix}/vaults/{team}.age {owners(team, ADMIN)}".rstrip(),
                  f"{prefix}/tasks/{team}/ {owners(team, OPERATOR)}".rstrip()]
    for path, teams in sorted(_machine_files(inventory).items()):
        lines.append(f"{prefix}/{path} " + " ".join(
            sorted({o for t in teams for o in owners(t, OPERATOR).split()})))
    return "\n".join(lines) + "\n"


def _machine_files(inventory: Inventory) -> dict[str, set[str]]:
    files: dict[str, set[str]] = {}
    for machine in inventory.machines.values():
        if machine.location is not None and machine.team in inventory.teams:
            path = machine.location.path.split("machines/", 1)[-1]
            files.setdefault(f"machines/{path}", set()).add(machine.team)
    return files
