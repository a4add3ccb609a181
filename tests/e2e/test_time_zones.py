"""Time zones (issue 15, part 4): schedules and deny windows in IANA zones, through real
passes.

The CLI reads the real clock, so the daylight-saving passes run in-process through the
engine, which takes its clock as a parameter (`Engine(clock=...)`), on the real SQLite store
and the local transport (real commands). Validation and `plan` run through `reconcile` as a
user runs it. Berlin in 2026: clocks go forward on 29 March at 01:00 UTC (02:00-02:59 never
happens) and back on 25 October at 01:00 UTC (02:00-02:59 happens twice).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport.local import LocalTransport
from reconciler.pipeline.engine import Engine
from tests.support.in_process import InProcessProject

BERLIN = ZoneInfo("Europe/Berlin")


def z(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def passes_at(p: InProcessProject, times) -> None:
    """One full pass at each of `times` (the engine's clock reads that instant)."""
    desired = p.desired()
    store = open_store(p.url)
    try:
        for now in times:
            engine = Engine(
                store, {"local": LocalTransport(p.root / "markers")}, clock=lambda now=now: now
            )
            engine.run_pass(desired, "c0ffee", 10)
    finally:
        store.close()


def every(start: datetime, end: datetime, step: timedelta = timedelta(minutes=30)):
    while start <= end:
        yield start
        start += step


def runs(p: InProcessProject, task: str) -> list[tuple[str, str, str]]:
    """(slot, status, started at) of every run of `task`, oldest first."""
    return [
        (slot, status, started[:19] if started else None)
        for slot, status, started in p.sql(
            "SELECT slot, status, started_at FROM runs WHERE task = ? ORDER BY id", (task,)
        )
    ]


def berlin_two_oclock(tmp_path) -> InProcessProject:
    p = InProcessProject(tmp_path)
    ledger = tmp_path / "ledger"
    p.task(
        "berlin", f'echo berlin >> "{ledger}"', "schedule: '0 2 * * *'\ntimezone: Europe/Berlin\n"
    )
    p.task("utc", f'echo utc >> "{ledger}"', "schedule: '0 2 * * *'\n")
    return p


def test_a_berlin_two_oclock_schedule_runs_once_a_day_across_spring_forward(tmp_path):
    """29 March: 02:00 does not exist; the slot runs once, at the end of the gap (03:00
    CEST, 01:00 UTC), and the next day at 02:00 CEST (00:00 UTC). Passes every 30 min."""
    p = berlin_two_oclock(tmp_path)
    passes_at(p, every(z(2026, 3, 27, 12), z(2026, 3, 30, 12)))
    assert runs(p, "ops/berlin") == [
        ("2026-03-27T01:00:00Z", "succeeded", "2026-03-27T12:00:00"),  # new: runs at once
        ("2026-03-28T01:00:00Z", "succeeded", "2026-03-28T01:00:00"),  # 02:00 CET
        ("2026-03-29T01:00:00Z", "succeeded", "2026-03-29T01:00:00"),  # 03:00 CEST
        ("2026-03-30T00:00:00Z", "succeeded", "2026-03-30T00:00:00"),  # 02:00 CEST
    ]
    # A task without a zone still reads its cron in UTC, with the same slot keys as before.
    assert [slot for slot, _, _ in runs(p, "ops/utc")] == [
        "2026-03-27T02:00:00Z",
        "2026-03-28T02:00:00Z",
        "2026-03-29T02:00:00Z",
        "2026-03-30T02:00:00Z",
    ]
    assert (tmp_path / "ledger").read_text().split().count("berlin") == 4


def test_a_berlin_two_oclock_schedule_runs_once_a_day_across_fall_back(tmp_path):
    """25 October: 02:00 happens twice; the slot runs at the first (CEST, 00:00 UTC) only,
    not again at the second (CET, 01:00 UTC). Passes every 15 min through the night."""
    p = berlin_two_oclock(tmp_path)
    passes_at(p, every(z(2026, 10, 23, 12), z(2026, 10, 26, 12), step=timedelta(minutes=15)))
    assert runs(p, "ops/berlin") == [
        ("2026-10-23T00:00:00Z", "succeeded", "2026-10-23T12:00:00"),
        ("2026-10-24T00:00:00Z", "succeeded", "2026-10-24T00:00:00"),  # 02:00 CEST
        ("2026-10-25T00:00:00Z", "succeeded", "2026-10-25T00:00:00"),  # the first 02:00
        ("2026-10-26T01:00:00Z", "succeeded", "2026-10-26T01:00:00"),  # 02:00 CET
    ]
    assert (tmp_path / "ledger").read_text().split().count("berlin") == 4


def test_a_deny_window_in_berlin_holds_by_the_berlin_clock(tmp_path):
    """Office hours 08:00-18:00 Berlin time are 06:00-16:00 UTC in July: a run is held at
    06:30 UTC (08:30 CEST; the same cron read in UTC would not hold it) and starts at 16:00
    UTC (18:00 CEST; read in UTC it would still be held)."""
    p = InProcessProject(tmp_path)
    p.write(
        "teams/ops.yaml",
        "name: ops\nwindows:\n  - {deny: '0 8 * * *', duration: 10h, timezone: Europe/Berlin}\n",
    )
    p.task("upgrade", "true")
    passes_at(p, [z(2026, 7, 15, 6, 30), z(2026, 7, 15, 15, 59)])
    assert runs(p, "ops/upgrade") == [(None, "pending", None)]
    passes_at(p, [z(2026, 7, 15, 16)])
    assert runs(p, "ops/upgrade") == [(None, "succeeded", "2026-07-15T16:00:00")]


def test_a_team_default_zone_reaches_its_machines_windows_and_tasks(tmp_path):
    """`defaults.timezone` is the zone of every schedule and window of the team that names
    none: the machine's night window 22:00-06:00 Berlin (20:00-04:00 UTC in July) holds a
    run at 21:00 UTC; a window naming its own zone keeps it."""
    p = InProcessProject(tmp_path)
    p.write("teams/ops.yaml", "name: ops\ndefaults: {timezone: Europe/Berlin}\n")
    p.write(
        "machines/box.yaml",
        "name: box\nteam: ops\ntransport: local\nmax_parallel: 8\nwindows:\n"
        "  - {deny: '0 22 * * *', duration: 8h}\n"
        "  - {deny: '0 12 * * *', duration: 1h, timezone: UTC}\n",
    )
    p.task("patch", "true")
    passes_at(p, [z(2026, 7, 15, 21), z(2026, 7, 15, 12, 30)])
    assert runs(p, "ops/patch") == [(None, "pending", None)]
    passes_at(p, [z(2026, 7, 16, 4)])
    assert runs(p, "ops/patch") == [(None, "succeeded", "2026-07-16T04:00:00")]


# --- through the CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative, text, line, column, message",
    [
        (
            "tasks/ops/t.yaml",
            "name: t\nmachines: [box]\ncommand: 'true'\nschedule: '0 2 * * *'\n"
            "timezone: Europe/Berln\n",
            5,
            11,
            "timezone is not a known time zone",
        ),
        (
            "teams/ops.yaml",
            "name: ops\ndefaults:\n  timezone: Berlin\n",
            3,
            13,
            "defaults.timezone is not a known time zone",
        ),
        (
            "machines/box.yaml",
            "name: box\nteam: ops\ntransport: local\nwindows:\n"
            "  - deny: '0 8 * * *'\n    duration: 1h\n    timezone: localtime\n",
            7,
            15,
            "windows[0].timezone is not a known time zone",
        ),
    ],
)
@pytest.mark.parametrize("command", [("validate",), ("plan",), ("--once",)])
def test_an_unknown_time_zone_is_refused_with_its_location(
    project, relative, text, line, column, message, command
):
    project.write(relative, text)
    project.task("other", "command: 'true'\n")
    result = project.run(*command, code=2)
    where = f"inventory/{relative}:{line}:{column}: "
    assert where + message in result.err, result.err
    assert "Traceback" not in result.err
    assert "hint: " in result.err
    assert project.run_count() == 0


def test_the_hint_names_the_zone_meant(project):
    project.task("t", "command: 'true'\nschedule: '@daily'\ntimezone: europe/berlin\n")
    err = project.run("validate", code=2).err
    assert "did you mean 'Europe/Berlin'?" in err


def test_plan_shows_the_next_slots_in_the_zone_and_in_utc(project):
    project.task("backup", "command: 'true'\nschedule: '0 2 * * *'\ntimezone: Europe/Berlin\n")
    project.task("report", "command: 'true'\nschedule: '30 6 * * *'\n")
    data = project.run("plan", "--format", "json", code=0).json()
    by_task = {s["task"]: s for s in data["schedules"]}
    backup = by_task["ops/backup"]
    assert (backup["schedule"], backup["timezone"], len(backup["next"])) == (
        "0 2 * * *",
        "Europe/Berlin",
        3,
    )
    for slot in backup["next"]:
        local = datetime.fromisoformat(slot["local"])
        at = datetime.fromisoformat(slot["utc"].replace("Z", "+00:00"))
        assert local == at and local.utcoffset() == at.astimezone(BERLIN).utcoffset()
        # 02:00 Berlin time; 03:00 on a spring-forward day, when 02:00 does not exist
        assert local.strftime("%H:%M") == "02:00" or local.dst() and at.hour == 1
    assert by_task["ops/report"]["timezone"] == "UTC"
    assert {s["local"][11:16] for s in by_task["ops/report"]["next"]} == {"06:30"}
    text = project.run("plan", code=0).out
    first = datetime.fromisoformat(backup["next"][0]["local"]).astimezone(BERLIN)
    line = next(x for x in text.splitlines() if x.startswith("ops/backup") and "Europe" in x)
    assert first.strftime("%Y-%m-%d %H:%M %Z") in line, text
    assert backup["next"][0]["utc"] in line, text
    markdown = project.run("plan", "--format", "markdown", code=0).out
    assert "| `ops/backup` | `0 2 * * *` | Europe/Berlin |" in markdown


def test_plan_shows_a_berlin_window_holding_a_run_until_its_end(project):
    """A window that started this hour on the Berlin clock, for two hours: the same cron
    read in UTC would be an hour or two off (Berlin is UTC+1 or UTC+2)."""
    now = datetime.now(BERLIN)
    start = now.replace(minute=0, second=0, microsecond=0)
    project.write(
        "teams/ops.yaml",
        f"name: ops\nwindows:\n  - {{deny: '0 {start.hour} * * *', duration: 2h, "
        "timezone: Europe/Berlin}\n",
    )
    project.task("upgrade", "command: 'true'\n")
    [enqueue] = project.run("plan", "--format", "json", code=0).json()["enqueue"]
    until = (start.astimezone(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert enqueue["held_until"] == until
