"""`timezone:` as read and compiled (issue 15, part 4): on a task, on a deny window, and as a
team default; the zone a schedule or window ends up read in; the next slots `plan` shows."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.cli.slot_views import next_slots_markdown, next_slots_text
from reconciler.core.compile import compile_inventory
from reconciler.core.errors import InputError
from reconciler.core.model import Window
from reconciler.core.next_slots import next_slots
from reconciler.inventory.loader import load_inventory


def _write(root: Path, files: dict[str, str]) -> Path:
    base = {
        "teams/ops.yaml": "name: ops\n",
        "machines/box.yaml": "name: box\nteam: ops\ntransport: local\n",
    }
    for relative, text in {**base, **files}.items():
        path = root / "inventory" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "inventory"


def _desired(tmp_path: Path, files: dict[str, str]):
    inventory, _ = load_inventory(_write(tmp_path, files))
    return compile_inventory(inventory)


TASK = "name: {name}\nmachines: [box]\ncommand: 'true'\nschedule: '0 2 * * *'\n"


def test_a_task_zone_a_team_default_and_utc(tmp_path):
    desired = _desired(
        tmp_path,
        {
            "teams/ops.yaml": "name: ops\ndefaults: {timezone: Europe/Berlin}\n",
            "teams/web.yaml": "name: web\n",
            "reconciler.yaml": "local_machines: {allow_shared_user: true}\n",
            "machines/w.yaml": "name: w\nteam: web\ntransport: local\n",
            "tasks/ops/own.yaml": TASK.format(name="own") + "timezone: Asia/Tokyo\n",
            "tasks/ops/inherits.yaml": TASK.format(name="inherits"),
            "tasks/web/plain.yaml": TASK.format(name="plain").replace("[box]", "[w]"),
        },
    )
    zones = {t: s.timezone for t, s in desired.tasks.items()}
    assert zones == {"ops/own": "Asia/Tokyo", "ops/inherits": "Europe/Berlin", "web/plain": None}


def test_windows_take_their_own_zone_else_their_teams_default(tmp_path):
    desired = _desired(
        tmp_path,
        {
            "teams/ops.yaml": "name: ops\ndefaults: {timezone: Europe/Berlin}\nwindows:\n"
            "  - {deny: '0 8 * * *', duration: 1h}\n",
            "machines/box.yaml": "name: box\nteam: ops\ntransport: local\nwindows:\n"
            "  - {deny: '0 9 * * *', duration: 1h, timezone: America/New_York}\n"
            "  - {deny: '0 10 * * *', duration: 1h}\n",
        },
    )
    assert desired.windows_for("box") == (
        Window("0 8 * * *", 3600, timezone="Europe/Berlin"),
        Window("0 9 * * *", 3600, timezone="America/New_York"),
        Window("0 10 * * *", 3600, timezone="Europe/Berlin"),
    )


def test_an_inventory_without_zones_compiles_to_the_same_values(tmp_path):
    """No zone anywhere: the teams and machines are the loader's own objects, unchanged."""
    files = {
        "teams/ops.yaml": "name: ops\nwindows:\n  - {deny: '0 8 * * *', duration: 1h}\n",
        "tasks/ops/t.yaml": TASK.format(name="t"),
    }
    inventory, _ = load_inventory(_write(tmp_path, files))
    desired = compile_inventory(inventory)
    assert desired.teams["ops"] is inventory.teams["ops"]
    assert desired.machines["box"] is inventory.machines["box"]
    assert desired.windows_for("box") == (Window("0 8 * * *", 3600),)
    assert desired.tasks["ops/t"].timezone is None


@pytest.mark.parametrize(
    "files, where, message",
    [
        (
            {"tasks/ops/t.yaml": TASK.format(name="t") + "timezone: Europe/Berln\n"},
            "tasks/ops/t.yaml:5:11",
            "timezone is not a known time zone",
        ),
        (
            {"teams/ops.yaml": "name: ops\ndefaults:\n  timezone: [Europe/Berlin]\n"},
            "teams/ops.yaml:3:13",
            "defaults.timezone must be a time zone name",
        ),
        (
            {
                "teams/ops.yaml": "name: ops\nwindows:\n"
                "  - {deny: '0 8 * * *', duration: 1h, timezone: CEST}\n"
            },
            "teams/ops.yaml:3:49",
            "windows[0].timezone is not a known time zone",
        ),
    ],
)
def test_a_bad_zone_is_an_error_at_its_value(tmp_path, files, where, message):
    with pytest.raises(InputError) as caught:
        load_inventory(_write(tmp_path, files))
    texts = [str(d) for d in caught.value.diagnostics.items]
    assert any(where in t and message in t for t in texts), texts


def test_plan_text_shows_a_skipped_hour_slot_at_the_end_of_the_gap(tmp_path):
    desired = _desired(
        tmp_path,
        {
            "tasks/ops/b.yaml": TASK.format(name="b") + "timezone: Europe/Berlin\n",
            "tasks/ops/u.yaml": TASK.format(name="u"),
        },
    )
    slots = next_slots(desired, datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert [s.to_json() for s in slots] == [
        {
            "task": "ops/b",
            "schedule": "0 2 * * *",
            "timezone": "Europe/Berlin",
            "next": [
                {"local": "2026-03-29T03:00:00+02:00", "utc": "2026-03-29T01:00:00Z"},
                {"local": "2026-03-30T02:00:00+02:00", "utc": "2026-03-30T00:00:00Z"},
                {"local": "2026-03-31T02:00:00+02:00", "utc": "2026-03-31T00:00:00Z"},
            ],
        },
        {
            "task": "ops/u",
            "schedule": "0 2 * * *",
            "timezone": "UTC",
            "next": [
                {"local": "2026-03-29T02:00:00+00:00", "utc": "2026-03-29T02:00:00Z"},
                {"local": "2026-03-30T02:00:00+00:00", "utc": "2026-03-30T02:00:00Z"},
                {"local": "2026-03-31T02:00:00+00:00", "utc": "2026-03-31T02:00:00Z"},
            ],
        },
    ]
    text = next_slots_text(slots)
    assert "ops/b  0 2 * * *  Europe/Berlin  2026-03-29 03:00 CEST  2026-03-29T01:00:00Z" in text
    assert "ops/u  0 2 * * *  UTC            2026-03-29 02:00 UTC   2026-03-29T02:00:00Z" in text
    assert "| `ops/b` | `0 2 * * *` | Europe/Berlin | 2026-03-29 03:00 CEST |" in (
        next_slots_markdown(slots)
    )


def test_no_schedule_no_slots(tmp_path):
    desired = _desired(tmp_path, {"tasks/ops/t.yaml": "name: t\nmachines: [box]\ncommand: x\n"})
    assert next_slots(desired, datetime(2026, 1, 1, tzinfo=UTC)) == ()
    assert next_slots_text(()) == next_slots_markdown(()) == ""


def test_a_task_zone_without_a_schedule_is_a_warning_at_it(tmp_path):
    files = {"tasks/ops/t.yaml": "name: t\nmachines: [box]\ncommand: x\ntimezone: Europe/Berlin\n"}
    _, warnings = load_inventory(_write(tmp_path, files))
    assert [str(w) for w in warnings if "timezone" in str(w)] == [
        f"{tmp_path}/inventory/tasks/ops/t.yaml:4:1: warning: task 't': timezone has no effect "
        "without a schedule (hint: add a schedule, or remove timezone)"
    ]
