"""Renderings of a `diff.Diff`: text (a terminal, CI logs), JSON (SPEC §4) and markdown (a
pull-request comment: a summary line, a table, collapsible details).

Pure: a value in, a string out. Vault key names are shown, values never are (a `Diff` holds
none). JSON field names are a stable contract: fields may be added, never renamed.
"""

from __future__ import annotations

import re

from reconciler.cli.views import table, to_json
from reconciler.core.diff import (
    Diff,
    FreezeChange,
    Ran,
    Rerun,
    Revision,
    RoleChange,
    RolloutPlan,
    TaskChange,
    VaultChange,
)
from reconciler.core.durations import format_duration

NO_IDENTITY = "pass --identity to see which keys changed"
# A GitHub comment holds at most 65,536 characters: markdown tables stop after this many rows
# and say how many more there are (text and JSON are never cut).
MD_MAX_ROWS = 150


# --------------------------------------------------------------------------- shared wording


def summary(diff: Diff) -> str:
    """One line: what changed, in counts."""
    if diff.is_empty:
        return "no changes to the desired state"
    parts = [
        p
        for p in (
            _tasks_summary(diff),
            _counts("machines", diff.machines),
            _counts("teams", diff.teams),
            _roles_summary(diff),
            _vaults_summary(diff),
            "settings changed" if diff.settings else "",
        )
        if p
    ]
    return "; ".join(parts)


def _counts(noun: str, part) -> str:
    counts = [
        (len(part.added), "added"),
        (len(part.removed), "removed"),
        (len(part.changed), "changed"),
    ]
    shown = ", ".join(f"{n} {word}" for n, word in counts if n)
    return f"{noun}: {shown}" if shown else ""


def _tasks_summary(diff: Diff) -> str:
    text = _counts("tasks", diff.tasks)
    if not text:
        return ""
    machines = sorted({r.machine for r in diff.runs})
    if not diff.runs:
        return f"{text} (nothing re-runs)"
    return f"{text} ({_plural(len(diff.runs), 'run')} on {_plural(len(machines), 'machine')})"


def _roles_summary(diff: Diff) -> str:
    return _plural(len(diff.roles), "role change") if diff.roles else ""


def _vaults_summary(diff: Diff) -> str:
    return f"vaults: {len(diff.vaults)} changed" if diff.vaults else ""


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def revision_text(revision: Revision) -> str:
    return f"{revision.label} ({revision.short})" if revision.short else revision.label


def role_text(change: RoleChange, arrow: str = "->") -> str:
    """`operator -> admin`, `added as viewer`, `removed (was admin)`, `age/ssh key changed`."""
    if change.change == "added":
        return f"added as {change.after}"
    if change.change == "removed":
        return f"removed (was {change.before})"
    if change.change == "role":
        return f"{change.before} {arrow} {change.after}"
    return f"age/ssh key changed ({change.after}: the vault's recipients change)"


def keys_text(change: VaultChange, quote: str = "") -> str:
    """Which keys changed in a vault, or why that is unknown."""
    names = lambda keys: ", ".join(f"{quote}{k}{quote}" for k in keys)  # noqa: E731
    if change.keys is None:
        return f"{change.file} (keys not compared: {change.note or NO_IDENTITY})"
    if change.file == "added":
        return f"new vault: {names(change.keys.added) or 'no keys'}"
    if change.file == "removed":
        return f"vault removed (it held {names(change.keys.removed) or 'no keys'})"
    parts = [
        f"{word} {names(keys)}"
        for word, keys in (
            ("added", change.keys.added),
            ("removed", change.keys.removed),
            ("changed", change.keys.changed),
        )
        if keys
    ]
    return "; ".join(parts) if parts else "re-encrypted, no key changed"


def _machines_of(runs: tuple[Rerun, ...]) -> list[str]:
    return list(dict.fromkeys(r.machine for r in runs))


def _ran_index(diff: Diff) -> dict[tuple[str, str], Ran]:
    return {(r.task, r.machine): r for r in diff.ran or ()}


def _ran_text(ran: Ran | None) -> str:
    if ran is None or ran.run is None:
        return "not yet"
    return f"{ran.status.value} (run {ran.run})"


def _priority_text(change: TaskChange, arrow: str = "->") -> str:
    if change.priority != change.previous_priority:
        return f"{change.previous_priority} {arrow} {change.priority}"
    return str(change.priority)


# --------------------------------------------------------------------------- text


def diff_text(diff: Diff) -> str:
    """The diff for a terminal or a CI log."""
    head = f"diff {revision_text(diff.base)} -> {revision_text(diff.head)}: {summary(diff)}"
    sections = [head] + [
        s
        for s in (
            _tasks_section(diff),
            _runs_section(diff),
            _objects_section("Machines", diff.machines),
            _objects_section("Teams", diff.teams),
            _rollouts_section(diff),
            _freezes_section(diff),
            _roles_section(diff),
            _vaults_section(diff),
            _settings_section(diff),
            _requires_section(diff),
        )
        if s
    ]
    return "\n\n".join(sections) + "\n"


def _requires_section(diff: Diff) -> str:
    if not diff.requires:
        return ""
    return "Signing this change takes (git.verify):\n" + _indent("\n".join(diff.requires))


def _tasks_section(diff: Diff) -> str:
    rows = [("added", t, _runs_phrase(diff.runs_of(t), "runs")) for t in diff.tasks.added]
    rows += [("removed", t, "its pending runs are cancelled") for t in diff.tasks.removed]
    rows += [("changed", c.task, _change_phrase(diff, c)) for c in diff.tasks.changed]
    if not rows:
        return ""
    return "Tasks:\n" + _indent(table(("CHANGE", "TASK", "WHAT"), sorted(rows, key=_row_key)))


def _row_key(row) -> tuple:
    return ({"added": 0, "changed": 1, "removed": 2}[row[0]], row[1])


def _runs_phrase(runs: tuple[Rerun, ...], verb: str) -> str:
    if not runs:
        return "no target machine"
    priorities = sorted({r.priority for r in runs})
    where = ", ".join(_machines_of(runs))
    return f"{verb} on {where} at priority {', '.join(map(str, priorities))}"


def _change_phrase(diff: Diff, change: TaskChange) -> str:
    fields = ", ".join(
        f"priority {_priority_text(change)}" if f == "priority" else f for f in change.fields
    )
    if change.reruns:
        return f"{fields}: {_runs_phrase(diff.runs_of(change.task), 're-runs')}"
    return f"{fields}: no re-run"


def _runs_section(diff: Diff) -> str:
    if not diff.runs:
        return ""
    ran = _ran_index(diff)
    headers = ["#", "PRIO", "TASK", "MACHINE", "REASON"]
    rows = [[r.order, r.priority, r.task, r.machine, r.reason] for r in diff.runs]
    if diff.ran is not None:
        headers.append("ALREADY RAN")
        for row, run in zip(rows, diff.runs):
            row.append(_ran_text(ran.get((run.task, run.machine))))
    if any(r.held for r in diff.runs):
        headers.append("HELD")
        for row, run in zip(rows, diff.runs):
            row.append(_held_text(run))
    return "Runs, in the order a pass starts them:\n" + _indent(table(headers, rows))


def _held_text(run: Rerun) -> str:
    return f"held by {run.held}" if run.held else ""


def freeze_text(change: FreezeChange) -> str:
    """`set on team ops: INC-123 failover (until 2026-12-24T00:00Z; priority 1 held too)`."""
    freeze = change.freeze
    until = freeze.until.isoformat().replace("+00:00", "Z") if freeze.until else "lifted"
    if change.ended:
        return f"{change.change} on {change.scope}: {freeze.reason} (ended {until}: holds nothing)"
    p1 = "priority 1 let through" if freeze.allow_priority_1 else "priority 1 held too"
    return f"{change.change} on {change.scope}: {freeze.reason} (until {until}; {p1})"


def rollout_text(plan: RolloutPlan) -> str:
    """`ops/deploy: batch 1: m1; batch 2: m2; batch 3: m3, m4 (max_failed 0, pause 2m,
    verify ./healthy.sh)`, and where it stands when the store knows."""
    batches = "; ".join(
        f"batch {i}: {', '.join(machines)}" for i, machines in enumerate(plan.batches, 1)
    )
    terms = [f"max_failed {plan.max_failed}", f"pause {format_duration(plan.pause)}"]
    # A verify of several lines keeps the task on one line: its lines are joined by ` ⏎ `.
    verify = " ⏎ ".join(line.strip() for line in (plan.verify or "").strip().splitlines())
    terms += [f"verify {verify}"] if verify else []
    stand = f"; now {plan.stand}" if plan.stand else ""
    return f"{plan.task}: {batches} ({', '.join(terms)}){stand}"


def _rollouts_section(diff: Diff) -> str:
    if not diff.rollouts:
        return ""
    return "Rollouts (each batch starts once the one before has ended within max_failed):\n" + (
        _indent("\n".join(rollout_text(p) for p in diff.rollouts))
    )


def _freezes_section(diff: Diff) -> str:
    if not diff.freezes:
        return ""
    return "Freezes (runs they cover stay pending):\n" + _indent(
        "\n".join(freeze_text(c) for c in diff.freezes)
    )


def _objects_section(title: str, part) -> str:
    lines = [f"added    {n}" for n in part.added] + [f"removed  {n}" for n in part.removed]
    lines += [f"changed  {c.name}: {', '.join(c.fields)}" for c in part.changed]
    return f"{title}:\n" + _indent("\n".join(lines)) if lines else ""


def _roles_section(diff: Diff) -> str:
    if not diff.roles:
        return ""
    rows = [(c.team, c.member, role_text(c)) for c in diff.roles]
    return "Roles (review: who may change teams, tasks and vaults):\n" + _indent(
        table(("TEAM", "MEMBER", "CHANGE"), rows)
    )


def _vaults_section(diff: Diff) -> str:
    if not diff.vaults:
        return ""
    return "Vaults:\n" + _indent("\n".join(f"{v.team}: {keys_text(v)}" for v in diff.vaults))


def _settings_section(diff: Diff) -> str:
    return f"Settings (reconciler.yaml): {', '.join(diff.settings)}" if diff.settings else ""


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())


# --------------------------------------------------------------------------- json


def diff_json(diff: Diff) -> dict:
    """The SPEC §4 shape, plus `base`/`head`, `runs`, `roles`, vault key details, `settings`."""
    ran = _ran_index(diff)
    return {
        "base": _revision_json(diff.base),
        "head": _revision_json(diff.head),
        "tasks": {
            "added": list(diff.tasks.added),
            "removed": list(diff.tasks.removed),
            "changed": [_change_json(diff, c) for c in diff.tasks.changed],
        },
        "runs": [_run_json(r, diff, ran) for r in diff.runs],
        "machines": _objects_json(diff.machines, "machine"),
        "teams": _objects_json(diff.teams, "team"),
        "roles": [
            {
                "team": c.team,
                "member": c.member,
                "change": c.change,
                "from": c.before,
                "to": c.after,
            }
            for c in diff.roles
        ],
        "vaults": {
            "changed": [v.team for v in diff.vaults],
            "files": [_vault_json(v) for v in diff.vaults],
        },
        "settings": {"changed": list(diff.settings)},
        "freezes": [_freeze_json(c) for c in diff.freezes],
        "rollouts": [
            {
                "task": p.task,
                "batches": [list(b) for b in p.batches],
                "max_failed": p.max_failed,
                "pause": p.pause,
                "verify": p.verify,
                "stand": p.stand,
            }
            for p in diff.rollouts
        ],
        **({"requires": list(diff.requires)} if diff.requires else {}),
    }


def _revision_json(revision: Revision) -> dict:
    return {"revision": revision.label, "commit": revision.commit}


def _change_json(diff: Diff, change: TaskChange) -> dict:
    runs = diff.runs_of(change.task)
    data = {
        "task": change.task,
        "fields": list(change.fields),
        "reruns": change.reruns,
        "machines": _machines_of(runs),
        "priority": change.priority,
        "order": [r.order for r in runs],
    }
    if change.priority != change.previous_priority:
        data["previous_priority"] = change.previous_priority
    if diff.ran is not None:
        data["ran"] = [_ran_json(r) | {"machine": r.machine} for r in diff.ran_of(change.task)]
    return data


def _freeze_json(change: FreezeChange) -> dict:
    freeze = change.freeze
    return {
        "scope": change.scope,
        "change": change.change,
        "reason": freeze.reason,
        "until": freeze.until.isoformat().replace("+00:00", "Z") if freeze.until else None,
        "allow_priority_1": freeze.allow_priority_1,
        "ended": change.ended,
    }


def _run_json(run: Rerun, diff: Diff, ran: dict) -> dict:
    data = {
        "order": run.order,
        "task": run.task,
        "machine": run.machine,
        "priority": run.priority,
        "reason": run.reason,
    }
    if run.held:
        data["held"] = run.held
    if diff.ran is not None:
        found = ran.get((run.task, run.machine))
        data["ran"] = _ran_json(found) if found and found.run is not None else None
    return data


def _ran_json(ran: Ran) -> dict:
    return {"run": ran.run, "status": ran.status.value if ran.status else None}


def _objects_json(part, noun: str) -> dict:
    return {
        "added": list(part.added),
        "removed": list(part.removed),
        "changed": [{noun: c.name, "fields": list(c.fields)} for c in part.changed],
    }


def _vault_json(change: VaultChange) -> dict:
    keys = (
        None
        if change.keys is None
        else {
            "added": list(change.keys.added),
            "removed": list(change.keys.removed),
            "changed": list(change.keys.changed),
        }
    )
    return {"team": change.team, "file": change.file, "keys": keys, "note": change.note}


def diff_json_text(diff: Diff) -> str:
    return to_json(diff_json(diff)) + "\n"


# --------------------------------------------------------------------------- markdown


def diff_markdown(diff: Diff) -> str:
    """A pull-request comment: summary line, role warnings, task table, `<details>` blocks."""
    title = (
        f"**reconcile diff** `{diff.base.label}` → `{diff.head.label}`"
        + (
            f" ({diff.base.short}..{diff.head.short})"
            if diff.base.short and diff.head.short
            else ""
        )
        + f": {summary(diff)}"
    )
    blocks = [title] + [
        b
        for b in (
            _md_roles(diff),
            _md_freezes(diff),
            _md_tasks(diff),
            _md_runs(diff),
            _md_rollouts(diff),
            _md_objects("Machines", diff.machines),
            _md_objects("Teams", diff.teams),
            _md_vaults(diff),
            _md_settings(diff),
            _md_requires(diff),
        )
        if b
    ]
    return "\n\n".join(blocks) + "\n"


def _md_requires(diff: Diff) -> str:
    if not diff.requires:
        return ""
    return (
        "**Roles this change requires** (a signer of each commit, with `git.verify`):\n"
        + "\n".join(f"- {line}" for line in diff.requires)
    )


def _md_cell(text: str) -> str:
    """Text inside a markdown table cell or callout: a `|` would start a new cell."""
    return text.replace("|", "\\|")


def _md_code_lines(text: str) -> str:
    """Free text (a shell command) as code inside one table cell: each line its own code
    span, joined by `<br>` (a newline would end the row), each fenced with more backticks
    than it holds (a backtick inside would end the span)."""
    spans = []
    for line in text.strip().splitlines():
        longest = max((len(run) for run in re.findall(r"`+", line)), default=0)
        fence = "`" * (longest + 1)
        padded = f" {line} " if longest else line
        spans.append(f"{fence}{_md_cell(padded)}{fence}")
    return "<br>".join(spans)


def _md_rollouts(diff: Diff) -> str:
    if not diff.rollouts:
        return ""
    rows = [
        "| task | batches | max_failed | pause | verify | now |",
        "|---|---|---|---|---|---|",
    ]
    for p in diff.rollouts:
        batches = "<br>".join(
            f"{i}. {', '.join(f'`{m}`' for m in machines)}"
            for i, machines in enumerate(p.batches, 1)
        )
        verify = _md_code_lines(p.verify) if p.verify else ""
        rows.append(
            f"| `{p.task}` | {batches} | {p.max_failed} | {format_duration(p.pause)} | "
            f"{verify} | {_md_cell(p.stand or '')} |"
        )
    return (
        "**Rollouts**: each batch starts once the one before has ended, with no more failed "
        "runs than max_failed (past it, the runs not started halt)\n\n" + "\n".join(rows)
    )


def _md_freezes(diff: Diff) -> str:
    if not diff.freezes:
        return ""
    lines = [f"> - {_md_cell(freeze_text(c))}" for c in diff.freezes]
    return (
        "> [!IMPORTANT]\n> **Freezes**: the runs a freeze covers stay pending while it lasts\n"
        + ("\n".join(lines))
    )


def _md_roles(diff: Diff) -> str:
    if not diff.roles:
        return ""
    lines = [f"> - `{c.member}` (team `{c.team}`): {role_text(c, '→')}" for c in diff.roles]
    return "> [!WARNING]\n> **Role changes**: who may change teams, tasks and vaults\n" + "\n".join(
        lines
    )


def _md_tasks(diff: Diff) -> str:
    rows = [("added", f"`{t}`", "", *_md_run_cells(diff.runs_of(t))) for t in diff.tasks.added]
    rows += [
        (
            "changed",
            f"`{c.task}`",
            ", ".join(c.fields),
            *(_md_run_cells(diff.runs_of(c.task)) if c.reruns else ("no", "", "")),
        )
        for c in diff.tasks.changed
    ]
    rows += [
        ("removed", f"`{t}`", "", "no (pending runs cancelled)", "", "") for t in diff.tasks.removed
    ]
    if not rows:
        return ""
    priorities = {f"`{c.task}`": _priority_text(c, "→") for c in diff.tasks.changed}
    lines = [
        "| change | task | fields | re-runs | machines | priority |",
        "|---|---|---|---|---|---|",
    ]
    for change, task, fields, reruns, machines, priority in sorted(rows, key=_row_key)[
        :MD_MAX_ROWS
    ]:
        lines.append(
            f"| {change} | {task} | {fields} | {reruns} | {machines} | "
            f"{priorities.get(task, priority)} |"
        )
    return "\n".join(lines + _md_more(len(rows), "tasks"))


def _md_more(count: int, noun: str) -> list[str]:
    """The line saying how many rows a capped table left out (none when it left none)."""
    if count <= MD_MAX_ROWS:
        return []
    return ["", f"… and {count - MD_MAX_ROWS} more {noun}: run `reconcile diff` for all of them."]


def _md_run_cells(runs: tuple[Rerun, ...]) -> tuple[str, str, str]:
    if not runs:
        return "no (no target machine)", "", ""
    machines = ", ".join(f"`{m}`" for m in _machines_of(runs))
    return "yes", machines, ", ".join(str(p) for p in sorted({r.priority for r in runs}))


def _md_runs(diff: Diff) -> str:
    if not diff.runs:
        return ""
    ran = _ran_index(diff)
    held = any(r.held for r in diff.runs)
    columns = ["#", "priority", "task", "machine", "reason"]
    columns += ["already ran"] if diff.ran is not None else []
    columns += ["held"] if held else []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in diff.runs[:MD_MAX_ROWS]:
        extra = f" {_ran_text(ran.get((r.task, r.machine)))} |" if diff.ran is not None else ""
        extra += f" {_md_cell(_held_text(r))} |" if held else ""
        lines.append(
            f"| {r.order} | {r.priority} | `{r.task}` | `{r.machine}` | {r.reason} |{extra}"
        )
    lines += _md_more(len(diff.runs), "runs")
    return _details(f"Run order: {_plural(len(diff.runs), 'run')}, as a pass starts them", lines)


def _md_objects(title: str, part) -> str:
    items = [f"- added `{n}`" for n in part.added] + [f"- removed `{n}`" for n in part.removed]
    items += [f"- changed `{c.name}`: {', '.join(c.fields)}" for c in part.changed]
    if not items:
        return ""
    shown = items[:MD_MAX_ROWS] + _md_more(len(items), title.lower())
    return _details(f"{title}: {_counts('', part).lstrip(': ')}", shown)


def _md_vaults(diff: Diff) -> str:
    if not diff.vaults:
        return ""
    items = [f"- `{v.team}`: {keys_text(v, '`')}" for v in diff.vaults]
    return _details(f"Vaults: {len(diff.vaults)} changed (key names only, never values)", items)


def _md_settings(diff: Diff) -> str:
    if not diff.settings:
        return ""
    return _details("Settings: reconciler.yaml changed", [f"- {', '.join(diff.settings)}"])


def _details(summary_text: str, lines: list[str]) -> str:
    return "\n".join([f"<details><summary>{summary_text}</summary>", "", *lines, "", "</details>"])


__all__ = ["diff_json", "diff_json_text", "diff_markdown", "diff_text", "summary"]
