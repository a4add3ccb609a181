"""Byte-exact reads of git commits for the trust check: trees, blobs and the commits between two.

Everything goes through git's NUL-separated plumbing output (`ls-tree -z`, `rev-list`), so a
path is exactly the bytes git stores: no C-quoting of unusual names (`déploy.yaml`,
`a"b.yaml`, a tab) can make a path look different from the one the role rules match. Paths are
decoded with `os.fsdecode` (surrogateescape), so two names compare equal only when their bytes
are equal.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import SourceError


@dataclass(frozen=True)
class Entry:
    """One file of a commit's tree: its mode (`100644`, `120000`, `160000` ...) and object id."""

    mode: str
    sha: str


class Trees:
    """The commits of one repository, read with git's plumbing and cached by commit id."""

    def __init__(self, top: str | Path):
        self.top = str(top)
        self._trees: dict[str, dict[str, Entry]] = {}

    def _git(self, *args: str) -> bytes:
        proc = subprocess.run(
            ["git", "-c", "core.quotePath=false", *args], cwd=self.top, capture_output=True
        )
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise SourceError(
                f"git {args[0]} failed: {message[-1] if message else proc.returncode}"
            )
        return proc.stdout

    def files(self, commit: str | None) -> dict[str, Entry]:
        """Path -> entry of every file (blob, symlink or submodule) of `commit`'s tree; an
        empty tree for None."""
        if commit is None:
            return {}
        if commit not in self._trees:
            found: dict[str, Entry] = {}
            for record in self._git("ls-tree", "-r", "-z", "--full-tree", commit).split(b"\0"):
                if not record:
                    continue
                meta, _, path = record.partition(b"\t")
                mode, _kind, sha = meta.decode().split()
                found[os.fsdecode(path)] = Entry(mode, sha)
            self._trees[commit] = found
        return self._trees[commit]

    def blob(self, sha: str) -> bytes:
        return self._git("cat-file", "blob", sha)

    def read(self, commit: str | None, path: str) -> bytes | None:
        """The bytes of `path` at `commit`; None when absent or not a regular file."""
        entry = self.files(commit).get(path)
        if entry is None or not entry.mode.startswith("100"):
            return None
        return self.blob(entry.sha)

    def between(self, old: str, new: str) -> list[tuple[str, tuple[str, ...]]]:
        """Each commit reachable from `new` but not from `old`, oldest first, with its parents
        (merges and the side branches they bring in included). Topological order: a commit
        never comes before its parents, whatever dates its author wrote."""
        out = self._git(
            "rev-list", "--reverse", "--topo-order", "--parents", f"{old}..{new}"
        ).decode()
        commits = []
        for line in out.splitlines():
            sha, *parents = line.split()
            commits.append((sha, tuple(parents)))
        return commits

    def parents(self, commit: str) -> tuple[str, ...]:
        return tuple(self._git("rev-list", "--parents", "-n", "1", commit).decode().split()[1:])

    def resolve(self, revision: str) -> str | None:
        """The commit id `revision` names, or None when git does not know it."""
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
            cwd=self.top,
            capture_output=True,
            text=True,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    def is_ancestor(self, old: str, new: str) -> bool:
        return (
            subprocess.run(
                ["git", "merge-base", "--is-ancestor", old, new], cwd=self.top, capture_output=True
            ).returncode
            == 0
        )

    def touching(self, commit: str, paths: list[str]) -> list[str]:
        """Commits reachable from `commit` (newest first) that changed one of `paths`."""
        # --full-history: a side branch that set and then reverted a setting still counts.
        out = self._git("log", "--full-history", "--format=%H", commit, "--", *paths).decode()
        return out.split()


def changed(old: dict[str, Entry], new: dict[str, Entry]) -> list[str]:
    """Paths whose entry differs between two trees (added, removed or changed), sorted."""
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
