"""`reconcile init [DIR]`: scaffold a working inventory (SPEC §4).

DIR (default `.`, created if missing) gets `inventory/` (settings, a team, a local machine,
an example task, `.gitattributes` for vault files), `schemas/` (the JSON Schemas the YAML
files name for editors, by relative paths), `.gitignore` with `.reconciler/` and a CI
workflow. Existing files are never overwritten without `--force`: exit 2 names them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
import os

from reconciler.cli import views
from reconciler.inventory.scaffold import next_steps, scaffold_files, write_scaffold


def run(args: argparse.Namespace, ctx: Context) -> views.Output:
    """Write the scaffold; what was written and what to do next."""
    files = scaffold_files(team=args.team, machine=args.machine)
    written = write_scaffold(args.directory, files, force=args.force)
    return views.Output(
        {
            "directory": os.path.abspath(args.directory),
            "files": [
                {"path": os.path.relpath(w.path, args.directory), "action": w.action}
                for w in written
            ],
        },
        lambda: views.init_text(written, next_steps(args.directory)),
    )


__all__ = ["run"]
