"""The inventory as it is at a git revision (gitpython), for `reconcile diff`.

The inventory subtree of the revision's commit is written into a private temporary folder
(mode 0700) by walking the commit's tree, loaded and compiled with the same loader and
compiler as a pass, and removed again. Walking the tree rather than running `git archive`
keeps `export-ignore` attributes and archive filters from hiding files from review.

Errors: an unknown revision or a folder outside any git repository is a `SourceError`
(exit 3); an inventory that does not load or compile at that revision is an `InputError`
(exit 2) whose every location reads `REVISION:path/in/repo:line:column`, the form
`git show REVISION:path` accepts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from reconciler.adapters.source.git import maybe_repository
from reconciler.core.compile import compile_inventory
from reconciler.core.diagnostics import Diagnostic, Diagnostics, Location
from reconciler.core.errors import InputError, SourceError, raise_if_errors
from reconciler.core.model import DesiredState, Inventory
from reconciler.inventory.loader import display_path, load_inventory

_SYMLINK_MODE = 0o120000
_SUBMODULE_MODE = 0o160000


@dataclass(frozen=True)
class RevisionInventory:
    """The inventory at one revision: loaded, compiled, with its vault files' bytes.

    `missing` is True when the inventory folder does not exist at that revision (then the
    inventory is empty); `path` is the inventory's path inside the repository.
    """

    revision: str
    commit: str
    path: str
    inventory: Inventory
    desired: DesiredState
    vaults: Mapping[str, bytes] = field(default_factory=dict)
    warnings: tuple[Diagnostic, ...] = ()
    missing: bool = False


class Repository:
    """The git repository holding an inventory folder; resolves revisions and reads them.

    Raises `SourceError` when `inventory` is in no git repository, `InputError` when it is
    outside the repository's working tree.
    """

    def __init__(self, inventory: str | Path):
        absolute = Path(os.path.abspath(inventory))
        parent = _existing_parent(absolute)
        try:
            if not maybe_repository(parent):  # certainly none: gitpython need not be loaded
                raise _NotInRepository
            git = _gitpython()
            try:
                self.repo = git.Repo(parent, search_parent_directories=True)
            except (git.InvalidGitRepositoryError, git.NoSuchPathError):
                raise _NotInRepository from None
        except _NotInRepository:
            raise SourceError(
                f"{display_path(absolute)} is not inside a git repository: "
                "`reconcile diff` compares git revisions"
            ) from None
        self.path = _inside_tree(absolute, self.repo)

    def close(self) -> None:
        self.repo.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def commit(self, revision: str):
        """The commit `revision` names; `SourceError` when git does not know it."""
        git = _gitpython()
        try:
            return self.repo.commit(revision)
        except (git.BadName, git.BadObject, ValueError, git.GitCommandError) as exc:
            raise SourceError(
                f"unknown revision '{revision}' in {self.repo.working_tree_dir} ({exc}); "
                "fetch it first (CI checkouts need the history: fetch-depth: 0)"
            ) from None

    def load(self, revision: str) -> RevisionInventory:
        """The inventory at `revision`, loaded and compiled (see the module docstring)."""
        commit = self.commit(revision)
        tree = _subtree(commit.tree, self.path)
        if tree is None:
            return _missing(revision, commit.hexsha, self.path)
        with _exported(tree, f"{revision}:{self.path}") as root:
            return _load_exported(root, revision, commit.hexsha, self.path)

    def write_checkout(self, revision: str, target: Path) -> str:
        """Write the whole tree of `revision` into the new folder `target`; its commit id."""
        commit = self.commit(revision)
        target.mkdir(mode=0o700)
        _write_tree(commit.tree, target, f"{revision}:")
        return commit.hexsha

    @contextmanager
    def checkout(self, revision: str) -> Iterator[Checkout]:
        """The whole tree of `revision` in a private temporary folder (mode 0700), removed on
        exit: what a pass under `git.verify` loads and runs, instead of the working tree."""
        commit = self.commit(revision)
        with _exported(commit.tree, f"{revision}:", name="checkout") as top:
            yield Checkout(
                top,
                top.joinpath(*PurePosixPath(self.path).parts),
                revision,
                commit.hexsha,
                self.path,
            )


@dataclass(frozen=True)
class Checkout:
    """A commit written out: `top` holds the repository, `inventory` its inventory folder."""

    top: Path
    inventory: Path
    revision: str
    commit: str
    path: str

    def load(self) -> tuple[Inventory, DesiredState, list[Diagnostic]]:
        """The inventory loaded and compiled; problems located at `REVISION:path`."""
        relocate = _Relocator(self.inventory, self.revision, self.path)
        try:
            inventory, warnings = load_inventory(self.inventory)
            desired = compile_inventory(inventory)
        except InputError as exc:
            raise InputError(relocate.diagnostics(exc.diagnostics.items)) from None
        return inventory, desired, list(relocate.diagnostics(warnings).items)


def load_revision(inventory: str | Path, revision: str) -> RevisionInventory:
    """The inventory folder `inventory` (a path in the working tree) as it is at `revision`."""
    with Repository(inventory) as repo:
        return repo.load(revision)


# --------------------------------------------------------------------------- the repository


class _NotInRepository(Exception):
    """No git repository holds the inventory (worded by `Repository`)."""


def _gitpython():
    import git  # gitpython: imported here, most commands never need it

    return git


def _existing_parent(path: Path) -> Path:
    """`path` or its nearest existing ancestor: the inventory may not exist in the working
    tree (it may exist only at the revisions compared)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _inside_tree(absolute: Path, repo) -> str:
    """The inventory's path inside the repository (POSIX, `.` for the top)."""
    if repo.working_tree_dir is None:
        raise SourceError(f"{repo.git_dir} is a bare repository; run `reconcile diff` in a clone")
    top = Path(os.path.realpath(repo.working_tree_dir))
    real = Path(os.path.realpath(absolute))
    try:
        return real.relative_to(top).as_posix() or "."
    except ValueError:
        raise InputError(
            f"the inventory {display_path(absolute)} is not inside the git repository {top}"
        ) from None


def _subtree(tree, path: str):
    """The tree at `path` inside `tree`, or None when there is no folder there."""
    if path == ".":
        return tree
    try:
        found = tree / path
    except KeyError:
        return None
    return found if found.type == "tree" else None


# --------------------------------------------------------------------------- exporting


@contextmanager
def _exported(tree, where: str, name: str = "inventory") -> Iterator[Path]:
    """A private temporary folder holding `tree`'s files; removed on exit, whatever happens.
    `where` (`REVISION:path`) locates a hostile tree entry in the error."""
    parent = Path(tempfile.mkdtemp(prefix="reconcile-tree-"))  # mode 0700: only we read it
    root = parent / name
    try:
        root.mkdir()
        _write_tree(tree, root, where)
        yield root
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _write_tree(tree, root: Path, where: str) -> None:
    """Every blob under `tree` as a file under `root`; symlinks as symlinks, so the loader
    reports them as it would in a working tree; submodules are skipped. A crafted tree whose
    entry is named `.`, `..`, `.git` or nothing (git's own tools never write one) could escape
    `root`: it is bad input, exit 2, located at `REVISION:path`. So is a tree holding one name
    twice (a symlink and a folder of one name would let the folder's files be written through
    the symlink, anywhere): nothing is ever written over or through what is already there."""
    revision = where.split(":", 1)[0]
    for item in _walk(tree, revision):
        relative = (
            PurePosixPath(item.path).relative_to(tree.path)
            if tree.path
            else PurePosixPath(item.path)
        )
        target = root.joinpath(*relative.parts)
        if item.type == "tree":
            target.mkdir()  # its parent was written just before it (depth first)
        elif item.type == "blob":
            _write_blob(item, target)
            if item.mode & 0o111 and item.mode != _SYMLINK_MODE:
                target.chmod(0o755)  # scripts a run executes keep their executable bit


def _walk(tree, revision: str):
    """`tree`'s entries, depth first; an entry name that is no file name is an `InputError`.
    (gitpython refuses to read such a tree with a ValueError naming the entry.)"""
    try:
        entries = list(tree)
    except ValueError as exc:
        name = str(exc).rsplit("'tree/", 1)[-1].rstrip("'") if "'tree/" in str(exc) else "?"
        _bad_entry(revision, f"{tree.path}/{name}" if tree.path else name)
    seen: set[str] = set()
    for item in entries:
        # Not `item.name`: a submodule (gitlink) entry read from a tree has no name to give.
        name = item.path.rsplit("/", 1)[-1]
        if name in ("", ".", "..", ".git") or name in seen:
            _bad_entry(revision, item.path, twice=name in seen)
        seen.add(name)
        yield item
        if item.type == "tree":
            yield from _walk(item, revision)


def _bad_entry(revision: str, path: str, twice: bool = False) -> None:
    diags = Diagnostics()
    name = path.rsplit("/", 1)[-1]
    diags.error(
        Location(f"{revision}:{path}"),
        f"the git tree has two entries named '{name}'"
        if twice
        else f"the git tree has an entry named '{name}', which no file may be named",
        "rewrite the commit without it (`git fsck` reports such trees)",
    )
    raise_if_errors(diags)


def _write_blob(blob, target: Path) -> None:
    data = blob.data_stream.read()
    if blob.mode == _SYMLINK_MODE:
        os.symlink(os.fsdecode(data), target)  # fails if anything is there already
    else:
        with open(target, "xb") as handle:  # O_EXCL: never through an existing symlink
            handle.write(data)


# --------------------------------------------------------------------------- loading


def _load_exported(root: Path, revision: str, commit: str, path: str) -> RevisionInventory:
    """Load and compile the exported folder; locations rewritten to `REVISION:path`."""
    relocate = _Relocator(root, revision, path)
    try:
        inventory, warnings = load_inventory(root)
        desired = compile_inventory(inventory)
    except InputError as exc:
        raise InputError(relocate.diagnostics(exc.diagnostics.items)) from None
    return RevisionInventory(
        revision,
        commit,
        path,
        inventory,
        desired,
        _vaults(root),
        tuple(relocate.diagnostics(warnings).items),
    )


def _vaults(root: Path) -> dict[str, bytes]:
    """The bytes of each `vaults/<team>.age` (regular files only, as the vault reader)."""
    folder = root / "vaults"
    if not folder.is_dir() or folder.is_symlink():
        return {}
    return {
        p.name[: -len(".age")]: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.name.endswith(".age") and p.is_file() and not p.is_symlink()
    }


def _missing(revision: str, commit: str, path: str) -> RevisionInventory:
    """An empty inventory for a revision that has no inventory folder yet (or any more)."""
    inventory = Inventory(root=path, teams={}, machines={}, tasks={})
    return RevisionInventory(
        revision,
        commit,
        path,
        inventory,
        DesiredState(tasks={}, machines={}, teams={}),
        missing=True,
    )


class _Relocator:
    """Rewrites diagnostics about the temporary folder to name the revision instead."""

    def __init__(self, root: Path, revision: str, path: str):
        shown = "" if path == "." else path + "/"
        self.prefixes = sorted(
            {os.path.abspath(root), display_path(root), os.path.realpath(root)},
            key=len,
            reverse=True,
        )
        self.target = f"{revision}:{shown}"
        self.bare = f"{revision}:{path}"

    def text(self, value: str) -> str:
        for prefix in self.prefixes:
            value = value.replace(prefix + "/", self.target).replace(prefix, self.bare)
        return value

    def diagnostics(self, items) -> Diagnostics:
        diags = Diagnostics()
        for d in items:
            where = replace(d.location, path=self.text(d.location.path))
            diags.items.append(
                replace(
                    d,
                    location=where,
                    message=self.text(d.message),
                    hint=self.text(d.hint) if d.hint else d.hint,
                )
            )
        return diags


__all__ = ["Checkout", "RevisionInventory", "Repository", "load_revision"]
