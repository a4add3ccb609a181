"""The console's pages as static files (`reconcile status --format html -o DIR`), for a CI
artifact or a static site: the same pages, with relative links that work from disk
(file://), without the script that keeps a served page up to date."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.core.run_view import run_json
from reconciler.web.console import html, pages
from reconciler.web.console.app import asset, redacted

RUNS = 200  # the newest runs written, each with its own page


def write_site(
    reading: pages.Reading,
    folder: Path,
    *,
    redact: Callable[[str], str | None] = lambda text: text,
    read_file: Callable[[Path], str | None],
) -> list[Path]:
    """Write the overview, the newest runs (a list and a page each), every task and every
    machine under `folder`; returns the files written."""
    written: list[Path] = []
    root = html.Links(static=True)

    def write(relative: str, data: dict[str, Any], render) -> None:
        depth = relative.count("/")
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = render(redacted(data, redact), root.at_depth(depth))
        target.write_text(text, encoding="utf-8")
        written.append(target)

    write("index.html", pages.overview(reading), html.overview_page)
    listing = pages.runs(reading, pages.parse_filter({}), None, RUNS)
    listing["next_before"] = None
    write("runs.html", listing, html.runs_page)
    for summary in listing["runs"]:
        found = reading.store.get_run(summary["id"]) if reading.store is not None else None
        if found is not None:
            write(f"runs/{found.id}.html", run_json(found, detail=True), html.run_page)
    for task_id in sorted(reading.desired.tasks):
        write(f"tasks/{task_id}.html", pages.task(reading, task_id, read_file), html.task_page)
    for name in sorted(reading.desired.machines):
        write(f"machines/{name}.html", pages.machine(reading, name), html.machine_page)
    (folder / "static").mkdir(parents=True, exist_ok=True)
    css = folder / "static" / "console.css"
    css.write_bytes(asset("console.css"))
    written.append(css)
    return written
