"""Rollouts (issue 15 §1): a new version reaches its targets batch by batch, stops by itself
past its failure budget (the runs not started end `halted`, the team gets one alert, the pass
exits 1), `queue retry` of a halted run resumes it, a new version starts again at batch 1,
`verify` fails a run whose command succeeded, and `--once` waits for a pause only up to
`--max-wait`. Through `reconcile` on four local machines, alerts to a real HTTP receiver
(apprise `json://`). The pauses that pass run in-process with the engine's clock fixed
(`Engine(clock=...)`), as the time-zone tests do: nothing waits for real."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport.local import LocalTransport
from reconciler.pipeline.engine import Engine
from tests.support.alert_receiver import AlertReceiver
from tests.support.in_process import InProcessProject

MACHINES = ("m1", "m2", "m3", "m4")


@pytest.fixture
def receiver():
    made = AlertReceiver()
    yield made
    made.close()


def _fleet(project, rollout: str, command: str | None = None, receiver=None) -> None:
    """Four local machines m1..m4 and task `deploy` on all of them with `rollout`; the
    command appends the machine's name to the ledger and fails on m2 unless `command`."""
    alerts = f"alerts: [{receiver.url('/all')}]\n" if receiver is not None else ""
    project.write("teams/ops.yaml", f"name: ops\n{alerts}")
    for name in MACHINES:
        project.write(f"machines/{name}.yaml", f"name: {name}\nteam: ops\ntransport: local\n")
    command = command or (
        f'echo "$RECONCILE_MACHINE" >> "{project.ledger}"; test "$RECONCILE_MACHINE" != m2'
    )
    project.write(
        "tasks/ops/deploy.yaml",
        f"name: deploy\nmachines: [m1, m2, m3, m4]\ncommand: '{command}'\nrollout: {rollout}\n",
    )


def _statuses(data: dict, task: str = "ops/deploy") -> dict[str, str]:
    return {r["machine"]: r["status"] for r in data["runs"] if r["task"] == task}


def _halted_titles(receiver) -> list[str]:
    return [t for t in receiver.titles() if t.endswith("rollout halted")]


def test_a_failure_halts_the_rollout_starts_nothing_more_and_alerts_the_team_once(
    project, receiver
):
    p = project
    _fleet(p, "{batches: [1, 50%, 100%]}", receiver=receiver)
    p.write(
        "tasks/ops/after.yaml",
        "name: notify\nmachines: [m1, m2, m3, m4]\nafter: [deploy]\ncommand: 'true'\n",
    )
    plan = p.run("plan", code=0).out
    assert "batch 2 of 3 waits for batch 1" in plan and "batch 3 of 3 waits for batch 2" in plan

    data = p.run("--once", "--format", "json", code=1).json()

    assert p.ledger_lines() == ["m1", "m2"]  # m3 and m4 never started
    assert _statuses(data) == {"m1": "succeeded", "m2": "failed", "m3": "halted", "m4": "halted"}
    halted = [r for r in data["runs"] if r["status"] == "halted"]
    assert all("rollout halted: 1 run of this version failed" in r["error"] for r in halted)
    # What depends on a halted run is blocked, as after a failure.
    assert _statuses(data, "ops/notify") == {
        "m1": "succeeded",
        "m2": "blocked",
        "m3": "blocked",
        "m4": "blocked",
    }
    assert _halted_titles(receiver) == ["reconciler: ops/deploy rollout halted"]
    body = next(b["message"] for b in receiver.bodies if b["title"].endswith("rollout halted"))
    assert "1 run of this version failed (none allowed by max_failed)" in body
    with sqlite3.connect(p.state) as db:
        audited = db.execute(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'run.halted'"
        ).fetchone()[0]
    assert audited == 2

    # Halted is final: the next pass runs nothing and alerts nothing again.
    again = p.run("--once", "--format", "json", code=0).json()
    assert again["runs"] == [] and p.ledger_lines() == ["m1", "m2"]
    assert len(_halted_titles(receiver)) == 1
    status = p.run("status", "--format", "json", code=0).json()
    assert status["rollouts"] == [
        {
            "task": "ops/deploy",
            "state": "halted",
            "batch": 3,
            "batches": [["m1"], ["m2"], ["m3", "m4"]],
            "failed": 1,
            "max_failed": 0,
            "paused_until": None,
        }
    ]


def test_queue_retry_of_a_halted_run_resumes_the_rollout_where_it_stopped(project, receiver):
    p = project
    _fleet(p, "{batches: [1, 50%, 100%]}", receiver=receiver)
    data = p.run("--once", "--format", "json", code=1).json()
    m3 = next(r["id"] for r in data["runs"] if r["machine"] == "m3")

    retried = p.run("queue", "retry", str(m3), code=0)
    assert "resuming the rollout of ops/deploy: 2 halted run(s)" in retried.err
    plan = p.run("plan", "--format", "json", code=0).json()
    assert sorted((e["machine"], e["reason"]) for e in plan["enqueue"]) == [
        ("m3", "resume"),
        ("m4", "resume"),
    ]
    assert all("held" not in e for e in plan["enqueue"])  # the earlier failure is forgiven

    resumed = p.run("--once", "--format", "json", code=0).json()
    assert _statuses(resumed) == {"m3": "succeeded", "m4": "succeeded"}
    assert sorted(p.ledger_lines()) == ["m1", "m2", "m3", "m4"]
    assert len(_halted_titles(receiver)) == 1


def test_a_halted_rollout_resumed_that_fails_again_halts_and_alerts_again(project, receiver):
    p = project
    fails_on_m2_and_m4 = (
        f'echo "$RECONCILE_MACHINE" >> "{p.ledger}"; '
        'test "$RECONCILE_MACHINE" != m2 -a "$RECONCILE_MACHINE" != m4'
    )
    _fleet(p, "{batches: [1, 50%, 75%, 100%]}", fails_on_m2_and_m4, receiver)
    data = p.run("--once", "--format", "json", code=1).json()
    m3 = next(r["id"] for r in data["runs"] if r["machine"] == "m3")
    p.run("queue", "retry", str(m3), code=0)

    resumed = p.run("--once", "--format", "json", code=1).json()

    assert _statuses(resumed) == {"m3": "succeeded", "m4": "failed"}
    assert len(_halted_titles(receiver)) == 1  # m4 was the last target: nothing left to halt
    assert p.ledger_lines() == ["m1", "m2", "m3", "m4"]


def test_a_new_version_starts_again_at_batch_one(project):
    p = project
    _fleet(p, "{batches: [1, 50%, 100%]}")
    p.run("--once", code=1)
    _fleet(p, "{batches: [1, 50%, 100%]}", f'echo "v2 $RECONCILE_MACHINE" >> "{p.ledger}"')

    plan = p.run("plan", "--format", "json", code=0).json()
    held = {e["machine"]: e.get("held") for e in plan["enqueue"]}
    assert plan["rollouts"] == [
        {
            "task": "ops/deploy",
            "state": "running",
            "batch": 1,
            "batches": [["m1"], ["m2"], ["m3", "m4"]],
            "failed": 0,
            "max_failed": 0,
            "paused_until": None,
        }
    ]
    assert held == {
        "m1": None,
        "m2": "rollout: batch 2 of 3 waits for batch 1",
        "m3": "rollout: batch 3 of 3 waits for batch 2",
        "m4": "rollout: batch 3 of 3 waits for batch 2",
    }
    p.run("--once", code=0)
    second = p.ledger.read_text().split("\n")[2:]
    assert second[:2] == ["v2 m1", "v2 m2"] and sorted(second[2:4]) == ["v2 m3", "v2 m4"]
    with sqlite3.connect(p.state) as db:
        times = dict(
            db.execute(
                "SELECT machine, started_at || ' ' || finished_at FROM runs "
                "WHERE status = 'succeeded' AND id > 4"
            ).fetchall()
        )
    started = {m: t.split(" ")[0] for m, t in times.items()}
    finished = {m: t.split(" ")[1] for m, t in times.items()}
    assert finished["m1"] <= started["m2"] and finished["m2"] <= min(started["m3"], started["m4"])


def test_a_failing_verify_fails_the_run_with_its_exit_code_and_output(project, receiver):
    p = project
    verify = 'test "$RECONCILE_MACHINE" != m1 || { echo "health: 503"; exit 7; }'
    _fleet(
        p,
        "{batches: [1, 100%], verify: '" + verify.replace("'", "''") + "'}",
        f'echo "deployed $RECONCILE_MACHINE" >> "{p.ledger}"; echo deployed',
        receiver,
    )

    data = p.run("--once", "--format", "json", code=1).json()

    assert _statuses(data) == {"m1": "failed", "m2": "halted", "m3": "halted", "m4": "halted"}
    m1 = next(r["id"] for r in data["runs"] if r["machine"] == "m1")
    shown = p.run("queue", "show", str(m1), "--format", "json", code=0).json()
    assert shown["exit_code"] == 7
    assert shown["error"] == "verify failed with exit code 7 (the command itself succeeded)"
    assert shown["output"] == "deployed\n--- verify ---\nhealth: 503\n"
    assert p.ledger_lines() == ["deployed", "m1"]
    assert _halted_titles(receiver) == ["reconciler: ops/deploy rollout halted"]


def test_a_budget_lets_that_many_runs_fail_before_the_rest_halt(project):
    p = project
    fails_on_m1_and_m2 = (
        f'echo "$RECONCILE_MACHINE" >> "{p.ledger}"; '
        'test "$RECONCILE_MACHINE" != m1 -a "$RECONCILE_MACHINE" != m2'
    )
    _fleet(p, "{batches: [1, 2, 100%], max_failed: 25%}", fails_on_m1_and_m2)

    data = p.run("--once", "--format", "json", code=1).json()

    # 25% of 4 targets: one failure is allowed (m1), the second (m2) halts m3 and m4.
    assert _statuses(data) == {"m1": "failed", "m2": "failed", "m3": "halted", "m4": "halted"}


def test_once_waits_for_a_pause_only_up_to_max_wait_and_lists_the_rest_held(project):
    p = project
    _fleet(p, "{batches: [1, 50%, 100%], pause: 1h}", f'echo "$RECONCILE_MACHINE" >> "{p.ledger}"')

    data = p.run("--once", "--max-wait", "5s", "--format", "json", code=0).json()

    assert p.ledger_lines() == ["m1"]
    held = {r["machine"]: r["held"] for r in data["runs"] if r["status"] == "pending"}
    assert held["m2"].startswith("rollout: batch 2 of 3 paused after batch 1 until ")
    assert held["m3"] == "rollout: batch 3 of 3 waits for batch 2"
    text = p.run("status", code=0).out
    assert "rollout ops/deploy: batch 2 of 3 (m2) paused until " in text
    p.run("--once", "--max-wait", "soon", code=2)


def test_once_waits_for_a_pause_that_ends_within_max_wait(project):
    p = project
    _fleet(p, "{batches: [1, 100%], pause: 1s}", f'echo "$RECONCILE_MACHINE" >> "{p.ledger}"')

    data = p.run("--once", "--format", "json", code=0).json()

    assert _statuses(data) == dict.fromkeys(MACHINES, "succeeded")
    with sqlite3.connect(p.state) as db:
        ends = dict(db.execute("SELECT machine, finished_at FROM runs").fetchall())
        starts = dict(db.execute("SELECT machine, started_at FROM runs").fetchall())
    first_end = datetime.fromisoformat(ends["m1"])
    assert all(datetime.fromisoformat(starts[m]) >= first_end for m in ("m2", "m3", "m4"))
    assert min(datetime.fromisoformat(starts[m]) for m in ("m2", "m3", "m4")) >= first_end.replace(
        microsecond=0
    ) + timedelta(seconds=1)


def test_a_pause_is_counted_from_the_end_of_the_batch_by_the_store_s_times(tmp_path):
    """Passes at fixed instants (the engine's clock): the next batch starts at the first pass
    after the pause, counted from the end of the batch before, and not one pass earlier."""
    p = InProcessProject(tmp_path)
    for name in MACHINES:
        p.write(f"machines/{name}.yaml", f"name: {name}\nteam: ops\ntransport: local\n")
    p.write(
        "tasks/ops/deploy.yaml",
        "name: deploy\nmachines: [m1, m2, m3, m4]\ncommand: 'true'\n"
        "rollout: {batches: [1, 50%, 100%], pause: 1h}\n",
    )
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    desired = p.desired()
    store = open_store(p.url)

    def pass_at(offset: timedelta) -> dict[str, str]:
        now = start + offset
        engine = Engine(store, {"local": LocalTransport(p.root / "markers")}, clock=lambda: now)
        engine.run_pass(desired, "c0ffee", 10)
        return dict(p.sql("SELECT machine, status FROM runs"))

    try:
        assert pass_at(timedelta(0)) == {
            "m1": "succeeded",
            "m2": "pending",
            "m3": "pending",
            "m4": "pending",
        }
        assert pass_at(timedelta(minutes=59))["m2"] == "pending"
        after_pause = pass_at(timedelta(hours=1))
        assert after_pause["m2"] == "succeeded" and after_pause["m3"] == "pending"
        assert pass_at(timedelta(hours=1, minutes=59))["m3"] == "pending"
        assert set(pass_at(timedelta(hours=2)).values()) == {"succeeded"}
    finally:
        store.close()


def test_awaiting_approval_alerts_once_per_version(project, receiver):
    p = project
    p.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url('/all')}]\n")
    p.task("deploy", "command: 'true'\napproval: {role: admin}\n")

    data = p.run("--once", "--format", "json", code=0).json()
    assert data["runs"][0]["held"] == "awaiting approval (0 of 1 admin approval)"
    p.run("--once", code=0)
    assert receiver.titles("awaiting approval") == ["reconciler: ops/deploy awaiting approval"]
    assert "reconcile approve ops/deploy" in receiver.bodies[0]["message"]

    p.task("deploy", "command: 'true # v2'\napproval: {role: admin}\n")
    p.run("--once", code=0)
    assert len(receiver.titles("awaiting approval")) == 2


def test_bad_rollouts_are_refused_with_their_place_and_nothing_runs(project):
    p = project
    _fleet(p, "{batches: [1, 50%, 25%], max_failed: many}")
    result = p.run("--once", code=2)
    assert (
        "tasks/ops/deploy.yaml:4:29: rollout.batches[2] (25%) is not more than "
        "rollout.batches[1] (50%)" in result.err
    )
    assert "tasks/ops/deploy.yaml:4:47: rollout.max_failed must be a number of runs" in result.err
    assert "Traceback" not in result.err and not p.state.exists()
