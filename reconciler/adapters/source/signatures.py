"""Signed commits and path ownership (SPEC §6/§7 `git.verify`): the git side of `trust`.

Signatures are git's SSH signatures, checked by git itself (`ssh-keygen -Y verify`) against
an allowed-signers file built from the team members' `ssh:` keys of the *trusted* inventory:
the last reconciled commit `L` (or a commit named as the trust anchor from outside the
repository). What is judged is always the whole difference from `L` to the commit to apply,
path by path, byte-exact (NUL-separated git output):

- head mode: the commit to apply must be signed by a member, who answers for every changed
  path;
- range mode: every commit since `L` (merges and side branches included) must be signed by a
  member; each non-merge commit must change only what its signer may; and every path that
  differs from `L` must have been put in its final state by a commit whose signer holds the
  role for it, and that no later commit of the range changed again — so a merge that restores
  an old file, or a version superseded within the range, answers for that file itself.

A store that has never reconciled trusts nothing on its own: the first commit is accepted only
against an anchor given outside the repository (an admin's key that signed it, or a commit).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.source.git import RefusedCommit
from reconciler.adapters.source.revision import Repository
from reconciler.adapters.source.trees import Entry, Trees, changed
from reconciler.core.model import Inventory, Role
from reconciler.core.trust import FileChange, Requirement, memberships, requirements, signers, unmet
from reconciler.inventory.file_teams import team_owned, teams_named


@dataclass(frozen=True)
class Verdict:
    """One accepted commit: who signed it (key fingerprint) and in which roles."""

    commit: str
    fingerprint: str
    roles: dict
    first_use: bool = False


def verify(
    inventory: str | Path,
    mode: str,
    trusted: str | None,
    head: str,
    *,
    anchor_key: str | None = None,
) -> list[Verdict]:
    """Judge `head` against the trusted commit `trusted` (see the module docstring).

    With no trusted commit, `anchor_key` (a key fingerprint given outside the repository)
    must have signed `head`, and `head` must name that key as an admin. Returns the verdicts
    of the signed commits; raises `RefusedCommit` for the first problem found.
    """
    with Repository(inventory) as repo:
        trees = Trees(repo.repo.working_tree_dir)
        prefix = "" if repo.path == "." else repo.path + "/"
        if trusted is None:
            return [_first_use(repo, head, anchor_key)]
        if not trees.between(trusted, head):
            return []  # nothing new since the trusted commit: no need to load its roles
        roles_from = repo.load(trusted).inventory
        with _allowed_signers(roles_from) as allowed:
            return _Judge(repo, trees, prefix, roles_from, allowed).run(mode, trusted, head)


def accept(inventory: str | Path, last: str, commit: str) -> Verdict:
    """`reconcile accept-history` under verify: `commit` (which need not descend from `last`)
    must be signed by an admin, per `last`'s roles, whose roles cover every path that differs
    from `last` — the judgement of a head-mode pass. Raises `RefusedCommit` otherwise."""
    with Repository(inventory) as repo:
        trees = Trees(repo.repo.working_tree_dir)
        prefix = "" if repo.path == "." else repo.path + "/"
        trusted = repo.load(last).inventory
        with _allowed_signers(trusted) as allowed:
            judge = _Judge(repo, trees, prefix, trusted, allowed)
            verdict = judge.signer(commit)
            if Role.ADMIN not in verdict.roles.values():
                raise RefusedCommit(
                    f"refusing to accept {commit[:12]}: accepting a new line of "
                    f"history needs an admin's signature; {verdict.fingerprint} "
                    "is no admin in the last reconciled commit",
                    commit,
                )
            judge.judge_whole_change("head", last, commit, [], {commit: verdict})
            return verdict


def _first_use(repo: Repository, head: str, anchor_key: str | None) -> Verdict:
    short = head[:12]
    if anchor_key is None:
        raise RefusedCommit(
            f"refusing commit {short}: nothing was reconciled yet and no trust anchor was given",
            head,
        )
    named = repo.load(head).inventory
    with _allowed_signers(named) as allowed:
        status, fingerprint = _signature(repo, head, allowed)
    if status == "N":
        raise RefusedCommit(
            f"refusing commit {short}: it is not signed, so the trust anchor "
            f"{anchor_key} cannot vouch for it",
            head,
        )
    if fingerprint != anchor_key:
        raise RefusedCommit(
            f"refusing commit {short}: signed by {fingerprint or 'an unknown key'}"
            f", not by the trust anchor {anchor_key}",
            head,
        )
    roles = memberships(named).get(fingerprint, {})
    if status != "G" or Role.ADMIN not in roles.values():
        raise RefusedCommit(
            f"refusing commit {short}: the trust anchor {anchor_key} signed it, "
            "but the commit does not name that key as an admin of a team",
            head,
        )
    return Verdict(head, fingerprint, roles, first_use=True)


class _Judge:
    """The checks of one pass, against the roles of one trusted inventory."""

    def __init__(
        self, repo: Repository, trees: Trees, prefix: str, trusted: Inventory, allowed: str
    ):
        self.repo, self.trees, self.prefix = repo, trees, prefix
        self.trusted, self.allowed = trusted, allowed
        self.members = memberships(trusted)

    def run(self, mode: str, last: str, head: str) -> list[Verdict]:
        commits = self.trees.between(last, head)
        if not commits:
            return []
        signed = [(sha, parents) for sha, parents in commits if mode == "range" or sha == head]
        verdicts = {sha: self.signer(sha) for sha, _ in signed}
        if mode == "range":
            for sha, parents in commits:
                if len(parents) == 1:  # a merge is judged by what it leaves, below
                    self.judge_own_change(verdicts[sha], parents[0])
        self.judge_whole_change(mode, last, head, commits, verdicts)
        return list(verdicts.values())

    def signer(self, sha: str) -> Verdict:
        status, fingerprint = _signature(self.repo, sha, self.allowed)
        short = sha[:12]
        if status == "N":
            raise RefusedCommit(
                f"refusing commit {short}: it is not signed (git.verify is on: "
                "sign commits with an ssh: key of your team membership)",
                sha,
            )
        roles = self.members.get(fingerprint)
        if status != "G" or not roles:
            raise RefusedCommit(
                f"refusing commit {short}: signed by "
                f"{fingerprint or 'an unknown key'}, which is no team member's "
                "ssh: key in the last trusted commit",
                sha,
            )
        return Verdict(sha, fingerprint, roles)

    def judge_own_change(self, verdict: Verdict, parent: str) -> None:
        needed = [
            r
            for c in self.changes(parent, verdict.commit)
            for r in requirements(c, self.trusted, self.prefix)
        ]
        missing = unmet(needed, verdict.roles)
        if missing:
            raise RefusedCommit(
                f"refusing commit {verdict.commit[:12]}: its signer ({verdict.fingerprint}) lacks "
                "the role needed for: " + "; ".join(str(r) for r in missing),
                verdict.commit,
            )

    def judge_whole_change(self, mode: str, last: str, head: str, commits, verdicts) -> None:
        final = self.trees.files(head)
        missing: list[Requirement] = []
        descendants = _descendants(commits)
        for change in self.changes(last, head):
            authors = (
                [verdicts[head]]
                if mode == "head"
                else [
                    verdicts[sha]
                    for sha, parents in commits
                    if self.authored(sha, parents, change.path, final.get(change.path))
                    and not self.superseded(
                        sha, descendants[sha], change.path, final.get(change.path)
                    )
                ]
            )
            for need in requirements(change, self.trusted, self.prefix):
                if all(unmet([need], a.roles) for a in authors):
                    missing.append(need)
        if missing:
            if mode == "head":
                why = (
                    f"its signer ({verdicts[head].fingerprint}) lacks the role needed for the "
                    f"change since {last[:12]}, the last commit reconciled"
                )
            else:
                why = (
                    f"since {last[:12]}, the last commit reconciled, no signer of a commit "
                    "that put these paths in their final state holds the role needed"
                )
            raise RefusedCommit(
                f"refusing commit {head[:12]}: {why}: " + "; ".join(str(r) for r in missing), head
            )

    def authored(self, sha: str, parents, path: str, final: Entry | None) -> bool:
        """Whether commit `sha` put `path` into its final state `final` (it has it so, and
        at least one of its parents does not)."""
        if self.trees.files(sha).get(path) != final:
            return False
        return any(self.trees.files(p).get(path) != final for p in parents) or not parents

    def superseded(self, sha: str, later: set[str], path: str, final: Entry | None) -> bool:
        """Whether a commit after `sha` (one of `later`, its descendants in the range) had
        `path` otherwise: then `sha`'s version was replaced, and whoever brought it back (a
        merge taking the older side) answers for it, not `sha`'s signer."""
        return any(self.trees.files(d).get(path) != final for d in later)

    def changes(self, old: str | None, new: str) -> list[FileChange]:
        return changes_between(self.trees, self.prefix, old, new)


def _descendants(commits) -> dict[str, set[str]]:
    """For each commit of a range (oldest first, with parents), the range's commits that
    descend from it."""
    children: dict[str, list[str]] = {}
    for sha, parents in commits:
        for parent in parents:
            children.setdefault(parent, []).append(sha)
    found: dict[str, set[str]] = {}
    for sha, _ in reversed(commits):  # children come later in the list: already known
        found[sha] = set()
        for child in children.get(sha, ()):
            found[sha] |= {child} | found[child]
    return found


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


def _signature(repo: Repository, sha: str, allowed: str) -> tuple[str, str]:
    """git's verdict (%G?: G good, N unsigned, ...) and the signing key's fingerprint."""
    git = repo.repo.git
    out = git.execute(
        [
            "git",
            "-c",
            "gpg.format=ssh",
            "-c",
            f"gpg.ssh.allowedSignersFile={allowed}",
            "log",
            "-1",
            "--format=%G?%x1f%GK",
            sha,
        ]
    )
    status, _, fingerprint = out.strip().partition("\x1f")
    return status or "N", fingerprint


def changes_between(trees: Trees, prefix: str, old: str | None, new: str) -> list[FileChange]:
    """Every path of the repository that differs from commit `old` (None: an empty tree) to
    commit `new`, byte-exact, with the teams owning its inventory objects on either side."""
    before, after = trees.files(old), trees.files(new)
    return [
        FileChange(
            path,
            _teams(trees, before.get(path), path, prefix),
            _teams(trees, after.get(path), path, prefix),
        )
        for path in changed(before, after)
    ]


def required_roles(inventory: str | Path, base: str, head: str) -> list[str]:
    """For review: what signing the change from `base` to `head` takes, with `base`'s roles
    and `paths:` (the ones a pass would judge it by). One line per distinct requirement."""
    with Repository(inventory) as repo:
        trusted = repo.load(base).inventory
        trees = Trees(repo.repo.working_tree_dir)
        prefix = "" if repo.path == "." else repo.path + "/"
        changes = changes_between(trees, prefix, repo.commit(base).hexsha, repo.commit(head).hexsha)
        return list(
            dict.fromkeys(str(r) for c in changes for r in requirements(c, trusted, prefix))
        )


def _teams(trees: Trees, entry: Entry | None, name: str, prefix: str) -> frozenset[str]:
    """The teams owning the objects of inventory file `name` in `entry` (empty if absent,
    unreadable, or no team/task/machine file)."""
    if entry is None or not team_owned(name, prefix) or not entry.mode.startswith("100"):
        return frozenset()
    return teams_named(name, prefix, trees.blob(entry.sha))
