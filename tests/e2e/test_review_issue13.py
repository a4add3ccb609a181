"""Hostile review of issue 13 (the redesigned run pipeline) through the CLI on the real SQLite
store: each defect found is an `xfail(strict=True)` test that fails today."""

from __future__ import annotations

import sys

from tests.support.store_rows import store_rows

REFUSE = """
import sqlite3, sys
with sqlite3.connect(sys.argv[1]) as db:
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.action = "
        "'run.dispatched' BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    )
"""


def test_a_refused_round_never_loses_the_success_of_the_run_before_it(project):
    """Machine `box` runs one run at a time. `first` (priority 1) succeeds; while it runs,
    the store starts refusing `run.dispatched` entries (the fault model of
    test_round_one_transaction). The round that would start `second` fails, as it must (exit
    3, `second` stays pending). `first` had ended before that round: its success must be
    recorded; today it stays `running` and the next pass records it `unknown` (alerted, and
    a non-idempotent task then waits for a human)."""
    p = project
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    p.state.parent.mkdir(parents=True)
    script = p.root / "refuse.py"
    script.write_text(REFUSE)
    p.task(
        "first",
        f'priority: 1\ncommand: {p.record("first")}; "{sys.executable}" "{script}" "{p.state}"\n',
    )
    p.task("second", f"command: {p.record('second')}\n")
    refused = p.run("--once", "-q")
    assert refused.code == 3, refused.err
    assert "Traceback" not in refused.err
    assert p.ledger_lines() == ["first"]
    rows = dict(store_rows(p.state, "SELECT task, status FROM runs"))
    assert rows == {"ops/first": "succeeded", "ops/second": "pending"}, rows
