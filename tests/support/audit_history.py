"""An audit history with a checkpoint in the middle, for the tests that tamper with the audit
log of a `Project` (tests/support/project.py) and check that `audit verify` notices.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.adapters.audit import checkpoint as cp


def history_with_a_secret_task(project, tmp_path: Path) -> tuple[Path, int]:
    """Pass 1 runs `covert`; an export checkpoints the log; pass 2 runs `other`. Returns the
    checkpoint file and the seq of the first entry of pass 2."""
    project.task("covert", "command: echo covert\n")
    project.run("--once", "-q", code=0)
    early = tmp_path / "early.jsonl"
    project.run("audit", "export", "-o", str(early), code=0)
    (project.inventory / "tasks" / "ops" / "covert.yaml").unlink()
    project.task("other", "command: echo other\n")
    project.run("--once", "-q", code=0)
    checkpoint, _ = cp.read_checkpoint(early)
    return early, checkpoint.count + 1


__all__ = ["history_with_a_secret_task"]
