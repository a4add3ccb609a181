"""`reconcile plan`'s next slots of the scheduled tasks, as text and markdown (its JSON is
`NextSlots.to_json`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from reconciler.cli.views import table
from reconciler.core.next_slots import NextSlots


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def next_slots_text(slots: Sequence[NextSlots]) -> str:
    """One line per scheduled task: its next slot in its zone and in UTC ("" when none)."""
    if not slots:
        return ""
    rows = [
        (s.task, s.schedule, s.timezone, _clock(s.local(s.fires[0])), _utc(s.fires[0]))
        if s.fires
        else (s.task, s.schedule, s.timezone, "never", "")
        for s in slots
    ]
    return "\n\nNext slots:\n" + table(("TASK", "SCHEDULE", "ZONE", "NEXT", "NEXT (UTC)"), rows)


def next_slots_markdown(slots: Sequence[NextSlots]) -> str:
    if not slots:
        return ""
    lines = ["", "| task | schedule | zone | next | next (UTC) |", "|---|---|---|---|---|"]
    for s in slots:
        local, at = (_clock(s.local(s.fires[0])), _utc(s.fires[0])) if s.fires else ("never", "")
        lines.append(f"| `{s.task}` | `{s.schedule}` | {s.timezone} | {local} | {at} |")
    return "\n".join(lines) + "\n"
