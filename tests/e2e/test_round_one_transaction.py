"""A scheduling round claims its runs and marks them dispatched in one transaction (issue 13,
group commit), through the CLI on the real SQLite store.

When the round's audit entry of a dispatch cannot be written, nothing of the round commits:
the run stays `pending` (not claimed and stranded `running` until recovery), no `run.claimed`
entry is left without its dispatch, nothing is sent, and the pass exits 3. Once the store
accepts entries again the next pass runs it normally.
"""

from __future__ import annotations

import sqlite3

from tests.support.store_rows import store_rows


def test_a_round_whose_dispatch_entry_is_refused_leaves_its_run_pending(project):
    p = project
    p.task("first", f"command: {p.record('first')}\n")
    p.run("--once", "-q", code=0)  # creates the store
    with sqlite3.connect(p.state) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.action = "
            "'run.dispatched' BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
        )
    p.task("second", f"command: {p.record('second')}\n")
    refused = p.run("--once", "-q")
    assert refused.code == 3, refused.err
    assert "Traceback" not in refused.err
    assert p.ledger_lines() == ["first"]  # nothing of the round was sent
    [(status, dispatched, epoch, run_id)] = store_rows(
        p.state, "SELECT status, dispatched, epoch, id FROM runs WHERE task = 'ops/second'"
    )
    assert (status, dispatched, epoch) == ("pending", 0, 0)  # the claim did not commit either
    entries = store_rows(p.state, "SELECT action, detail FROM audit_log")
    assert not [d for a, d in entries if a == "run.claimed" and f'"run":{run_id}' in d]
    with sqlite3.connect(p.state) as db:
        db.execute("DROP TRIGGER refuse")
    p.run("--once", "-q", code=0)
    assert p.ledger_lines() == ["first", "second"]
    verified = p.run("audit", "verify", "--format", "json", code=0).json()
    assert verified["ok"]
