"""The log consumer: one structured log line per engine event.

The line's text reads for humans; its `extra=` fields (task, machine, run, attempt, commit,
status: `cli.main.LOG_FIELDS`) are what `--log-format json` prints as keys. Never raises.
"""

from __future__ import annotations

import logging

from reconciler.pipeline.events import Event, Kind

# The logger every consumer logs to: the name `--log-format json` prints as `logger` (and a
# user filters on), kept from when one `sinks` module did all of this.
LOGGER = "reconciler.pipeline.sinks"
log = logging.getLogger(LOGGER)


class LogConsumer:
    """Logs each event; a run without a commit of its own is logged with the pass's."""

    def __init__(self, commit: str | None = None):
        self.commit = commit

    def __call__(self, event: Event) -> None:
        # A wait is not an operation, and an unreachable machine is logged once by the alert
        # consumer rather than once per run on it; the progress view shows both.
        if event.kind in (Kind.HELD, Kind.UNREACHABLE) or not log.isEnabledFor(logging.INFO):
            return  # (a quiet pass logs no event: its line is not even built)
        run = event.run
        log.info(
            "%s %s on %s (run %s, attempt %s)%s",
            event.kind,
            run.task,
            run.machine,
            run.id,
            run.attempt,
            f": {event.detail}" if event.detail else "",
            extra={
                "task": run.task,
                "machine": run.machine,
                "run": run.id,
                "attempt": run.attempt,
                "commit": run.commit or self.commit,
                "status": run.status.value,
            },
        )


__all__ = ["LOGGER", "LogConsumer"]
