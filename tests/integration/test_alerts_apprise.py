"""Alerts through apprise to a real HTTP receiver (`json://127.0.0.1:PORT/path`).

Each pass runs in this process exactly as `reconcile --once` will: a fresh store object on the
same SQLite file (a restart), the engine on the local transport, the sinks as its `on_event`,
and `close(10)` at the end (`--once` waits for its alerts). The receiver
(tests/support/alert_receiver.py) is `http.server` in a thread; it records every request it
gets, answers with the status the test sets, or holds the request until the test releases it
(a receiver that never answers). Nothing sleeps: waits are on the receiver's own signals,
with deadlines.
"""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport.local import LocalTransport
from reconciler.adapters.vault import age, team_vault
from reconciler.adapters.vault.secrets import VaultSecrets
from reconciler.core.compile import compile_inventory
from reconciler.core.redact import Redactor
from reconciler.inventory.loader import load_inventory
from reconciler.pipeline.engine import Engine
from reconciler.pipeline.metrics import Metrics
from reconciler.pipeline.sinks import build_sinks
from tests.support.alert_receiver import AlertReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-db-password-4711"
HOOK_TOKEN = "tok-9f8e7d6c5b4a"


class Project:
    """An inventory (team `ops` with alert targets, local machine `box`), its vault, and
    passes run in this process."""

    def __init__(self, root: Path):
        self.root = root
        self.inventory = root / "inventory"
        self.state = f"sqlite:///{root / 'state.db'}"
        self.identity = age.generate_x25519()
        self.metrics = Metrics()
        self.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\n")

    def write(self, relative: str, text: str) -> None:
        path = self.inventory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    def team(self, alerts: str) -> None:
        self.write(
            "teams/ops.yaml",
            "name: ops\nalerts:\n" + textwrap.indent(textwrap.dedent(alerts), "  "),
        )

    def vault(self, **secrets: str) -> None:
        team_vault.write(
            team_vault.vault_path(self.inventory, "ops"), secrets, [self.identity.recipient()]
        )

    def task(self, name: str, body: str) -> None:
        self.write(
            f"tasks/ops/{name}.yaml", f"name: {name}\nmachines: [box]\n" + textwrap.dedent(body)
        )

    def open(self):
        return open_store(self.state)

    def run_pass(self, *, wait: float = 10.0, timeout: float = 5.0, hook=None):
        """One `--once` pass with a new store object; returns (report, drained)."""
        inventory, _ = load_inventory(self.inventory)
        desired = compile_inventory(inventory)
        redactor = Redactor()
        resolver = VaultSecrets(self.inventory, [self.identity], redactor)
        store = self.open()
        try:
            sinks = build_sinks(
                store,
                inventory,
                desired,
                redactor,
                resolver,
                commit="c0ffee",
                metrics=self.metrics,
                delivery_timeout=timeout,
            )
            engine = Engine(
                store,
                {"local": LocalTransport(self.root / "markers")},
                on_event=sinks,
                resolve=sinks.audit_resolver(resolver),
                redactor=redactor,
            )
            sinks.pass_started("c0ffee")
            report = engine.run_pass(desired, "c0ffee", 10)
            sinks.pass_finished(report)
            if hook is not None:
                hook(sinks)
            drained = sinks.close(wait)
        finally:
            store.close()
        return report, drained

    def outbox(self) -> int:
        store = self.open()
        try:
            return store.outbox_pending()
        finally:
            store.close()


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


def failing_task(project: Project, name: str = "deploy") -> None:
    project.task(
        name,
        """\
        env: {DB_PASSWORD: {vault: DB_PASSWORD}}
        command: |
          echo "connecting with $DB_PASSWORD"
          echo "giving up"
          exit 4
        """,
    )


def alert_id(body: dict) -> str:
    return body["message"].rsplit("alert id: ", 1)[1].strip()


def test_a_failed_run_alerts_every_target_once_with_title_body_and_no_secret(project, receiver):
    project.vault(DB_PASSWORD=SECRET, ALERT_URL=receiver.url(f"/vault/{HOOK_TOKEN}"))
    project.team(f"""\
        - {{vault: ALERT_URL}}
        - url: {receiver.url("/plain")}
          on: [failed]
        - url: {receiver.url("/recoveries")}
          on: [recovered]
        """)
    failing_task(project)
    report, drained = project.run_pass()
    assert report.exit_code == 1 and drained
    assert sorted(r["path"] for r in receiver.requests) == ["/plain", f"/vault/{HOOK_TOKEN}"]
    for body in receiver.delivered():
        assert body["title"] == "reconciler: ops/deploy failed on box"
        assert body["type"] == "failure"
        lines = body["message"].splitlines()
        assert {"exit code: 4", "attempts: 1", "commit: c0ffee"} <= set(lines)
        assert "connecting with ***" in lines and "giving up" in lines
        assert SECRET not in json.dumps(body) and HOOK_TOKEN not in body["message"]
    assert len({alert_id(b) for b in receiver.delivered()}) == 1
    assert project.outbox() == 0


def test_no_alert_repeats_across_passes_restarts_and_a_retry_of_the_same_version(project, receiver):
    project.vault(DB_PASSWORD=SECRET)
    project.team(f"- {receiver.url()}\n")
    failing_task(project)
    project.run_pass()
    assert len(receiver.requests) == 1
    project.run_pass()  # a new store object on the same file: a restart; nothing re-runs
    store = project.open()
    try:
        [failed] = store.list_runs()
        store.request_retry(failed.id, failed.finished_at)
    finally:
        store.close()
    report, _ = project.run_pass()  # the same version fails again: same dedupe key
    assert [r.status.value for r in report.runs.values()] == ["failed"]
    assert len(receiver.requests) == 1


def test_a_fix_sends_recovered_to_the_targets_that_want_it_and_a_new_failure_alerts_again(
    project, receiver
):
    project.vault(DB_PASSWORD=SECRET)
    project.team(f"""\
        - url: {receiver.url("/all")}
        - url: {receiver.url("/failures")}
          on: [failed]
        """)
    failing_task(project)
    project.run_pass()
    project.task("deploy", "command: echo fixed\n")  # a new version that succeeds
    project.run_pass()
    project.task("deploy", "command: exit 9\n")  # and a newer one that fails again
    project.run_pass()
    seen = [(r["path"], r["body"]["title"]) for r in receiver.requests]
    assert seen.count(("/all", "reconciler: ops/deploy failed on box")) == 2
    assert ("/all", "reconciler: ops/deploy recovered on box") in seen
    assert ("/failures", "reconciler: ops/deploy recovered on box") not in seen
    recovered = next(r["body"] for r in receiver.requests if "recovered" in r["body"]["title"])
    assert recovered["type"] == "success"


def test_failure_action_ignore_sends_nothing(project, receiver):
    project.team(f"- {receiver.url()}\n")
    project.task("flaky", "command: exit 1\nretry: {failure_action: ignore}\n")
    report, _ = project.run_pass()
    assert report.exit_code == 1
    assert receiver.requests == []


def test_a_receiver_answering_500_leaves_the_pass_alone_and_gets_the_alert_later(project, receiver):
    project.vault(DB_PASSWORD=SECRET)
    project.team(f"- {receiver.url()}\n")
    failing_task(project)
    receiver.status = 500
    report, drained = project.run_pass()
    assert report.exit_code == 1 and drained  # the run's failure, not the alert's
    assert [r["status"] for r in receiver.requests] == [500]
    assert project.outbox() == 1
    failures = project.metrics.text()
    assert 'reconciler_alert_delivery_failures_total{team="ops"} 1.0' in failures
    receiver.status = 200
    project.run_pass()  # the next pass sends what waits in the outbox
    assert [r["status"] for r in receiver.requests] == [500, 200]
    first, second = (r["body"] for r in receiver.requests)
    assert alert_id(first) == alert_id(second) and first["title"] == second["title"]
    assert project.outbox() == 0
    project.run_pass()
    assert len(receiver.requests) == 2


def test_a_receiver_that_is_down_gets_the_alert_when_it_is_back(project):
    down = AlertReceiver()
    port = down.port
    down.close()  # nothing listens on the port now: connection refused
    project.vault(DB_PASSWORD=SECRET)
    project.team(f"- json://127.0.0.1:{port}/hook\n")
    failing_task(project)
    report, drained = project.run_pass()
    assert report.exit_code == 1 and drained
    assert project.outbox() == 1
    back = AlertReceiver(port=port)
    try:
        project.run_pass()
        [body] = back.delivered()
        assert body["title"] == "reconciler: ops/deploy failed on box"
    finally:
        back.close()
    assert project.outbox() == 0


def test_a_receiver_that_never_answers_does_not_hold_the_pass(project, receiver):
    project.vault(DB_PASSWORD=SECRET)
    project.team(f"- {receiver.url()}\n")
    failing_task(project)
    receiver.hold.set()
    in_flight = []

    def check(sinks):  # the pass has ended; its alert is still waiting on the receiver
        wait_until(receiver.held.is_set, message="the receiver to hold the alert")
        in_flight.append(receiver.requests == [])

    report, drained = project.run_pass(wait=0.2, timeout=5.0, hook=check)
    assert report.exit_code == 1 and in_flight == [True]
    assert not drained  # `close` gave up waiting; the delivery stays in the outbox
    receiver.released.set()
    assert project.outbox() == 1


def test_a_target_whose_vault_secret_is_missing_is_skipped_with_an_error(project, receiver, caplog):
    project.vault(DB_PASSWORD=SECRET)  # no ALERT_URL in it
    project.team(f"""\
        - {{vault: ALERT_URL}}
        - {receiver.url()}
        """)
    failing_task(project)
    with caplog.at_level(logging.WARNING):
        report, _ = project.run_pass()
    assert report.exit_code == 1
    assert len(receiver.delivered()) == 1  # the other target still gets it
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and "ALERT_URL" in r.getMessage()
    ]
    assert errors and SECRET not in caplog.text
    assert project.outbox() == 1  # kept: a later pass may have the secret


def test_an_unreachable_machine_alerts_once_until_it_is_reachable_again(project, receiver):
    project.team(f"- {receiver.url()}\n")
    project.task("ok", "command: 'true'\n")

    def flap(sinks):
        sinks.machine_unreachable("box", "connection refused")
        sinks.machine_unreachable("box", "connection refused")
        assert 'reconciler_machine_up{machine="box",team="ops"} 0.0' in project.metrics.text()
        sinks.machine_reachable("box")
        sinks.machine_unreachable("box", "timed out")

    project.run_pass(hook=flap)
    titles = [b["title"] for b in receiver.delivered()]
    assert titles == ["reconciler: machine unreachable on box"] * 2
    assert "timed out" in receiver.delivered()[1]["message"]
