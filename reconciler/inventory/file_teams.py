"""Which teams an inventory file belongs to, as the signing rules read it (`core.trust`).

A file under the inventory's `teams/`, `tasks/` or `machines/` belongs to the teams its
objects name (`name:` of a team, `team:` of a task or machine, one object or a list under
`teams:`/`tasks:`/`machines:`), and a task file under `tasks/<team>/` to that folder's team
too. The file's name never counts otherwise: `teams/people.yaml` holding teams prod and dev
belongs to both. A file that does not parse, or names no team, belongs to none (then only
an admin of any team may change it).

`git.verify` reads committed blobs with it and `reconcile codeowners` the working tree's
files, so both give a file the same owners.
"""

from __future__ import annotations

from reconciler.core.diagnostics import Diagnostics
from reconciler.inventory.yamlio import parse_yaml, to_plain

TEAM_OWNED = ("teams", "tasks", "machines")


def team_owned(name: str, prefix: str) -> bool:
    """Whether repository path `name` is under the inventory's teams/, tasks/ or machines/
    (`prefix`: the inventory folder's path with a trailing slash, "" at the top)."""
    return name.startswith(prefix) and name[len(prefix) :].split("/", 1)[0] in TEAM_OWNED


def teams_named(name: str, prefix: str, data: bytes) -> frozenset[str]:
    """The teams owning the objects of inventory file `name` whose content is `data` (empty
    when it is no team, task or machine file, does not parse, or names no team)."""
    if not team_owned(name, prefix):
        return frozenset()
    top, *rest = name[len(prefix) :].split("/")
    plain = to_plain(parse_yaml(data, name, Diagnostics()))
    objects = (
        plain.get(top) if isinstance(plain, dict) and isinstance(plain.get(top), list) else [plain]
    )
    field = "name" if top == "teams" else "team"
    teams = {o.get(field) for o in objects if isinstance(o, dict)}
    if top == "tasks" and len(rest) > 1:
        teams.add(rest[0])  # tasks/<team>/...: the folder names the team
    return frozenset(t for t in teams if isinstance(t, str))


__all__ = ["TEAM_OWNED", "team_owned", "teams_named"]
