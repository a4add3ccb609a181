"""`reconcile init [DIR]`: scaffold a working inventory (SPEC §4).

DIR (default `.`, created if missing) gets `inventory/` (settings, a team, a local machine,
an example task, `.gitattributes` for vault files), `.gitignore` with `.reconciler/` and a
CI workflow. Existing files are never overwritten without `--force`: exit 2 names them all.
"""

from __future__ import annotations

import argparse
import os

from reconciler.cli import wiring
from reconciler.cli.views import to_json
from reconciler.inventory.scaffold import next_steps, scaffold_files, write_scaffold

FORMATS = ("text", "json")


def run(args: argparse.Namespace) -> int:
    """Write the scaffold; print what was written and what to do next. Returns 0."""
    fmt = wiring.output_format(args, FORMATS)
    files = scaffold_files(team=args.team, machine=args.machine)
    written = write_scaffold(args.directory, files, force=args.force)
    if fmt == "json":
        print(
            to_json(
                {
                    "directory": os.path.abspath(args.directory),
                    "files": [
                        {"path": os.path.relpath(w.path, args.directory), "action": w.action}
                        for w in written
                    ],
                }
            )
        )
        return 0
    for item in written:
        print(f"{item.action:<11} {item.path}")
    print()
    print(next_steps(args.directory))
    return 0


__all__ = ["FORMATS", "run"]
