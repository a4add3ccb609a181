"""Folders of the reconciler's local state, private (0700) whatever the umask.

`Path.mkdir(mode=0o700, parents=True)` gives the mode to the last folder only: the ones it
creates above it get the umask's default (0777 under umask 000). With a PostgreSQL store
nothing else creates `.reconciler/`, and the first thing to need a folder inside it (the
local transport's run markers, the audit signing key) left it open to every local user, who
could then plant an audit key of their own there.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_FOLDER = ".reconciler"


def private_dir(path: str | Path) -> Path:
    """Create `path` and every missing folder above it with mode 0700; an existing
    `.reconciler/` on the way that others can reach is tightened (an older version, or a
    PostgreSQL store, may have left it open). Raises OSError."""
    path = Path(path)
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
        os.chmod(created, 0o700)  # exist_ok: another process may have made it first
    for folder in (path, *path.parents):
        if folder.name == STATE_FOLDER and folder.is_dir() and folder.stat().st_mode & 0o077:
            os.chmod(folder, 0o700)
    return path
