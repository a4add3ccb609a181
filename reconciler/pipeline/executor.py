"""One claimed run: resolve its environment, run the check, run the command, judge the outcome.

`execute` does the I/O (through a transport); `judge` and `next_attempt_at` are the pure
policy: what a completed command means for the run, and when a failed attempt may retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from reconciler.adapters.transport.base import Completed, RunControl, Transport, run_key
from reconciler.core.durations import format_duration
from reconciler.core.errors import ConnectionLost, TransportError, Unreachable, VaultError
from reconciler.core.model import Machine, RetryPolicy, TaskSpec, VaultRef
from reconciler.core.params import defaults
from reconciler.core.redact import Secret
from reconciler.core.state import Run, RunStatus

# Resolves a task's `{vault: NAME}` for a team; raises VaultError when it cannot.
SecretResolver = Callable[[str, VaultRef], "str | Secret"]


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to. `retryable` is False for failures a retry cannot fix."""

    status: RunStatus
    exit_code: int | None = None
    output: str = ""
    error: str | None = None
    retryable: bool = True
    unreachable: bool = False  # the machine could not be reached (one alert per machine)
    # The tail of `output` that was not streamed live (the rollout's verify, mark included):
    # where the run's output is the streamed one, this is appended to it.
    unstreamed: str = ""


def no_vault(team: str, ref: VaultRef) -> Secret:
    """The resolver used when no identity is configured: every secret is unavailable."""
    raise VaultError(
        f"cannot read secret '{ref.name}' of team '{team}': no identity "
        "(set --identity, RECONCILE_IDENTITY_FILE or RECONCILE_IDENTITY)"
    )


def run_environment(run: Run, spec: TaskSpec, resolve: SecretResolver) -> dict[str, str | Secret]:
    """The task's env with secrets resolved (as `Secret`s: they never print), its parameters
    (their defaults, then the values the run was asked with: `reconcile run --param`), plus
    the run's identity for the command. Everything goes to the command's environment, never
    into its shell text."""
    env: dict[str, str | Secret] = {
        "RECONCILE_RUN_ID": str(run.id),
        "RECONCILE_TASK": run.task,
        "RECONCILE_MACHINE": run.machine,
        "RECONCILE_ATTEMPT": str(run.attempt),
        "RECONCILE_VERSION": run.version,
    }
    for name, value in spec.env:
        env[name] = resolve(spec.team, value) if isinstance(value, VaultRef) else value
    env.update(defaults(spec.params))
    env.update(run.params)
    return env


# After a kill, how long to wait (beyond its grace) for the command's process group to be
# gone before the run is recorded `killed` anyway.
KILL_WAIT = 60.0


def execute(
    run: Run,
    spec: TaskSpec,
    machine: Machine,
    transport: Transport,
    resolve: SecretResolver = no_vault,
    control: RunControl | None = None,
) -> Outcome:
    """Execute one attempt of `run`; never raises for a failure of the command or machine.
    `control` gets the command's output as it comes (not the check's) and may kill it: the
    outcome is then `killed` (never retried), once nothing of the command runs any more."""
    outcome = _attempt(run, spec, machine, transport, resolve, control)
    if control is None:
        return outcome
    control.finish()
    if not control.killed:
        return outcome
    control.wait_stopped((control.grace or 0) + KILL_WAIT)
    return killed(outcome)


def killed(outcome: Outcome) -> Outcome:
    """Pure: an attempt that a kill request stopped, with what it printed."""
    return Outcome(
        RunStatus.KILLED,
        exit_code=outcome.exit_code,
        output=outcome.output,
        error="killed",
        retryable=False,
    )


def _attempt(
    run: Run,
    spec: TaskSpec,
    machine: Machine,
    transport: Transport,
    resolve: SecretResolver,
    control: RunControl | None,
) -> Outcome:
    try:
        env = run_environment(run, spec, resolve)
    except VaultError as exc:
        return Outcome(RunStatus.FAILED, error=str(exc), retryable=False)
    key = run_key(run)  # kept with what the target keeps of the run, for its adoption
    try:
        budget = spec.timeout  # `timeout` bounds the whole run: check, command and verify
        if spec.check is not None:
            if control is not None:
                control.muted = True  # a kill stops the check too; its output is not the run's
            try:
                checked = transport.run(machine, spec.check, env, budget, run.id, control, key)
            finally:
                if control is not None:
                    control.muted = False
            if checked.ok:
                return Outcome(RunStatus.SKIPPED, exit_code=0, output=checked.output, error=None)
            budget = spec.timeout - checked.duration
            if checked.timed_out or budget <= 0:
                return check_timed_out(checked, spec.timeout)
            if control is not None and control.killed:  # asked during the check: `execute`
                # records it killed; the command never starts
                return Outcome(RunStatus.FAILED, output=checked.output, retryable=False)
        completed = transport.run(machine, spec.run, env, budget, run.id, control, key)
        outcome = judge(completed, spec.timeout)
        verify = spec.rollout.verify if spec.rollout is not None else None
        if verify is None or outcome.status is not RunStatus.SUCCEEDED:
            return outcome
        budget -= completed.duration
        if budget <= 0:
            return verify_timed_out(outcome, spec.timeout)
        if control is not None:
            control.muted = True  # a kill stops the verify too; its output joins at the end
        try:
            checked_after = transport.run(machine, verify, env, budget, run.id, control, key)
        finally:
            if control is not None:
                control.muted = False
        return verified(outcome, checked_after, spec.timeout)
    except ConnectionLost as exc:
        return Outcome(
            RunStatus.UNKNOWN, error=str(exc), retryable=False, unreachable=exc.unreachable
        )
    except Unreachable as exc:
        return Outcome(RunStatus.FAILED, error=str(exc), retryable=True, unreachable=True)
    except TransportError as exc:
        return Outcome(RunStatus.FAILED, error=str(exc), retryable=exc.retryable)


VERIFY_MARK = "--- verify ---"  # between the command's output and the verify's, on the run


def verified(command: Outcome, verify: Completed, timeout: float) -> Outcome:
    """Pure: a run whose command succeeded, judged by its rollout's `verify` too. A verify
    that fails fails the run, with the verify's exit code, its output after the command's,
    and an error that says the command itself succeeded."""
    separator = "" if not command.output or command.output.endswith("\n") else "\n"
    tail = f"{VERIFY_MARK}\n{verify.output}"
    output = f"{command.output}{separator}{tail}"
    if verify.ok:
        return replace(command, output=output, unstreamed=tail)
    if verify.timed_out:
        why = (
            f"verify timed out after the command succeeded (the task's timeout, "
            f"{format_duration(int(timeout))}, covers both); the process group was killed"
        )
        return Outcome(RunStatus.FAILED, output=output, error=why, unstreamed=tail)
    return Outcome(
        RunStatus.FAILED,
        exit_code=verify.exit_code,
        output=output,
        error=f"verify failed with exit code {verify.exit_code} (the command itself succeeded)",
        unstreamed=tail,
    )


def verify_timed_out(command: Outcome, timeout: float) -> Outcome:
    """Pure: the command succeeded but took the whole timeout: the verify cannot run, and a
    run that could not be verified is not a success."""
    return Outcome(
        RunStatus.FAILED,
        exit_code=command.exit_code,
        output=command.output,
        error=f"no time left to verify: the command took the task's whole timeout "
        f"({format_duration(int(timeout))})",
    )


def check_timed_out(checked: Completed, timeout: float) -> Outcome:
    """Pure: a check that did not answer within the run's timeout. Its silence says nothing
    about the machine's state, so the command must not run blind: the run fails."""
    return Outcome(
        RunStatus.FAILED,
        output=checked.output,
        error=f"check timed out after {format_duration(int(timeout))} (the task's "
        "timeout covers check and command); the process group was killed "
        "and the command did not run",
    )


def judge(completed: Completed, timeout: float) -> Outcome:
    """Pure: a finished command as a run outcome."""
    if completed.timed_out:
        return Outcome(
            RunStatus.FAILED,
            output=completed.output,
            error=f"timed out after {format_duration(int(timeout))}; the process group was killed",
        )
    if completed.exit_code == 0:
        return Outcome(RunStatus.SUCCEEDED, exit_code=0, output=completed.output)
    return Outcome(
        RunStatus.FAILED,
        exit_code=completed.exit_code,
        output=completed.output,
        error=f"exit code {completed.exit_code}",
    )


def next_attempt_at(
    policy: RetryPolicy, run: Run, outcome: Outcome, now: datetime
) -> datetime | None:
    """Pure: when the next attempt may start, or None when the run's failure is final."""
    if outcome.status is not RunStatus.FAILED or not outcome.retryable:
        return None
    if not policy.has_retry_after(run.attempt):
        return None
    # Seeded by the run and its attempt: spread across runs, the same for a re-judged attempt.
    seed = f"{run.id}:{run.attempt}"
    return now + timedelta(seconds=policy.delay_after(run.attempt, seed))


__all__ = [
    "Outcome",
    "check_timed_out",
    "execute",
    "judge",
    "killed",
    "next_attempt_at",
    "run_environment",
    "verified",
]
