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
from reconciler.core.codeowners import codeowners
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
    result = codeowners(loaded.inventory, teams, found.prefix)
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


__all__ = ["run"]
