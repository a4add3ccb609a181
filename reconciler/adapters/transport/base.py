"""The transport port: run one shell command on one machine and return what happened.

A command that exits non-zero is a value (`Completed`), never an exception. Only the failure
to reach or authenticate to a machine raises (`TransportError` and its subclasses).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from reconciler.core.model import Machine
from reconciler.core.redact import Secret


@dataclass(frozen=True)
class Completed:
    """The result of one command. `exit_code` is None when it was killed on timeout."""

    exit_code: int | None
    output: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


# What `reap(..., stop=False)` returns while the run's command is still running (left alone).
STILL_RUNNING = Completed(exit_code=None, output="", duration=0.0)


class Transport(ABC):
    """Runs commands on machines of one kind (`local`, `ssh`)."""

    @abstractmethod
    def run(
        self,
        machine: Machine,
        command: str,
        env: Mapping[str, str | Secret],
        timeout: float,
        run_id: int,
    ) -> Completed:
        """Run `command` with `sh -c` on `machine`. `env` holds secrets (`Secret` values: call
        `reveal()` at the last moment); they must never reach any process's argument list.
        Kill the whole process group after `timeout` seconds."""

    def reap(
        self,
        machine: Machine,
        run_id: int,
        *,
        attempt: int | None = None,
        command: str | None = None,
        stop: bool = True,
    ) -> Completed | None:
        """A run on `machine` was found `running` after its reconciler died. If its command
        is still running, stop it (so nothing runs twice) and return None — or, with
        `stop=False`, leave it running and return `STILL_RUNNING` (ask again later); if the
        target kept its result (`attempt` and `command` identify which one), return it to be
        adopted; None when nothing is known. Raises `TransportError` when the target cannot
        be asked. Default: nothing to do."""
        return None

    def prepare(self, machines: Iterable[Machine]) -> None:  # noqa: B027 (optional)
        """Runs on `machines` are about to start: get ready for them without waiting (a
        transport with connections opens them now, all at once, in the background). Never
        raises: a failure shows when a run needs the machine. Default: nothing to do."""

    def settle(  # noqa: B027 (optional: a transport that keeps nothing on the target)
        self, recorded: Collection[int], unrecorded: Collection[int] = ()
    ) -> None:
        """The ends of the `recorded` runs were durably written (the engine calls this right
        after each end batch): what the target kept of their results may go now. The
        `unrecorded` runs ended too but their ends were not written (refused): keep what
        the target holds of them, for a later pass to adopt. Ids a transport does not know
        are ignored. Default: nothing to do."""

    def close(self) -> None:  # noqa: B027 (optional: a transport without connections keeps it)
        """Release connections."""
