"""A forged prune anchor cannot hide deleted audit entries (issue 11 item 13).

Whoever can write the SQLite store can delete the first entries of the audit log (say, every
entry about one task) and insert a prune anchor that matches the first entry left, so the
rest still chains. Anchors are signed like checkpoints now: `audit verify` (with or without
a checkpoint older than the anchor) reports such a deletion, exit 1; an anchor a real
`queue prune --archive` left still verifies."""

from __future__ import annotations

import sqlite3

from tests.support.audit_history import history_with_a_secret_task


def _entries(project) -> list[tuple[int, str, str]]:
    with sqlite3.connect(project.state) as db:
        return db.execute("SELECT seq, action, hash FROM audit_log ORDER BY seq").fetchall()


def _forge_anchor(project, through: int) -> None:
    """Delete entries up to `through` and anchor the rest at it, as an attacker would."""
    with sqlite3.connect(project.state) as db:
        digest = db.execute("SELECT hash FROM audit_log WHERE seq = ?", (through,)).fetchone()[0]
        db.execute("DELETE FROM audit_log WHERE seq <= ?", (through,))
        db.execute(
            "INSERT INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (through, digest, "2026-01-01T00:00:00Z"),
        )


def test_deleting_the_first_entries_behind_a_forged_anchor_is_reported(project, tmp_path):
    early, first_of_pass_2 = history_with_a_secret_task(project, tmp_path)
    _forge_anchor(project, first_of_pass_2)
    assert not any("covert" in action for _, action, _ in _entries(project))
    plain = project.run("audit", "verify", code=1)
    assert "tampered:" in plain.out and "anchor" in plain.out
    against = project.run(
        "audit", "verify", "--checkpoint", str(early), "--format", "json", code=1
    ).json()
    assert against["ok"] is False and any("anchor" in p for p in against["problems"])


def test_a_forged_anchor_is_not_laundered_by_a_later_prune_or_export(project, tmp_path):
    _, first_of_pass_2 = history_with_a_secret_task(project, tmp_path)
    _forge_anchor(project, first_of_pass_2)
    project.run(
        "queue", "prune", "--older-than", "0s", "--archive", str(tmp_path / "archive.jsonl"), code=1
    )
    project.run("audit", "export", "-o", str(tmp_path / "late.jsonl"), code=1)
    project.run("audit", "verify", code=1)


def test_an_anchor_left_by_prune_with_an_archive_verifies_with_and_without_a_checkpoint(
    project, tmp_path
):
    early, _ = history_with_a_secret_task(project, tmp_path)
    archive = tmp_path / "archive.jsonl"
    project.run("queue", "prune", "--older-than", "0s", "--archive", str(archive), code=0)
    with sqlite3.connect(project.state) as db:
        assert db.execute("SELECT seq FROM audit_anchor").fetchone() is not None
    assert "audit log intact" in project.run("audit", "verify", code=0).out
    project.run("audit", "verify", "--checkpoint", str(archive), code=0)
    project.run("audit", "verify", "--checkpoint", str(early), code=0)
