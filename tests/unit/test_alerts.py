"""The alert policy (reconciler.core.alerts): which transitions alert, what the alert says, whom it
goes to. Pure: no store, no network."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core import alerts
from reconciler.core.model import AlertTarget, FailureAction, Team, VaultRef
from reconciler.core.redact import Redactor
from reconciler.core.state import Run, RunStatus

ALERT, IGNORE = FailureAction.ALERT, FailureAction.IGNORE


def run(status=RunStatus.FAILED, **fields) -> Run:
    base = dict(
        id=7,
        task="prod/web",
        machine="prod-01",
        version="v1",
        priority=3,
        status=status,
        attempt=2,
        exit_code=3,
        commit="abc123",
        output="",
        error=None,
    )
    return Run(**{**base, **fields})


def test_a_failed_run_alerts_only_when_its_failure_action_is_alert():
    assert alerts.outcome_of("finished", run(), ALERT) == "failed"
    assert alerts.outcome_of("finished", run(), IGNORE) is None


def test_unknown_runs_alert_whether_they_finished_or_were_recovered_so():
    assert alerts.outcome_of("finished", run(RunStatus.UNKNOWN), IGNORE) == "unknown"
    assert alerts.outcome_of("recovered", run(RunStatus.UNKNOWN), ALERT) == "unknown"
    assert alerts.outcome_of("recovered", run(RunStatus.PENDING), ALERT) is None


def test_blocked_runs_alert():
    assert alerts.outcome_of("blocked", run(RunStatus.BLOCKED), IGNORE) == "blocked"


def test_a_success_after_a_problem_on_the_same_machine_is_a_recovery():
    for status in (RunStatus.SUCCEEDED, RunStatus.SKIPPED):
        assert alerts.wants_previous("finished", run(status))
        for previous in (RunStatus.FAILED, RunStatus.UNKNOWN, RunStatus.BLOCKED):
            assert alerts.outcome_of("finished", run(status), ALERT, previous) == "recovered"
        assert alerts.outcome_of("finished", run(status), ALERT, RunStatus.SUCCEEDED) is None
        assert alerts.outcome_of("finished", run(status), ALERT, None) is None


def test_a_recovery_from_an_unalerted_failure_is_not_announced():
    succeeded = run(RunStatus.SUCCEEDED)
    assert alerts.outcome_of("finished", succeeded, IGNORE, RunStatus.FAILED) is None
    assert alerts.outcome_of("finished", succeeded, IGNORE, RunStatus.UNKNOWN) == "recovered"


def test_only_a_finished_success_needs_the_previous_outcome():
    assert not alerts.wants_previous("finished", run(RunStatus.FAILED))
    assert not alerts.wants_previous("started", run(RunStatus.RUNNING))
    assert not alerts.wants_previous("retrying", run(RunStatus.PENDING))


def test_other_events_never_alert():
    for kind in ("enqueued", "started", "retrying", "held", "cancelled"):
        assert alerts.decide(kind, run(), failure_action=ALERT) is None


def test_title_and_body_follow_the_spec():
    output = "".join(f"line {i}\n" for i in range(1, 16))
    alert = alerts.decide("finished", run(output=output, error="exit code 3"), commit="pass-sha")
    assert alert.title == "reconciler: prod/web failed on prod-01"
    body = alert.body.splitlines()
    assert {"exit code: 3", "attempts: 2", "commit: abc123", "error: exit code 3"} <= set(body)
    assert body[-10:] == [f"line {i}" for i in range(6, 16)]  # the last lines of output
    assert "line 5" not in body
    assert (alert.team, alert.run_id, alert.severity) == ("prod", 7, "failure")


def test_the_pass_commit_is_used_when_the_run_has_none():
    alert = alerts.decide("finished", run(commit=None), commit="pass-sha")
    assert "commit: pass-sha" in alert.body.splitlines()


def test_title_and_body_are_redacted():
    redact = Redactor(["hunter2-secret"])
    alert = alerts.decide(
        "finished",
        run(
            task="prod/hunter2-secret",
            output="token=hunter2-secret\n",
            error="failed with hunter2-secret",
        ),
        redact=redact,
    )
    assert "hunter2-secret" not in alert.title + alert.body
    assert "***" in alert.body


def test_the_alert_id_is_stable_and_names_key_and_run():
    first = alerts.decide("finished", run())
    assert first.id == alerts.decide("finished", run(output="different")).id
    assert first.id != alerts.decide("finished", run(id=8)).id
    assert first.id != alerts.decide("finished", run(RunStatus.UNKNOWN)).id
    assert first.key == alerts.AlertKey("prod/web", "v1", "prod-01", "failed")


def test_each_side_of_a_transition_resets_the_other():
    assert set(alerts.decide("finished", run()).resets) == {"recovered"}
    recovered = alerts.decide("finished", run(RunStatus.SUCCEEDED), previous=RunStatus.FAILED)
    assert set(recovered.resets) == {"failed", "unknown", "blocked"}
    assert recovered.severity == "success"


def test_targets_are_filtered_by_their_on_list():
    team = Team(
        "prod",
        alerts=(
            AlertTarget("json://a"),
            AlertTarget("json://b", ("recovered",)),
            AlertTarget(VaultRef("HOOK"), ("failed", "unknown")),
        ),
    )
    assert [t.url for t in alerts.targets_for(team, "failed")] == ["json://a", VaultRef("HOOK")]
    assert [t.url for t in alerts.targets_for(team, "recovered")] == ["json://a", "json://b"]
    assert alerts.targets_for(None, "failed") == []


def test_deliveries_describe_targets_without_secrets_and_carry_the_alert_id():
    alert = alerts.decide("finished", run())
    targets = [AlertTarget("json://a"), AlertTarget(VaultRef("HOOK")), AlertTarget("json://a")]
    rows = alerts.deliveries(alert, targets)
    assert [r.target for r in rows] == ["url:json://a", "vault:HOOK"]  # one per target
    assert len({r.id for r in rows}) == 2
    assert rows == alerts.deliveries(alert, targets)  # stable ids
    assert all(r.alert_id == alert.id and r.body.endswith(f"alert id: {alert.id}") for r in rows)


def test_a_machine_alert():
    alert = alerts.unreachable("prod-01", "prod", "connection refused")
    assert alert.title == "reconciler: machine unreachable on prod-01"
    assert alert.key == alerts.AlertKey("", "", "prod-01", "unreachable")
    assert "connection refused" in alert.body and alert.run_id is None


@given(
    st.sampled_from(list(RunStatus)),
    st.sampled_from(["finished", "blocked", "recovered"]),
    st.sampled_from(list(FailureAction)),
    st.sampled_from([None, *RunStatus]),
)
def test_decisions_name_a_known_event_and_match_their_key(status, kind, action, previous):
    alert = alerts.decide(kind, run(status), failure_action=action, previous=previous)
    if alert is not None:
        assert alert.event in alerts.EVENTS
        assert alert.title == f"reconciler: prod/web {alert.event} on prod-01"


def test_a_killed_run_alerts_killed_once_per_run_whatever_its_failure_action():
    for action in FailureAction:
        first = alerts.decide("finished", run(RunStatus.KILLED), failure_action=action)
        assert first is not None and first.event == "killed"
    again = alerts.decide("finished", run(RunStatus.KILLED, id=8))
    assert first.key != again.key  # each kill is someone's act on that run: not deduped
    assert first.resets == ()  # a kill clears nothing
    assert alerts.outcome_of("started", run(RunStatus.KILLED), FailureAction.ALERT) is None


def test_a_success_after_a_killed_run_is_a_recovery():
    assert (
        alerts.outcome_of(
            "finished", run(RunStatus.SUCCEEDED), FailureAction.ALERT, RunStatus.KILLED
        )
        == "recovered"
    )
