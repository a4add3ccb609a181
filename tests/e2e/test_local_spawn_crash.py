"""A pass killed while the local transport starts a command (issue: the flaky
`test_kill_9_mid_run_reruns_an_idempotent_task`).

The transport keeps each command's process group in `.reconciler/runs/<run>.pgid`, so that the
next pass can stop an orphan before re-running an idempotent task. The marker used to be
written after the command was spawned, and the command ran meanwhile: a reconciler killed in
between (under load, after the command had already done its work) left an orphan no marker
named, and the next pass ran the task again beside it. Now the command waits for its marker.
"""

from __future__ import annotations

import os
import signal

from tests.support.waiting import wait_until


def _commands_mentioning(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if text.encode() not in cmdline.read():
                    continue
            with open(f"/proc/{pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue  # gone meanwhile
        found.append(int(pid))
    return found


def test_a_pass_killed_between_spawn_and_marker_leaves_no_command_running(project):
    # Run 1 would outlive its pass (sleep 60); the re-run (run 2) ends at once.
    project.task(
        "idem",
        "idempotent: true\n"
        f'command: echo "$RECONCILE_RUN_ID" >> "{project.ledger}"; '
        'if [ "$RECONCILE_RUN_ID" = 1 ]; then sleep 60; fi\n',
    )
    try:
        crashed = project.run("--once", env={"RECONCILER_FAILPOINTS": "after_spawn=crash"})
        assert crashed.code == -signal.SIGKILL, crashed.err
        # Its command was spawned but had no marker: it must give up, not run unseen.
        wait_until(
            lambda: not _commands_mentioning(str(project.ledger)),
            timeout=10,
            message="the command spawned by the killed pass to end without running",
        )
        assert project.ledger_lines() == []

        second = project.run("--once", "--format", "json", code=1)
        statuses = sorted((r["status"], r["reason"]) for r in second.json()["runs"])
        assert statuses == [("succeeded", "retry"), ("unknown", "new")]
        assert project.ledger_lines() == ["2"]  # run 1's command never ran
    finally:
        for pid in _commands_mentioning(str(project.ledger)):  # only after a failure
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
