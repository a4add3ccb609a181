"""The git repository an inventory lives in (gitpython): its commit, its lineage, and pulls.

`reconcile --once` never pulls: it reconciles what is on disk and records HEAD's commit. The
daemon pulls its remote branch, fast-forward only. Either way a pass refuses a commit that
does not descend from the last one reconciled: history rewritten back in time, or a late CI
job for an older commit, must never undo what a newer commit did.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.core.errors import SourceError


class RefusedCommit(SourceError):
    """A commit the reconciler will not run; `commit` names it (for the alert)."""

    def __init__(self, message: str, commit: str):
        super().__init__(message)
        self.commit = commit


@contextmanager
def _repo(inventory: str | Path) -> Iterator[object | None]:
    """The repository holding `inventory`, or None outside one."""
    import git  # gitpython; imported lazily: most commands never need it

    try:
        repo = git.Repo(Path(inventory).resolve(), search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        yield None
        return
    try:
        yield repo
    finally:
        repo.close()


def maybe_repository(path: str | Path) -> bool:
    """False only when no folder from `path` (as written, and resolved) up to the root can
    hold or be a git repository: then gitpython (~35 ms to import) would only find that
    out. Anything that might be one (a `.git` entry, a folder with `HEAD`, `objects` or
    `refs`, a path gitpython would expand, git's object directory set in the environment) is
    left to gitpython to decide."""
    if "$" in str(path) or "~" in str(path) or os.environ.get("GIT_OBJECT_DIRECTORY"):
        return True
    absolute = Path(os.path.abspath(path))
    for start in {absolute, Path(os.path.realpath(absolute))}:
        for folder in (start, *start.parents):
            if any(os.path.lexists(folder / name) for name in (".git", "HEAD", "objects", "refs")):
                return True
    return False


def head_commit(inventory: str | Path) -> str | None:
    """HEAD's commit of the repository holding `inventory`, with `-dirty` appended when the
    inventory folder has uncommitted changes (SPEC §4); None outside a git repository."""
    path = Path(inventory).resolve()
    if not maybe_repository(path):
        return None
    quick = _status_commit(path)
    if quick is not _UNSURE:
        return quick
    import git

    with _repo(inventory) as repo:
        if repo is None:
            return None
        try:
            if not repo.head.is_valid():
                return None
            sha = repo.head.commit.hexsha
            relative = str(path.relative_to(Path(repo.working_tree_dir).resolve())) or "."
            dirty = repo.is_dirty(untracked_files=True, path=relative)
        except (git.GitCommandError, ValueError, OSError) as exc:
            raise SourceError(f"cannot read git state of {inventory}: {exc}") from exc
    return f"{sha}-dirty" if dirty else sha


_UNSURE = object()
# Variables that point git elsewhere than the folder's own repository: with any of them set,
# gitpython (which finds the repository from the path alone) decides, as it always did.
_GIT_PLACES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
)


def _status_commit(path: Path) -> str | None | object:
    """What `head_commit` answers, from one `git status` in the inventory folder: HEAD's
    commit (branch.oid), `-dirty` when any entry under the folder is staged, changed or
    untracked (what gitpython's is_dirty(untracked_files=True) ran three commands and
    imported itself to find out). `_UNSURE` whenever git cannot say (not a folder, git
    missing or refusing, an answer not understood): then gitpython decides, errors and all.
    """
    if not path.is_dir() or any(os.environ.get(name) for name in _GIT_PLACES):
        return _UNSURE
    import subprocess

    try:
        done = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(path),
                "status",
                "--porcelain=v2",
                "--branch",
                "--untracked-files=all",
                "-z",
                "--",
                ".",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return _UNSURE
    if done.returncode != 0:
        return _UNSURE  # outside a repository too: gitpython says None, or why not
    sha, dirty = None, False
    for record in done.stdout.decode("utf-8", "surrogateescape").split("\0"):
        if record.startswith("# branch.oid "):
            sha = record.removeprefix("# branch.oid ")
        elif record[:2] in ("1 ", "2 ", "u ", "? "):
            dirty = True
    if sha == "(initial)":
        return None  # no commit yet (gitpython: HEAD is not valid)
    if sha is None or len(sha) not in (40, 64) or any(c not in "0123456789abcdef" for c in sha):
        return _UNSURE
    return f"{sha}-dirty" if dirty else sha


def sha_of(commit: str) -> str:
    """The commit id without the `-dirty` mark."""
    return commit.removesuffix("-dirty")


def check_lineage(inventory: str | Path, last: str | None, commit: str | None) -> None:
    """Raise `SourceError` unless `commit` is `last` or descends from it.

    Nothing to check before the first pass, or outside git. A `last` this clone does not
    have (a shallow CI checkout) cannot be proven an ancestor, so it is refused too, with
    the fix in the message.
    """
    if last is None or commit is None or sha_of(commit) == last:
        return
    import git

    with _repo(inventory) as repo:
        if repo is None:
            return
        try:
            repo.git.merge_base("--is-ancestor", last, sha_of(commit))
        except git.GitCommandError as exc:
            if exc.status == 1:
                raise RefusedCommit(
                    f"refusing commit {sha_of(commit)[:12]}: it does not descend from "
                    f"{last[:12]}, the last commit reconciled (history was rewritten, or this "
                    "is a late run for an older commit); nothing from it runs. "
                    + way_out(sha_of(commit), last),
                    sha_of(commit),
                ) from None
            raise SourceError(
                f"refusing commit {sha_of(commit)[:12]}: cannot tell whether it descends from "
                f"{last[:12]}, the last commit reconciled (not in this clone: fetch the full "
                "history, e.g. `fetch-depth: 0` in CI)"
            ) from None


def way_out(commit: str, last: str) -> str:
    """What to do about a commit refused for its lineage (docs/operations.md)."""
    return (
        f"If the new history is intended, accept it: `reconcile accept-history "
        f"{commit[:12]} --reason TEXT` (audited; under git.verify it must be signed by an "
        f"admin), or commit the new content on top of {last[:12]}"
    )


def pull(inventory: str | Path, remote: str, branch: str) -> str | None:
    """Fetch `remote/branch` and fast-forward the checkout to it; returns the new HEAD.

    Raises `SourceError` when the fetch fails or the remote branch is not a fast-forward of
    the checkout (a force-push): the checkout then stays where it was.
    """
    import git

    with _repo(inventory) as repo:
        if repo is None:
            return None
        try:
            repo.remotes[remote].fetch(branch)
            target = repo.commit(f"{remote}/{branch}")
        except (IndexError, git.GitCommandError, ValueError) as exc:
            raise SourceError(f"cannot fetch {remote}/{branch}: {_first_line(exc)}") from None
        head = repo.head.commit
        if target == head:
            return head.hexsha
        if not repo.is_ancestor(head, target):
            raise RefusedCommit(
                f"refusing {remote}/{branch} at {target.hexsha[:12]}: it is not a fast-forward "
                f"of {head.hexsha[:12]} (history was rewritten); nothing from it runs. To "
                "follow it, reset this checkout to it; then " + way_out(target.hexsha, head.hexsha),
                target.hexsha,
            )
        try:
            repo.git.merge("--ff-only", target.hexsha)
        except git.GitCommandError as exc:
            raise SourceError(
                f"cannot fast-forward to {target.hexsha[:12]}: {_first_line(exc)}"
            ) from None
        return target.hexsha


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "stderr", "") or exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__
