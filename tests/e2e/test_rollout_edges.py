"""Rollouts (issue 15 §1) at their edges, as a tired operator meets them: through `reconcile`
on local machines, alerts to a real HTTP receiver (apprise `json://`)."""

from __future__ import annotations

import pytest

from tests.support.alert_receiver import AlertReceiver


@pytest.fixture
def receiver():
    made = AlertReceiver()
    yield made
    made.close()


def _machines(project, *names: str, frozen: str = "") -> None:
    for name in names:
        freeze = 'suspend: {reason: "INC-9 failover"}\n' if name == frozen else ""
        project.write(
            f"machines/{name}.yaml", f"name: {name}\nteam: ops\ntransport: local\n{freeze}"
        )


def test_a_missed_slot_its_rollout_batch_holds_says_so_in_the_alert(project, receiver):
    p = project
    p.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url('/all')}]\n")
    _machines(p, "m1", "m2", frozen="m1")
    p.write(
        "tasks/ops/backup.yaml",
        f"name: backup\nmachines: [m1, m2]\ncommand: {p.record('backup')}\n"
        "schedule: '* * * * *'\ngrace: 0s\nrollout: {batches: [1, 100%]}\n",
    )
    p.run("--once", code=0)
    p.run("--once", code=0)

    missed = {
        b["title"]: b["message"]
        for b in receiver.bodies
        if b["title"].split(" ")[2:3] == ["missed"]
    }
    assert set(missed) == {
        "reconciler: ops/backup missed on m1",
        "reconciler: ops/backup missed on m2",
    }
    assert (
        "held: freeze on machine m1 (INC-9 failover)"
        in missed["reconciler: ops/backup missed on m1"]
    )
    assert (
        "held: rollout: batch 2 of 2 waits for batch 1"
        in missed["reconciler: ops/backup missed on m2"]
    )
    assert p.ledger_lines() == []
