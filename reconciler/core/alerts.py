"""Alert policy (SPEC §4): which run transitions alert, what the alert says, whom it goes to.

Pure: values in, values out; no clock, no I/O. The sinks feed it the engine's events plus the
one fact an event does not carry (the previous outcome of the task on the machine, for
`recovered`); the store remembers what was sent (`record_alert`), and `notify` delivers.

Events: `failed` (a run ended failed and its task's `failure_action` is `alert`), `unknown`,
`blocked`, `recovered` (a run succeeded, or was skipped by its check, on a machine where the
task's previous run, any version, ended failed, blocked or unknown), `unreachable` (a machine
could not be reached). One alert per (task, version, machine, outcome): the dedupe key. An
alert of one side clears the memory of the other side for the same (task, machine), so a
task that fails, recovers and fails again alerts three times, and a scheduled task that keeps
failing alerts once.

Issue 15 §5 adds: `drift` (a check failed on a converged target and the command set it right:
once per (task, version, machine) until a run finds the check holding again, so a check that
never holds alerts once), `overdue` (a run still running `alert_after` after it started: once
per run), `missed` (a scheduled run not started within `grace` of its slot: once per
waiting run, whose slot moves to the latest due one while it waits: see `plan.Reslot`) and
`succeeded` (once per run; opt-in, see `OPT_IN`). Issue 16 §2 adds `killed` (a run stopped by
`queue kill`: once per run); issue 15 §1 and §3 `halted` (a rollout stopped past its failure
budget: once per version of the task until it is resumed) and `awaiting_approval` (a new
version waits for approvals: once per version of the task). Adding an event is one line of
`KINDS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from reconciler.core.durations import format_duration
from reconciler.core.missed import MissedSlot
from reconciler.core.model import AlertTarget, FailureAction, Team, VaultRef
from reconciler.core.state import PROBLEM, Run, RunStatus


@dataclass(frozen=True)
class EventKind:
    """What an alert event is: its apprise notify type (how a receiver colours it), and
    whether it is opt-in (sent only to a target whose `on:` lists it)."""

    severity: str
    opt_in: bool = False


# Every alert event `on:` accepts (the team schema's enum lists the same names).
KINDS: dict[str, EventKind] = {
    "failed": EventKind("failure"),
    "unknown": EventKind("warning"),
    "blocked": EventKind("warning"),
    "recovered": EventKind("success"),
    "unreachable": EventKind("failure"),
    "drift": EventKind("warning"),
    "overdue": EventKind("warning"),
    "missed": EventKind("warning"),
    "halted": EventKind("failure"),
    "awaiting_approval": EventKind("info"),
    "killed": EventKind("warning"),
    "succeeded": EventKind("success", opt_in=True),
}
EVENTS = tuple(KINDS)
OPT_IN = frozenset(name for name, kind in KINDS.items() if kind.opt_in)
SEVERITY = {name: kind.severity for name, kind in KINDS.items()}
PROBLEM_EVENTS = ("failed", "unknown", "blocked")
# Events with no opposite side: remembered only when a target wants them (their memory
# ends nothing).
UNPAIRED_EVENTS = (
    "drift",
    "overdue",
    "missed",
    "succeeded",
    "killed",
    "halted",
    "awaiting_approval",
)
# Events alerted once per run, not once per (task, version, machine): each kill is someone's
# deliberate act on that run.
PER_RUN_EVENTS = ("killed",)
# Runs enqueued for these reasons re-check a target that was converged: a failed check there
# is drift. Not a new version's first run (its check fails because it is new), nor a
# scheduled slot (its check may well fail at every slot: that is the work to do).
DRIFT_REASONS = ("drift",)
OUTPUT_LINES = 10  # the last lines of output an alert quotes
MACHINE_SUBJECT = "machine"  # the task id slot of a machine alert's title

Redact = Callable[[str], str]


@dataclass(frozen=True)
class AlertKey:
    """The dedupe key: one alert per (task, version, machine, outcome). A machine alert has
    empty task and version."""

    task: str
    version: str
    machine: str
    outcome: str


@dataclass(frozen=True)
class Alert:
    """An alert to send: its key, the run that caused it, its text (already redacted)."""

    key: AlertKey
    team: str
    run_id: int | None
    title: str
    body: str

    @property
    def event(self) -> str:
        return self.key.outcome

    @property
    def severity(self) -> str:
        return SEVERITY[self.event]

    @property
    def id(self) -> str:
        """A stable id: the same key and run always give the same id, in every process."""
        return _digest(
            self.key.task,
            self.key.version,
            self.key.machine,
            self.key.outcome,
            str(self.run_id or ""),
        )[:16]

    @property
    def resets(self) -> tuple[str, ...]:
        """The outcomes whose memory this alert clears for its (task, machine)."""
        if self.event == "recovered":
            return PROBLEM_EVENTS
        if self.event in PROBLEM_EVENTS:
            return ("recovered",)
        return ()


@dataclass(frozen=True)
class Delivery:
    """One alert for one target: a row of the outbox until delivered.

    `target` describes the target without its secret: `url:<apprise url>` for a plain URL,
    `vault:<NAME>` for `{vault: NAME}` (resolved again at each attempt, never stored).
    """

    id: str
    alert_id: str
    team: str
    target: str
    event: str
    title: str
    body: str
    attempts: int = 0
    last_error: str | None = None


# --- which events alert -------------------------------------------------------------------------


# The events that give a run its final status: seen ending (`finished`), or adopted later from
# what its target kept after a lost connection or a killed reconciler (`recovered`). An adopted
# `failed` alerts exactly as one seen failing would (the alert key keeps it to one).
OBSERVED_END = ("finished", "recovered")


def wants_previous(kind: str, run: Run) -> bool:
    """Whether `decide` needs the previous outcome for this event: only a success may be a
    recovery, so only then is the store asked."""
    return kind in OBSERVED_END and run.status.is_success


def outcome_of(
    kind: str, run: Run, failure_action: FailureAction, previous: RunStatus | None = None
) -> str | None:
    """The alert event an engine event stands for, or None.

    `previous` is the status of the task's run on the same machine before this one (any
    version; cancelled runs do not count), asked only when `wants_previous`. A recovery from
    a failure that was not alerted (`failure_action: ignore`) is not announced either.
    """
    status = run.status
    if kind == "blocked" or (kind in OBSERVED_END and status is RunStatus.BLOCKED):
        return "blocked"
    if kind in OBSERVED_END and status is RunStatus.UNKNOWN:
        return "unknown"
    if kind in OBSERVED_END and status is RunStatus.KILLED:
        return "killed"
    if kind not in OBSERVED_END:
        return None
    if status is RunStatus.FAILED:
        return "failed" if failure_action is FailureAction.ALERT else None
    # A halted run never ran: what follows it recovers from nothing.
    if status.is_success and previous in PROBLEM and previous is not RunStatus.HALTED:
        ignored = previous is RunStatus.FAILED and failure_action is FailureAction.IGNORE
        return None if ignored else "recovered"
    return None


def decide(
    kind: str,
    run: Run,
    *,
    failure_action: FailureAction = FailureAction.ALERT,
    previous: RunStatus | None = None,
    commit: str | None = None,
    redact: Redact = lambda text: text,
) -> Alert | None:
    """The alert for an engine event (`Event.kind`, `Event.run`), or None."""
    event = outcome_of(kind, run, failure_action, previous)
    if event is None:
        return None
    version = per_run(run) if event in PER_RUN_EVENTS else run.version
    return _run_alert(run, event, version, commit, redact)


def decide_all(
    kind: str,
    run: Run,
    *,
    failure_action: FailureAction = FailureAction.ALERT,
    previous: RunStatus | None = None,
    checked: bool = False,
    commit: str | None = None,
    redact: Redact = lambda text: text,
) -> tuple[Alert, ...]:
    """Every alert of an engine event: `decide`'s, else `drift` (`checked`: the run's task
    has a check), and `succeeded` for a run that ended succeeded."""
    found = []
    first = decide(
        kind, run, failure_action=failure_action, previous=previous, commit=commit, redact=redact
    )
    if first is not None:
        found.append(first)
    elif drifted(kind, run, checked):
        found.append(_run_alert(run, "drift", run.version, commit, redact))
    if kind in OBSERVED_END and run.status is RunStatus.SUCCEEDED:
        found.append(_run_alert(run, "succeeded", per_run(run), commit, redact))
    return tuple(found)


def drifted(kind: str, run: Run, checked: bool) -> bool:
    """Whether a run corrected drift: its task has a check, the check failed (a run whose
    check holds ends `skipped`), the command then succeeded, and the run re-checked a target
    that was converged (not a new version's or target's first run). Only a run seen ending
    counts: one adopted after a lost connection may report its check's exit."""
    return (
        checked
        and kind == "finished"
        and run.status is RunStatus.SUCCEEDED
        and run.reason in DRIFT_REASONS
    )


def converged(kind: str, run: Run, checked: bool) -> bool:
    """Whether the run found its check holding: the end of a drift episode."""
    return checked and kind == "finished" and run.status is RunStatus.SKIPPED


def per_run(run: Run) -> str:
    """The version slot of the dedupe key of a once-per-run event."""
    return f"{run.version}@run{run.id}"


def overdue(run: Run, after: int, commit: str | None = None, redact: Redact = lambda t: t):
    """The alert for a run still running `after` seconds after it started (once per run)."""
    alert = _run_alert(run, "overdue", per_run(run), commit, redact)
    started = run.started_at.isoformat() if run.started_at else "-"
    note = f"started: {started}\nstill running after alert_after ({format_duration(after)})"
    return replace(alert, body=redact(f"{note}\n{alert.body}"))


def missed(slot: MissedSlot, redact: Redact = lambda text: text) -> Alert:
    """The alert for a scheduled run not started within its task's `grace`: once per run
    (keyed by it, not by its slot: a run that waits through several slots takes each as it
    comes due, and still alerts once). No run id on the alert itself: the run waits, and its
    later alerts must not look older than this one."""
    body = (
        f"slot: {slot.slot}\nnot started by: {slot.deadline.isoformat()} "
        f"(grace {format_duration(slot.grace)})\nrun: {slot.run} (pending)"
        + (f"\nheld: {slot.held}" if slot.held else "")
    )
    return Alert(
        AlertKey(slot.task, f"{slot.version}@run {slot.run}", slot.machine, "missed"),
        slot.task.split("/", 1)[0],
        None,
        redact(title(slot.task, "missed", slot.machine)),
        redact(body),
    )


def halted(
    run: Run,
    reason: str,
    release: str,
    commit: str | None = None,
    redact: Redact = lambda text: text,
) -> Alert:
    """The alert of a rollout that halted: once per version of the task (`release`: its
    versions on every target, `TaskSpec.release`), whichever of its runs ended `halted`
    first says so (`queue retry` of a halted run, a resume, forgets it)."""
    body = (
        f"version: {release}\n{reason}\nfirst run halted: {run.id} on {run.machine}\n"
        f"commit: {run.commit or commit or '-'}"
    )
    return Alert(
        AlertKey(run.task, release, "", "halted"),
        run.team,
        run.id,
        redact(f"reconciler: {run.task} rollout halted"),
        redact(body),
    )


def awaiting_approval(
    run: Run, held: str, release: str, redact: Redact = lambda text: text
) -> Alert:
    """The alert of a new version that waits for approvals: once per version of the task
    (`release`, as for `halted`). No run id: the run waits, and its later alerts must not
    look older than this one."""
    body = (
        f"version: {release}\nheld: {held}\nrun: {run.id} on {run.machine} (pending)\n"
        f"approve it with: reconcile approve {run.task} --key KEY"
    )
    return Alert(
        AlertKey(run.task, release, "", "awaiting_approval"),
        run.team,
        None,
        redact(f"reconciler: {run.task} awaiting approval"),
        redact(body),
    )


def _run_alert(run: Run, event: str, version: str, commit: str | None, redact: Redact) -> Alert:
    return Alert(
        AlertKey(run.task, version, run.machine, event),
        run.team,
        run.id,
        redact(title(run.task, event, run.machine)),
        redact(run_body(run, commit)),
    )


def unreachable(
    machine: str, team: str, error: str = "", redact: Redact = lambda text: text
) -> Alert:
    """The alert for a machine that could not be reached."""
    body = f"machine: {machine}\nerror: {error or 'unreachable'}"
    return Alert(
        AlertKey("", "", machine, "unreachable"),
        team,
        None,
        redact(title(MACHINE_SUBJECT, "unreachable", machine)),
        redact(body),
    )


def commit_refused(commit: str, team: str, error: str, redact: Redact = lambda text: text) -> Alert:
    """The alert for a commit a pass refused to run (rewritten history, a bad signature)."""
    return Alert(
        AlertKey("", commit, "", "refused"),
        team,
        None,
        redact(f"reconciler: commit {commit[:12]} refused"),
        redact(f"commit: {commit}\nreason: {error}\nnothing from it runs"),
    )


# --- what an alert says -------------------------------------------------------------------------


def title(subject: str, status: str, machine: str) -> str:
    """SPEC §4: `reconciler: <task id> <status> on <machine>`."""
    return f"reconciler: {subject} {status} on {machine}"


def run_body(run: Run, commit: str | None = None) -> str:
    """Exit code, attempts, commit, error and the last lines of output (SPEC §4)."""
    lines = [
        f"run: {run.id}",
        f"exit code: {'-' if run.exit_code is None else run.exit_code}",
        f"attempts: {run.attempt}",
        f"commit: {run.commit or commit or '-'}",
    ]
    if run.error:
        lines.append(f"error: {run.error}")
    tail = output_tail(run.output)
    if tail:
        lines += [f"last {OUTPUT_LINES} lines of output:", tail]
    return "\n".join(lines)


def output_tail(output: str | None, lines: int = OUTPUT_LINES) -> str:
    """The last `lines` non-trailing lines of `output`."""
    return "\n".join((output or "").rstrip("\n").splitlines()[-lines:])


def with_id(body: str, alert_id: str) -> str:
    """The body as delivered: the alert's stable id last, so a receiver can tell a late
    delivery of an alert from a new one."""
    return f"{body}\n\nalert id: {alert_id}"


# --- whom it goes to ------------------------------------------------------------------------------


def targets_for(team: Team | None, event: str) -> list[AlertTarget]:
    """The team's alert targets that want `event` (`on:` filters; none given: every event
    but the opt-in ones)."""
    if team is None:
        return []
    return [t for t in team.alerts if wants(t, event)]


def wants(target: AlertTarget, event: str) -> bool:
    """Whether `target` wants `event`: listed in its `on:`, or no `on:` and not opt-in."""
    return event in target.on if target.on is not None else event not in OPT_IN


def anyone_wants(teams: Iterable[Team], event: str) -> bool:
    return any(wants(t, event) for team in teams for t in team.alerts)


def describe(target: AlertTarget) -> str:
    """The outbox form of a target: `vault:NAME` or `url:<url>` (no resolved secret)."""
    if isinstance(target.url, VaultRef):
        return f"vault:{target.url.name}"
    return f"url:{target.url}"


def deliveries(alert: Alert, targets: Iterable[AlertTarget]) -> list[Delivery]:
    """One outbox row per distinct target; the id is stable for (alert, target)."""
    rows: dict[str, Delivery] = {}
    for target in targets:
        described = describe(target)
        delivery_id = _digest(alert.id, described)[:20]
        rows.setdefault(
            described,
            Delivery(
                delivery_id,
                alert.id,
                alert.team,
                described,
                alert.event,
                alert.title,
                with_id(alert.body, alert.id),
            ),
        )
    return list(rows.values())


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


__all__ = [
    "EVENTS",
    "KINDS",
    "OPT_IN",
    "Alert",
    "AlertKey",
    "Delivery",
    "EventKind",
    "anyone_wants",
    "awaiting_approval",
    "converged",
    "decide",
    "decide_all",
    "deliveries",
    "describe",
    "drifted",
    "halted",
    "missed",
    "outcome_of",
    "overdue",
    "per_run",
    "run_body",
    "targets_for",
    "title",
    "unreachable",
    "wants",
    "wants_previous",
    "with_id",
]
