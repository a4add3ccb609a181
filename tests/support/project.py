"""A scratch project for tests that run `reconcile` as a subprocess, as a user would.

`Project(root)` holds `inventory/` (team `ops`, one local machine `box`), a ledger file that
task commands append to (so tests see what really ran and in which order) and the default
SQLite store under `.reconciler/`. The end-to-end folder offers it as the `project` fixture;
`tests/support/ssh_project.py` and the integration tests build on it.
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

from tests.support.cli import Result, reconcile


class Project:
    """A working directory holding `inventory/` (one team, one local machine) and a ledger
    file that task commands append to, so tests see what really ran and in which order."""

    def __init__(self, root: Path):
        self.root = root
        self.inventory = root / "inventory"
        self.ledger = root / "ledger.txt"
        self.state = root / ".reconciler" / "state.db"
        self.write("teams/ops.yaml", "name: ops\n")
        self.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 4\n")

    def write(self, relative: str, text: str) -> Path:
        path = self.inventory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def task(self, name: str, body: str) -> Path:
        return self.write(
            f"tasks/ops/{name}.yaml", f"name: {name}\nmachines: [box]\n" + textwrap.dedent(body)
        )

    def record(self, word: str) -> str:
        """A shell snippet appending `word` to the ledger."""
        return f'echo {word} >> "{self.ledger}"'

    def ledger_lines(self) -> list[str]:
        return self.ledger.read_text().split() if self.ledger.exists() else []

    def run(self, *args: str, code: int | None = None, **kw) -> Result:
        return reconcile(*args, cwd=self.root, check_code=code, **kw)

    def run_count(self) -> int:
        if not self.state.exists():
            return 0
        with sqlite3.connect(self.state) as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


__all__ = ["Project"]
