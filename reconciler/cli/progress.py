"""Live progress of a pass: a rich display on a terminal, plain lines otherwise (CI logs).

Both consume the engine's `Event`s and write to stderr, so stdout keeps only the result
(the summary, or JSON with `--format json`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # annotations only: `json_line` serves commands that import no engine
    from reconciler.pipeline.engine import Event

_PLAIN = {
    "recovered": "recovered {task} on {machine}: {status}",
    "enqueued": "enqueued  {task} on {machine} (priority {priority}, {detail})",
    "cancelled": "cancelled {task} on {machine} ({detail})",
    "started": "started   {task} on {machine} (run {id}, attempt {attempt})",
    "retrying": "retrying  {task} on {machine} (run {id}): {detail}; attempt {attempt} at {not_before}",
    "finished": "{status:<9} {task} on {machine} (run {id}, attempt {attempt}){colon}{detail}",
    "blocked": "blocked   {task} on {machine} (run {id}): {detail}",
    "halted": "halted    {task} on {machine} (run {id}): {detail}",
    "held": "held      {task} on {machine} (run {id}) by {detail}",
    "unreachable": "unreachable {machine} (run {id} of {task}): {detail}",
}


def _line(event: Event) -> str:
    run = event.run
    return _PLAIN[event.kind].format(
        task=run.task,
        machine=run.machine,
        id=run.id,
        attempt=run.attempt,
        priority=run.priority,
        status=run.status.value,
        detail=event.detail,
        colon=": " if event.detail else "",
        not_before=run.not_before.strftime("%H:%M:%S UTC") if run.not_before else "-",
    )


class PlainProgress:
    """One line per event; for logs and pipes."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            print(_line(event), file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class JsonProgress(PlainProgress):
    """One JSON object per event, shaped like the JSON log lines (`--log-format json`), so
    that everything on stderr parses: `event` is the plain line, `kind` the event kind."""

    def __call__(self, event: Event) -> None:
        with self.lock:
            print(json.dumps(event_json(event)), file=self.stream, flush=True)


def event_json(event: Event) -> dict:
    """An engine event as a JSON log object (the fields of `--log-format json` lines)."""
    run = event.run
    data = {
        "time": _utc_stamp(),
        "level": "info",
        "event": _line(event),
        "logger": "reconciler.progress",
        "kind": event.kind,
        "task": run.task,
        "machine": run.machine,
        "run": run.id,
        "attempt": run.attempt,
        "status": run.status.value,
        "commit": run.commit,
    }
    if event.detail:
        data["detail"] = event.detail
    return {k: v for k, v in data.items() if v is not None}


def json_line(message: str, level: str = "info", **fields) -> str:
    """A line of text (a warning, an error, a summary) as one JSON log object."""
    return json.dumps(
        {"time": _utc_stamp(), "level": level, "event": message, "logger": "reconciler", **fields}
    )


def tell(message: str, log_format: str | None, level: str = "info") -> None:
    """A line for the operator on stderr (what a command wrote, a public key): one JSON
    object under `--log-format json`, so that every stderr line parses; text otherwise."""
    print(json_line(message, level) if log_format == "json" else message, file=sys.stderr)


def print_warnings(warnings, log_format: str | None = None) -> None:
    """Warnings on stderr, one line each; with `--log-format json`, one JSON object each."""
    for warning in warnings:
        print(
            json_line(str(warning), "warning") if log_format == "json" else str(warning),
            file=sys.stderr,
        )


def _utc_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


class LiveProgress:
    """A rich live panel: runs in progress and counts, with finished runs scrolling above."""

    def __init__(self):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.running: dict[int, Event] = {}
        self.counts: dict[str, int] = {}
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=True)

    def _render(self):
        from rich.table import Table

        table = Table(title="reconcile --once", show_edge=False, expand=False)
        for col in ("run", "task", "machine", "attempt"):
            table.add_column(col)
        for event in list(self.running.values())[:20]:
            r = event.run
            table.add_row(str(r.id), r.task, r.machine, str(r.attempt))
        done = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "starting"
        table.caption = f"{len(self.running)} running · {done}"
        return table

    def __call__(self, event: Event) -> None:
        if event.kind == "started":
            self.running[event.run.id] = event
        elif event.kind in ("finished", "retrying", "blocked", "halted", "recovered"):
            self.running.pop(event.run.id, None)
            if event.kind != "retrying":
                self.counts[event.run.status.value] = self.counts.get(event.run.status.value, 0) + 1
            self.live.console.print(_line(event), highlight=False)
        self.live.update(self._render())

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)


class Silent:
    def __call__(self, event: Event) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_for(quiet: bool, live: bool = True, log_format: str | None = None):
    """The display that fits where stderr goes (`live=False`: plain lines, for long-lived
    processes whose output is a log; `log_format="json"`: JSON objects, like the logs)."""
    if quiet:
        return Silent()
    if log_format == "json":
        return JsonProgress()
    if live and sys.stderr.isatty():
        return LiveProgress()
    return PlainProgress()
