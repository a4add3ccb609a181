"""`reconcile codeowners [-o FILE]`: the signing rules as a CODEOWNERS file for the git host.

Paths are written from the repository's top folder, wherever the command runs and however
`--inventory` is written; each file of `teams/`, `tasks/` and `machines/` is owned by the
teams its objects name, read as `git.verify` reads them (`core.codeowners`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from reconciler.adapters.source.worktree import inventory_files
from reconciler.cli import wiring
from reconciler.cli.progress import print_warnings, tell
from reconciler.core.codeowners import codeowners, writable
from reconciler.inventory.file_teams import teams_named

if TYPE_CHECKING:
    from reconciler.cli.settings import Context


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Write the CODEOWNERS file to stdout or `args.output`; warn about what it cannot say."""
    loaded = wiring.load(args)
    folder = wiring.inventory_dir(args)
    found = inventory_files(folder)
    teams = {
        path: teams_named(path, found.prefix, data) if data is not None else frozenset()
        for path, data in found.files.items()
    }
    if not _utf8(found.prefix):
        from reconciler.core.errors import UsageError

        raise UsageError(
            f"the inventory folder's path '{_shown(found.prefix)}' is not UTF-8: a CODEOWNERS "
            "file (UTF-8) cannot name it (rename the folder)"
        )
    if not writable(found.prefix):
        from reconciler.core.errors import UsageError

        raise UsageError(
            f"the inventory folder's path {found.prefix!r} holds a control character: no "
            "CODEOWNERS line can name it (rename the folder)"
        )
    # A file name that is not UTF-8 (bytes git keeps as they are): the git host reads
    # CODEOWNERS as UTF-8, so no line can name that file; its folder's rule applies.
    named = {path: names for path, names in teams.items() if _utf8(path)}
    result = codeowners(loaded.inventory, named, found.prefix)
    warnings = []
    if found.top is None:
        warnings.append(
            f"{folder} is in no git repository: paths are written from the folder holding "
            f"it, as /{found.prefix}... (run it again once the repository exists)"
        )
    warnings += result.unmet
    warnings += [
        f"no CODEOWNERS line can name {path!r} (a control character): its folder's rule applies"
        for path in result.unwritable
    ]
    warnings += [
        f"no CODEOWNERS line can name '{_shown(path)}' (its name is not UTF-8): its folder's "
        "rule applies (rename the file)"
        for path in sorted(set(teams) - set(named))
    ]
    print_warnings([f"warning: {w}" for w in warnings], args.log_format)
    if args.output:
        from reconciler.cli import outputs

        outputs.make_parent(args.output)
        with outputs.writing(args.output, private=False) as handle:
            handle.write(result.text.encode("utf-8"))
        tell(f"wrote {args.output}", args.log_format)
    else:
        sys.stdout.write(result.text)
    return 0


def _utf8(path: str) -> bool:
    """Whether a path read from the file system (undecodable bytes surrogate-escaped) is
    UTF-8, the encoding the git host reads CODEOWNERS in."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(path: str) -> str:
    """A path as a warning can print it: bytes that are not UTF-8 as `\\xe9`."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


__all__ = ["run"]
