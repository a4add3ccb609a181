"""Renderings of plans, runs and summaries as text, JSON and markdown.

Views are pure: values in, a string out. JSON field names are a stable contract (SPEC §4):
fields may be added, never renamed.

A command returns its result as an `Output` (the value, and how it reads as text or
markdown) with its exit code; `cli.main` prints it in the format asked for, so no command
body decides between JSON and text.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

# A run's JSON (`queue list`, `queue show`) is shared with the web console, a lower tier.
from reconciler.core.errors import UsageError
from reconciler.core.run_view import iso, run_json  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # types only: core.plan imports croniter, which `validate` need not load
    from reconciler.core.holds import Hold
    from reconciler.core.plan import Plan
    from reconciler.core.state import Run


@dataclass(frozen=True)
class Output:
    """What a command found: `data` is its JSON form; `text` (and `markdown`, where the
    command writes it) render the same for a person. `warnings` go to stderr before the text
    form (the JSON form carries them in `data` where the command reports them)."""

    data: object
    text: Callable[[], str] = lambda: ""
    markdown: Callable[[], str] | None = None
    exit_code: int = 0
    warnings: Sequence[object] = ()
    # A verdict that is an error: JSON reports it on stdout (`data`); in text it is raised,
    # for cli.main to print one located line per problem on stderr.
    failure: Exception | None = None


def render(output: Output, fmt: str) -> str:
    """`output` in the format `fmt` (text, json or markdown), ending with one newline."""
    if output.failure is not None and fmt != "json":
        raise output.failure
    if fmt == "json":
        rendered = to_json(output.data)
    elif fmt == "markdown" and output.markdown is not None:
        rendered = output.markdown()
    else:
        rendered = output.text()
    return rendered if rendered.endswith("\n") else rendered + "\n"


def to_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A fixed-width text table; readable in a terminal and in CI logs alike."""
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else str(c) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def validate_text(counts: Mapping[str, int], warnings: int) -> str:
    """`validate`'s verdict for a valid inventory (its warnings went to stderr before it)."""
    return (
        f"valid: {counts['teams']} teams, {counts['machines']} machines, {counts['tasks']} tasks"
        + (f", {warnings} warnings" if warnings else "")
    )


def vault_names_text(team: str, names: Sequence[str]) -> str:
    """`vault list`: the names of a team's secrets, one a line (never a value)."""
    return "\n".join(names) if names else f"(vault of team '{team}' is empty)"


def status_text(data: Mapping) -> str:
    """`status`: queue depth, running runs, recent failures, held runs, then the machines
    (`data` is the JSON form, `metrics.StatusNumbers.to_json()`)."""
    depth, by_team = data["queue_depth"], data["by_team"]
    lines = [
        "queue depth by priority: " + ", ".join(f"{p}: {n}" for p, n in depth.items()),
        "queue depth by team:     "
        + (", ".join(f"{t}: {n}" for t, n in by_team.items()) or "empty"),
        f"running: {data['running']}    failed, blocked, unknown or halted in the last 24h: "
        f"{data['failed_last_24h']}    alerts waiting in the outbox: {data['alert_outbox']}",
    ]
    lines += [f"rollout {r['task']}: {rollout_line(r)}" for r in data.get("rollouts", ())]
    lines += [
        f"held by {h['reason']}: run {h['run']} {h['task']} on "
        f"{h['machine']} (priority {h['priority']})"
        for h in data["held"]
    ]
    machines = table(
        ("MACHINE", "TEAM", "TRANSPORT", "UP", "RUNNING", "PENDING"),
        [
            (
                m["name"],
                m["team"],
                m["transport"],
                "yes" if m["up"] else "NO",
                m["running"],
                m["pending"],
            )
            for m in data["machines"]
        ],
    )
    return "\n".join(lines) + "\n\n" + machines


def rollout_line(stand: Mapping) -> str:
    """Where a rollout stands (`Stand.to_json`), in a line: `batch 2 of 3 (m2) paused until
    ... (0 failed, 0 allowed)`; the open batch is the one whose runs may start or run."""
    count, batch = len(stand["batches"]), stand["batch"]
    budget = f"{stand['failed']} failed, {stand['max_failed']} allowed"
    if stand["state"] == "halted":
        return f"halted at batch {batch} of {count} ({budget})"
    machines = ", ".join(stand["batches"][batch - 1])
    if stand["state"] == "paused":
        return (
            f"batch {batch} of {count} ({machines}) paused until {stand['paused_until']} ({budget})"
        )
    return f"batch {batch} of {count} ({machines}) open ({budget})"


def rollouts_text(stands: Sequence[Mapping]) -> str:
    """`plan`'s rollouts: each task's batches and where it stands ("" when none)."""
    if not stands:
        return ""
    lines = [
        f"  {s['task']}: "
        + "; ".join(f"batch {i}: {', '.join(b)}" for i, b in enumerate(s["batches"], 1))
        + f"; {rollout_line(s)}"
        for s in stands
    ]
    return "\n\nRollouts:\n" + "\n".join(lines)


def rollouts_markdown(stands: Sequence[Mapping]) -> str:
    if not stands:
        return ""
    lines = ["", "| rollout | batches | now |", "|---|---|---|"]
    for s in stands:
        batches = "<br>".join(
            f"{i}. {', '.join(f'`{m}`' for m in b)}" for i, b in enumerate(s["batches"], 1)
        )
        lines.append(f"| `{s['task']}` | {batches} | {rollout_line(s)} |")
    return "\n".join(lines) + "\n"


def init_text(written: Sequence, next_steps: str) -> str:
    """`init`: each file of the scaffold and what was done with it, then what to do next."""
    lines = [f"{item.action:<11} {item.path}" for item in written]
    return "\n".join([*lines, "", next_steps])


def prune_text(done: Mapping) -> str:
    """`queue prune`: how many runs, audit entries and alerts were removed."""
    archived = f" (archived to {done['archive']})" if done.get("archive") else ""
    text = (
        f"pruned {done['runs']} runs, {done['audit_entries']} audit entries and "
        f"{done['outbox']} delivered alerts{archived}"
    )
    if not done.get("archive"):
        text += "\nthe audit log was kept whole: prune it with --archive FILE"
    return text


def _held_note(hold: Hold | None) -> str:
    return f"held by {hold.describe()}" if hold is not None else ""


def plan_text(plan: Plan) -> str:
    """The plan in run order, then the cancels; one line each."""
    if plan.is_empty:
        return "No changes: every task is in its desired state."
    parts = [f"Plan: {len(plan.enqueue)} to run, {len(plan.cancel)} to cancel."]
    if plan.enqueue:
        rows = [
            (i, e.priority, e.task, e.machine, e.reason.value, _held_note(e.hold))
            for i, e in enumerate(plan.enqueue, 1)
        ]
        parts.append(table(("#", "PRIO", "TASK", "MACHINE", "REASON", "NOTE"), rows))
    if plan.cancel:
        rows = [(c.run, c.task, c.machine, c.reason) for c in plan.cancel]
        parts.append("Cancel:\n" + table(("RUN", "TASK", "MACHINE", "REASON"), rows))
    return "\n\n".join(parts)


def plan_markdown(plan: Plan) -> str:
    """The plan as a pull-request comment: a summary line and a table."""
    lines = [f"**reconciler plan:** {len(plan.enqueue)} to run, {len(plan.cancel)} to cancel", ""]
    if plan.enqueue:
        lines += ["| # | priority | task | machine | reason | note |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {i} | {e.priority} | `{e.task}` | `{e.machine}` | {e.reason.value} | "
            + _held_note(e.hold).replace("|", "\\|")
            + " |"
            for i, e in enumerate(plan.enqueue, 1)
        ]
        lines.append("")
    if plan.cancel:
        lines += ["| cancel run | task | machine | reason |", "|---|---|---|---|"]
        lines += [f"| {c.run} | `{c.task}` | `{c.machine}` | {c.reason} |" for c in plan.cancel]
    return "\n".join(lines).rstrip() + "\n"


def runs_text(runs: Sequence[Run]) -> str:
    if not runs:
        return "No runs."
    rows = [
        (
            r.id,
            r.task,
            r.machine,
            r.status.value,
            r.priority,
            r.attempt,
            "" if r.exit_code is None else r.exit_code,
            iso(r.finished_at or r.started_at or r.created_at),
            printable(f"manual by {r.actor}: {r.reason}") if r.manual else "",
        )
        for r in runs
    ]
    return table(
        ("RUN", "TASK", "MACHINE", "STATUS", "PRIO", "ATTEMPT", "EXIT", "WHEN", "TRIGGER"), rows
    )


def is_control(char: str) -> bool:
    """A character a terminal acts on rather than shows (C0, DEL, C1; NUL and newline too)."""
    return unicodedata.category(char) == "Cc"


def utf8_argument(flag: str, text: str) -> str:
    """`text` given to `flag`, refused (UsageError, exit 2) unless it is UTF-8. Python keeps
    each byte of an argument that is not UTF-8 as a lone surrogate (U+DC80-U+DCFF), which no
    store, log or terminal can take as text: it would end the command later, half done."""
    at = next((i for i, char in enumerate(text) if "\ud800" <= char <= "\udfff"), None)
    if at is None:
        return text
    byte = ord(text[at]) - 0xDC00
    shown = f"byte 0x{byte:02x}" if 0x80 <= byte <= 0xFF else f"character U+{ord(text[at]):04X}"
    raise UsageError(
        f"{flag} is not valid UTF-8 ({shown} at character {at + 1}): write it in UTF-8"
    )


def printable(text: str) -> str:
    """`text` with every control character (newline, escape, ...) written as its escape
    (`\\n`, `\\x1b`): a reason, actor or error recorded by someone else must not start a
    line of its own or steer the reader's terminal. The run's output is shown as it is."""
    if not any(map(is_control, text)):
        return text
    return "".join(repr(char)[1:-1] if is_control(char) else char for char in text)


def queue_change_text(verb: str, run: Run) -> str:
    """What `queue cancel` or `queue retry` did to `run`."""
    if verb == "cancel":
        return f"run {run.id} cancelled"
    return f"run {run.id} ({run.task} on {run.machine}) will run again at the next pass"


def run_detail_text(run: Run) -> str:
    fields = run_json(run)
    fields["params"] = " ".join(f"{k}={v}" for k, v in run.params) or None
    lines = [
        f"{k + ':':<12} {'' if v is None else printable(str(v))}"
        for k, v in fields.items()
        if k != "error"
    ]
    if run.error:
        lines.append(f"{'error:':<12} {printable(run.error)}")
    lines.append("output:")
    lines.append(run.output.rstrip("\n") if run.output else "(none)")
    return "\n".join(lines)


def summary_text(
    runs: Sequence[Run],
    counts: Mapping[str, int],
    held: Mapping[int, Hold],
    elsewhere: int = 0,
) -> str:
    """The end of `--once`: each run of the pass, then the counts. `elsewhere`: runs of
    other passes still queued or running, so an empty pass does not claim that all is done."""
    if not runs and elsewhere:
        return (
            f"Nothing new to plan; {elsewhere} run{'s' if elsewhere != 1 else ''} of other "
            f"passes {'are' if elsewhere != 1 else 'is'} still queued or running."
        )
    if not runs:
        return "Nothing to do: every task is in its desired state."
    lines = []
    for run in sorted(runs, key=lambda r: r.id):
        note = run.error or ""
        if run.id in held and run.status.is_active:
            note = _held_note(held[run.id])
        lines.append(
            f"{run.status.value:<10} {run.task} on {run.machine} "
            f"(run {run.id}, attempt {run.attempt})" + (f": {note}" if note else "")
        )
    lines.append("")
    lines.append(
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
    )
    return "\n".join(lines)


def once_text(
    runs: Sequence[Run],
    counts: Mapping[str, int],
    held: Mapping[int, Hold],
    stopped_by: str | None,
    left_behind: Sequence[Run],
    elsewhere: int = 0,
) -> str:
    """The end of `--once`: the summary, and what a signal left undone."""
    summary = summary_text(runs, counts, held, elsewhere)
    return summary + ("\n" + left_behind_text(stopped_by, left_behind) if stopped_by else "")


def left_behind_text(signal_name: str, runs: Sequence[Run]) -> str:
    """What a pass stopped by a signal left undone, one line per run."""
    lines = [
        f"stopped by {signal_name}: {len(runs)} run{'s' if len(runs) != 1 else ''} left "
        "behind (the next pass takes them up)"
    ]
    lines += [f"  run {r.id} {r.task} on {r.machine}: {r.status.value}" for r in runs]
    return "\n".join(lines)
