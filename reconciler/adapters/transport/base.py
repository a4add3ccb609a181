"""The transport port: run one shell command on one machine and return what happened.

A command that exits non-zero is a value (`Completed`), never an exception. Only the failure
to reach or authenticate to a machine raises (`TransportError` and its subclasses).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC

from reconciler.core.model import Machine
from reconciler.core.redact import Secret
from reconciler.core.state import Run


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


def run_key(run: Run) -> str:
    """Pure: what tells `run` from a run of another store that has its id (two reconcilers,
    each with a store of its own, may run on one target account and share its markers): its
    id and the instant its store created it, which never changes. "" when unknown."""
    created = run.created_at
    if created is None:
        return ""
    if created.tzinfo is not None:
        created = created.astimezone(UTC).replace(tzinfo=None)
    return f"{run.id}@{created:%Y-%m-%dT%H:%M:%S.%f}"


class RunControl:
    """What the engine holds of one running command, beside the transport running it: where
    its output goes as it comes (`output`, called from the transport's reading thread with
    the raw bytes, in order: by the time `run` returns, every byte of the command's output
    went through it, gaps shown as output marks), and how a kill request reaches it (`kill`).

    The transport `attach`es a stopper once the command may run (TERM to its whole process
    group, KILL after the grace given) and `detach`es it when the command ended: a kill
    asked for while nothing is attached stops the next command attached at once. A run's
    check and its command share one control (the check `muted`: its output is not the
    run's); once the run's last command ended its executor calls `finish`, and a kill asked
    for after that does nothing (the run ended by itself)."""

    def __init__(self, on_output: Callable[[bytes], None] | None = None):
        self._on_output = on_output
        self._lock = threading.Lock()
        self._stopper: Callable[[float], None] | None = None
        self._ended = False
        self.grace: float | None = None  # set by `kill`: the command is being stopped
        self._stopped = threading.Event()
        self._stopping = False
        self.muted = False  # while the run's check runs: its output is not streamed

    def output(self, chunk: bytes) -> None:
        if self._on_output is not None and chunk and not self.muted:
            self._on_output(chunk)

    def attach(self, stopper: Callable[[float], None]) -> None:
        """The command may run now; `stopper(grace)` stops it (blocking until it did)."""
        with self._lock:
            self._stopper = stopper
            grace = self.grace
        if grace is not None:
            self._stop_in_background(stopper, grace)

    def detach(self) -> None:
        """The command ended: a later kill has nothing of it to stop."""
        with self._lock:
            self._stopper = None

    def finish(self) -> None:
        """The run's last command ended: a later kill does nothing."""
        with self._lock:
            self._ended = True

    def kill(self, grace: float) -> bool:
        """Stop the command (TERM, then KILL after `grace` seconds), in a thread of its own;
        False when it already ended or a kill was already asked for."""
        with self._lock:
            if self._ended or self.grace is not None:
                return False
            self.grace = grace
            stopper = self._stopper
        if stopper is not None:
            self._stop_in_background(stopper, grace)
        return True

    @property
    def killed(self) -> bool:
        return self.grace is not None

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """After a kill: wait until nothing of the command runs any more (its stopper
        returned); at once when no stopper ran (the command never started)."""
        with self._lock:
            if not self._stopping:
                return True
        return self._stopped.wait(timeout)

    def _stop_in_background(self, stopper: Callable[[float], None], grace: float) -> None:
        with self._lock:
            self._stopping = True

        def stop() -> None:
            try:
                stopper(grace)
            finally:
                self._stopped.set()

        threading.Thread(target=stop, name="kill", daemon=True).start()


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
        control: RunControl | None = None,
        key: str = "",
    ) -> Completed:
        """Run `command` with `sh -c` on `machine`. `env` holds secrets (`Secret` values: call
        `reveal()` at the last moment); they must never reach any process's argument list.
        Kill the whole process group after `timeout` seconds. With `control`, hand it the
        output as it comes and let it stop the command (see `RunControl`). `key` is the run's
        `run_key`: a transport that keeps results for adoption keeps it with them."""

    def reap(
        self,
        machine: Machine,
        run_id: int,
        *,
        attempt: int | None = None,
        command: str | None = None,
        stop: bool = True,
        key: str | None = None,
    ) -> Completed | None:
        """A run on `machine` was found `running` after its reconciler died. If its command
        is still running, stop it (so nothing runs twice) and return None — or, with
        `stop=False`, leave it running and return `STILL_RUNNING` (ask again later); if the
        target kept its result (`attempt` and `command` identify which one), return it to be
        adopted; None when nothing is known. `key` (the run's `run_key`): a kept result is
        adopted only when kept for it (None: not checked). Raises `TransportError` when the
        target cannot be asked. Default: nothing to do."""
        return None

    def prepare(  # noqa: B027 (optional)
        self, machines: Iterable[Machine], runs: Mapping[str, int] | None = None
    ) -> None:
        """Runs on `machines` are about to start (`runs`: how many of each, by machine name,
        when known): get ready for them without waiting (a transport with connections opens
        them now, all at once, in the background). Never raises: a failure shows when a run
        needs the machine. Default: nothing to do."""

    def settle(  # noqa: B027 (optional: a transport that keeps nothing on the target)
        self, recorded: Collection[int], unrecorded: Collection[int] = ()
    ) -> None:
        """The ends of the `recorded` runs were durably written (the engine calls this right
        after each end batch): what the target kept of their results may go now. The
        `unrecorded` runs ended too but their ends were not written (refused): keep what
        the target holds of them, for a later pass to adopt. Ids a transport does not know
        are ignored. Default: nothing to do."""

    def release(self, run_ids: Iterable[int]) -> None:  # noqa: B027 (optional, as settle)
        """A pass that borrowed this transport (`kept.Borrowed`) ended: what `close` does
        for its runs `run_ids`, without closing the connections others still use. Default:
        nothing to do."""

    def close(self) -> None:  # noqa: B027 (optional: a transport without connections keeps it)
        """Release connections."""
