"""Read-only facts about the git repository an inventory lives in (gitpython)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError


def head_commit(inventory: str | Path) -> str | None:
    """HEAD's commit of the repository holding `inventory`, with `-dirty` appended when the
    inventory folder has uncommitted changes (SPEC §4); None outside a git repository."""
    try:
        import git  # gitpython; imported lazily: most commands never need it
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    path = Path(inventory).resolve()
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    try:
        if not repo.head.is_valid():
            return None
        sha = repo.head.commit.hexsha
        relative = str(path.relative_to(Path(repo.working_tree_dir).resolve())) or "."
        dirty = repo.is_dirty(untracked_files=True, path=relative)
    except (git.GitCommandError, ValueError, OSError) as exc:
        raise SourceError(f"cannot read git state of {inventory}: {exc}") from exc
    finally:
        repo.close()
    return f"{sha}-dirty" if dirty else sha
