"""Passes and commands run inside the test process, for integration tests that need to reach
the engine, the sinks or the store directly (tampering with raw SQL, scraping metrics).

`InProcessProject(root, url=None)` is an inventory (team `ops`, local machine `box`) and its
store (SQLite under `state/` unless a URL is given): `run_pass()` runs one pass through the
engine and the sinks on the local transport, `sql()` reaches the database as an attacker with
write access would, `audit(...)` runs `reconcile audit ...`. `run_command` runs any command
module the way `reconcile` parses it, returning (exit code, stdout).
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import textwrap
from pathlib import Path
from types import ModuleType

import psycopg

from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport.local import LocalTransport
from reconciler.cli import audit_cmd
from reconciler.cli.args import build_parser
from reconciler.cli.main import present
from reconciler.cli.settings import Context, resolve
from reconciler.core.compile import compile_inventory
from reconciler.core.redact import Redactor
from reconciler.inventory.loader import load_inventory
from reconciler.pipeline.engine import Engine
from reconciler.pipeline.metrics import Metrics
from reconciler.pipeline.sinks import build_sinks


def run_command(
    module: ModuleType, words: tuple[str, ...], *argv: str, state: str, inventory: Path
) -> tuple[int, str]:
    """`reconcile WORDS ARGV --state STATE --inventory INVENTORY` in-process, parsed as
    `reconcile` parses it and run by the module's `run`: (exit code, stdout). `words` names
    the command as typed, e.g. ("audit",) or ("queue", "prune") for a command of a group."""
    args = build_parser().parse_args(
        [*words, *argv, "--state", state, "--inventory", str(inventory)]
    )
    ctx = Context(resolve(args), Redactor())  # as cli.main builds it
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = present(module.run(args, ctx), args)  # a views.Output printed as `reconcile` does
    return code, out.getvalue()


class InProcessProject:
    """An inventory (team `ops`, local machine `box`) and its store; passes in-process."""

    def __init__(self, root: Path, url: str | None = None):
        self.root = root
        self.inventory = root / "inventory"
        self.url = url or f"sqlite:///{root / 'state' / 'state.db'}"
        self.write("teams/ops.yaml", "name: ops\n")
        self.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 8\n")

    def write(self, relative: str, text: str) -> None:
        path = self.inventory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    def task(self, name: str, command: str, extra: str = "") -> None:
        self.write(
            f"tasks/ops/{name}.yaml",
            f"name: {name}\nmachines: [box]\ncommand: {json.dumps(command)}\n{extra}",
        )

    def desired(self):
        inventory, _ = load_inventory(self.inventory)
        return compile_inventory(inventory)

    def run_pass(self, store=None):
        """One pass on `store` (a new handle on the project's store when None)."""
        own = store is None
        store = store or open_store(self.url)
        desired = self.desired()
        try:
            sinks = build_sinks(
                store, None, desired, Redactor(), None, commit="c0ffee", metrics=Metrics()
            )
            engine = Engine(store, {"local": LocalTransport(self.root / "markers")}, on_event=sinks)
            sinks.pass_started("c0ffee")
            try:
                report = engine.run_pass(desired, "c0ffee", 10)
            except BaseException as exc:
                sinks.pass_failed(exc)
                raise
            finally:
                sinks.close(10)
            sinks.pass_finished(report)
            return report
        finally:
            if own:
                store.close()

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Raw SQL on the store, in its backend's dialect; the rows it returned."""
        if self.url.startswith("postgresql://"):
            with psycopg.connect(self.url, autocommit=True) as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        with sqlite3.connect(self.url[len("sqlite:///") :]) as conn:
            return conn.execute(query, params).fetchall()

    def command(self, module: ModuleType, words: tuple[str, ...], *argv: str) -> tuple[int, str]:
        """`reconcile WORDS ARGV` on this project's store and inventory, in-process."""
        return run_command(module, words, *argv, state=self.url, inventory=self.inventory)

    def audit(self, *argv: str) -> tuple[int, str]:
        """`reconcile audit ARGV --state URL` in-process: (exit code, stdout)."""
        return self.command(audit_cmd, ("audit",), *argv)

    @property
    def key(self) -> Path:
        return self.root / "state" / "audit.key"


__all__ = ["InProcessProject", "run_command"]
