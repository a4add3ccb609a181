"""A pass killed while its command runs over SSH: the next pass stops the orphan (its run stays
`unknown`, never re-run), and no later pass takes the exit of that stop (143, the reconciler's
own SIGTERM, which the target's wrapper records a moment later) for the task's result: before,
the third pass recorded the run again as `failed: exit code 143` and counted it a second time.

Real sshd, `reconcile` as a subprocess; the test waits on the target's exit marker, not on time.
"""

from __future__ import annotations

import pytest

from tests.support.cli import spawn
from tests.support.markers import exited
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_an_orphan_the_next_pass_stopped_is_never_adopted_as_failed(tmp_path, sshd, client_key):
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    ledger = tmp_path / "ledger"
    p.task("long", f'command: echo started >> "{ledger}"; sleep 1000\n')
    first = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root)
    wait_until(lambda: ledger.exists() or first.poll() is not None, timeout=30)
    assert first.poll() is None, first.communicate()
    first.kill()
    first.communicate(timeout=30)

    second = p.run("--once", "--format", "json", "--identity", str(p.key), code=1).json()
    [run] = second["runs"]
    assert (run["status"], run["exit_code"]) == ("unknown", None)
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    wait_until(lambda: exited(markers, run["id"]), timeout=30, message="the stopped exit")

    third = p.run("--once", "--format", "json", "--identity", str(p.key))
    assert (third.code, third.json()["runs"]) == (0, []), third.err
    shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert (shown["status"], shown["exit_code"]) == ("unknown", None)
    assert ledger.read_text() == "started\n"
