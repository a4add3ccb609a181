"""Real git repositories for GitOps tests: a bare remote, an author's clone that pushes, and
the daemon's clone (the checkout the reconciler pulls into)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


class Repos:
    """remote.git (bare), author/ (pushes), daemon/ (the reconciler's checkout)."""

    def __init__(self, root: Path):
        self.root = root
        self.ledger = root / "ledger.txt"
        self.remote = root / "remote.git"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.remote))
        self.author = root / "author"
        git(root, "clone", "-q", str(self.remote), str(self.author))
        git(self.author, "checkout", "-q", "-b", "main")
        self.write("inventory/reconciler.yaml", "poll_interval: 1s\n")
        self.write("inventory/teams/ops.yaml", "name: ops\n")
        self.write("inventory/machines/box.yaml", "name: box\nteam: ops\ntransport: local\n")
        self.task("a")
        self.push("initial")
        self.daemon = root / "daemon"
        git(root, "clone", "-q", str(self.remote), str(self.daemon))

    def write(self, relative: str, text: str) -> None:
        path = self.author / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def task(self, name: str) -> None:
        self.write(
            f"inventory/tasks/ops/{name}.yaml",
            f'name: {name}\nmachines: [box]\ncommand: echo {name} >> "{self.ledger}"\n',
        )

    def push(self, message: str, *flags: str) -> str:
        git(self.author, "add", "-A")
        git(self.author, "commit", "-q", "-m", message)
        git(self.author, "push", "-q", *flags, "origin", "main")
        return git(self.author, "rev-parse", "HEAD")

    def ledger_lines(self) -> list[str]:
        return self.ledger.read_text().split() if self.ledger.exists() else []
