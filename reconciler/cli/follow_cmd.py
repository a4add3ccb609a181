"""`queue show RUN --follow`: a run's output so far, then its new lines as they come, until it
ends; then its status line. Exit 0 when it succeeded (or its check found nothing to do), 1
otherwise. With `--format json`, JSON lines: `{"event": "output", "run", "attempt", "line"}`
per line, then `{"event": "end", ...the run as in queue show}`."""

from __future__ import annotations

import json
import sys

from reconciler.cli import views
from reconciler.core.state import Run
from reconciler.pipeline.follow import Ended, follow


def run(args, store) -> int:
    """Follow run `args.run` on `store` until it ends; its exit code."""
    json_lines = getattr(args, "format", None) == "json"
    out = sys.stdout
    attempt: int | None = None
    ends_line = True  # what was written ends with a newline
    for item in follow(store, args.run):
        if isinstance(item, Ended):
            if json_lines:
                _json_line(out, {"event": "end", **views.run_json(item.run)})
            else:
                out.write(("" if ends_line else "\n") + status_line(item.run) + "\n")
            out.flush()
            return 0 if item.run.status.is_success else 1
        if attempt is not None and item.attempt != attempt and not json_lines:
            out.write(("" if ends_line else "\n") + f"[attempt {item.attempt}]\n")
            ends_line = True
        attempt = item.attempt
        if json_lines:
            for line in item.text.splitlines():
                _json_line(
                    out, {"event": "output", "run": args.run, "attempt": attempt, "line": line}
                )
        else:
            out.write(item.text)
            ends_line = item.text.endswith("\n")
        out.flush()
    return 1  # not reached: `follow` ends with `Ended`


def status_line(run: Run) -> str:
    """How the followed run ended, in one line."""
    exit_code = "" if run.exit_code is None else f", exit {run.exit_code}"
    error = f": {run.error}" if run.error and not run.status.is_success else ""
    return (
        f"run {run.id} ({run.task} on {run.machine}, attempt {run.attempt}) "
        f"{run.status.value}{exit_code}{error}"
    )


def _json_line(out, data: dict) -> None:
    out.write(json.dumps(data, ensure_ascii=False) + "\n")


__all__ = ["run", "status_line"]
