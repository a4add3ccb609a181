"""`--stream`: each run's output lines as they come, prefixed `[task@machine]`, on stderr
beside the progress lines (stdout keeps the result); with `--format json` or `--log-format
json`, one JSON object per line. The text is redacted before it gets here."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from reconciler.core.state import Run


def stream_printer(json_lines: bool, out: TextIO | None = None) -> Callable[[Run, str], None]:
    """The engine's `printer`: called from its output thread and its main thread."""
    lock = threading.Lock()

    def show(run: Run, text: str) -> None:
        target = out or sys.stderr
        lines = text.splitlines()
        with lock:
            for line in lines:
                if json_lines:
                    data = {"run": run.id, "task": run.task, "machine": run.machine, "line": line}
                    target.write(json.dumps(data, ensure_ascii=False) + "\n")
                else:
                    target.write(f"[{run.task}@{run.machine}] {line}\n")
            target.flush()

    return show


__all__ = ["stream_printer"]
