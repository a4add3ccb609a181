"""The inventory's team-owned files in the working tree, named from the repository root.

For `reconcile codeowners`: the git host matches CODEOWNERS patterns against paths from the
repository's top folder, whatever folder the command runs in and however `--inventory` is
written. The files are the ones git would commit: tracked, and untracked but not ignored
(`git ls-files -z`, so a name is the bytes git stores, as the signing check reads them).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import SourceError
from reconciler.inventory.file_teams import TEAM_OWNED, team_owned


@dataclass(frozen=True)
class InventoryFiles:
    """`prefix`: the inventory folder's path in the repository with a trailing slash ("" at
    the top); `files`: repository path -> content of each file under its `teams/`, `tasks/`
    and `machines/` (None: not a regular file, e.g. a symbolic link); `top`: the
    repository's top folder, None when the inventory is in no git repository (then the
    folder holding the inventory is taken for it)."""

    prefix: str
    files: dict[str, bytes | None]
    top: str | None


def inventory_files(folder: str | Path) -> InventoryFiles:
    """The team-owned files of the inventory in `folder`, named from the repository root."""
    real = Path(os.path.realpath(folder))
    top = _top(real)
    if top is None:
        return InventoryFiles(real.name + "/", _walked(real, real.name + "/"), None)
    relative = real.relative_to(top).as_posix()
    prefix = "" if relative == "." else relative + "/"
    names = _git(
        top, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", prefix or "."
    )
    files = {}
    for raw in names.split(b"\0"):
        name = os.fsdecode(raw)
        if raw and team_owned(name, prefix) and os.path.lexists(top / name):
            files[name] = _content(top / name)
    return InventoryFiles(prefix, files, str(top))


def _top(folder: Path) -> Path | None:
    """The top folder of the git repository holding `folder`, None outside one."""
    try:
        out = _git(folder, "rev-parse", "--show-toplevel")
    except SourceError:
        return None
    top = Path(os.path.realpath(os.fsdecode(out.rstrip(b"\n"))))
    return top if folder == top or top in folder.parents else None


def _git(cwd: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "GIT_LITERAL_PATHSPECS": "1"},
        )
    except OSError as exc:
        raise SourceError(f"cannot run git: {exc}") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"git {args[0]} failed: {message[-1] if message else proc.returncode}")
    return proc.stdout


def _walked(folder: Path, prefix: str) -> dict[str, bytes | None]:
    """Outside git: every file under the inventory's team-owned folders."""
    files: dict[str, bytes | None] = {}
    for top in TEAM_OWNED:
        for root, dirs, names in os.walk(folder / top):
            for name in sorted(names + [d for d in dirs if os.path.islink(Path(root, d))]):
                path = Path(root, name)
                files[prefix + path.relative_to(folder).as_posix()] = _content(path)
    return files


def _content(path: Path) -> bytes | None:
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


__all__ = ["InventoryFiles", "inventory_files"]
