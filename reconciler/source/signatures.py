"""Signed commits and path ownership (SPEC §6 `git.verify`): the git side of `trust`.

Signatures are git's SSH signatures, checked by git itself (`ssh-keygen -Y verify`) against
an allowed-signers file built from the team members' `ssh:` keys of the *trusted* inventory:
the last reconciled commit, or — for the very first one — the commit itself, which must then
be signed by an admin it names (trust on first use).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..diagnostics import Diagnostics
from .git import RefusedCommit
from ..model import Inventory, Role
from ..trust import FileChange, memberships, requirements, signers, unmet
from ..yamlio import parse_yaml, to_plain
from .revision import Repository


@dataclass(frozen=True)
class Verdict:
    """One accepted commit: who signed it (key fingerprint) and in which roles."""

    commit: str
    fingerprint: str
    roles: dict
    first_use: bool = False


def verify(inventory: str | Path, mode: str, last: str | None, head: str) -> list[Verdict]:
    """Check `head` (mode `head`) or every commit after `last` up to `head` (mode `range`).

    Returns the verdicts of accepted commits; raises `SourceError` for the first commit that
    is unsigned, signed by a key no team member holds, or changes what its signer may not.
    """
    with Repository(inventory) as repo:
        trusted = repo.load(last or head).inventory
        with _allowed_signers(trusted) as allowed:
            commits = _commits(repo, mode, last, head)
            return [_judge(repo, sha, trusted, allowed, first_use=last is None) for sha in commits]


def _commits(repo: Repository, mode: str, last: str | None, head: str) -> list[str]:
    if mode == "head" or last is None:
        return [repo.commit(head).hexsha]
    return repo.repo.git.rev_list("--reverse", f"{last}..{head}").split()


class _allowed_signers:
    """A private temporary allowed-signers file for git (removed on exit)."""

    def __init__(self, trusted: Inventory):
        self.keys = signers(trusted)

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(prefix="reconcile-signers-")
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"member {key}\n" for key in self.keys)
        return self.path

    def __exit__(self, *exc) -> None:
        Path(self.path).unlink(missing_ok=True)


def _judge(repo: Repository, sha: str, trusted: Inventory, allowed: str, *,
           first_use: bool) -> Verdict:
    status, fingerprint = _signature(repo, sha, allowed)
    short = sha[:12]
    if status == "N":
        raise RefusedCommit(f"refusing commit {short}: it is not signed (git.verify is on: sign "
                          "commits with an ssh: key of your team membership)", sha)
    roles = memberships(trusted).get(fingerprint)
    if status != "G" or not roles:
        raise RefusedCommit(f"refusing commit {short}: signed by {fingerprint or 'an unknown key'}"
                            ", which is no team member's ssh: key in the last trusted commit", sha)
    if first_use:
        if Role.ADMIN not in roles.values():
            raise RefusedCommit(f"refusing commit {short}: the first reconciled commit must be "
                                "signed by an admin it names (trust on first use)", sha)
        return Verdict(sha, fingerprint, roles, first_use=True)
    missing = unmet([r for change in _changes(repo, sha) for r in requirements(change, trusted)],
                    roles)
    if missing:
        raise RefusedCommit(f"refusing commit {short}: its signer ({fingerprint}) lacks the role "
                            "needed for: " + "; ".join(str(r) for r in missing), sha)
    return Verdict(sha, fingerprint, roles)


def _signature(repo: Repository, sha: str, allowed: str) -> tuple[str, str]:
    """git's verdict (%G?: G good, N unsigned, ...) and the signing key's fingerprint."""
    git = repo.repo.git
    out = git.execute(["git", "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed}",
                       "log", "-1", "--format=%G?%x1f%GK", sha])
    status, _, fingerprint = out.strip().partition("\x1f")
    return status or "N", fingerprint


def _changes(repo: Repository, sha: str) -> list[FileChange]:
    """Inventory files the commit changes (against its first parent), with their teams."""
    commit = repo.repo.commit(sha)
    return changes_between(repo, commit.parents[0] if commit.parents else None, commit)


def changes_between(repo: Repository, old, new) -> list[FileChange]:
    """Inventory files that differ from commit `old` (None: an empty tree) to commit `new`,
    with the teams owning them on either side."""
    prefix = f"{repo.path}/" if repo.path not in ("", ".") else ""
    names = repo.repo.git.diff_tree("-r", "--name-only", "--no-commit-id",
                                    old.hexsha if old is not None else "--root", new.hexsha)
    changes = []
    for name in filter(None, names.split("\n")):
        if name.startswith(prefix):
            path = name[len(prefix):]
            changes.append(FileChange(path, _teams(old, name, path), _teams(new, name, path)))
    return changes


def required_roles(inventory: str | Path, base: str, head: str) -> list[str]:
    """For review: what signing the change from `base` to `head` takes, with `base`'s roles
    (the ones a pass would judge it by). One line per distinct requirement."""
    with Repository(inventory) as repo:
        trusted = repo.load(base).inventory
        changes = changes_between(repo, repo.commit(base), repo.commit(head))
        return list(dict.fromkeys(str(r) for c in changes for r in requirements(c, trusted)))


def _teams(commit, name: str, path: str) -> frozenset[str]:
    """The teams owning the objects of file `name` at `commit` (empty if absent/unreadable)."""
    if commit is None:
        return frozenset()
    try:
        data = (commit.tree / name).data_stream.read()
    except KeyError:
        return frozenset()
    top, *rest = path.split("/")
    if top == "vaults":
        return frozenset()
    plain = to_plain(parse_yaml(data, name, Diagnostics()))
    objects = plain.get(top) if isinstance(plain, dict) and isinstance(plain.get(top), list) \
        else [plain]
    field = "name" if top == "teams" else "team"
    teams = {o.get(field) for o in objects if isinstance(o, dict)}
    if top == "tasks" and len(rest) > 1:
        teams.add(rest[0])  # tasks/<team>/...: the folder names the team
    return frozenset(t for t in teams if isinstance(t, str))
