"""Whether the command of an `unknown` run still runs on its machine (`queue retry`, `queue
kill`).

A run ends `unknown` when its result was lost (a dropped connection, a dead pass): its
command may still be running on the target. Before `queue retry` queues another attempt,
the target is asked through the run's transport (`Transport.reap`, the same markers a pass
adopts results from): a second copy beside the first is what an operator retrying a lost
migration least wants. `queue kill` uses the same question to stop such an orphan.

A local machine's runs are child processes of the reconciler that ran them: their markers
are on that host only. A run whose recorded holder was another host (a PostgreSQL worker
elsewhere) cannot be told from here, like an unreachable machine.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from reconciler.adapters.transport.base import STILL_RUNNING, run_key
from reconciler.cli import wiring
from reconciler.core.errors import TransportError
from reconciler.core.state import Run

RUNNING, STOPPED, ENDED, UNTOLD = "running", "stopped", "ended", "untold"


@dataclass(frozen=True)
class Answer:
    """What the machine said: `RUNNING`, `STOPPED` (it was running: `ask(stop=True)` stopped
    it), `ENDED` (nothing of the run runs there), or `UNTOLD` (it could not be asked: `why`)."""

    state: str
    why: str = ""


def ask(ctx, loaded, run: Run, *, stop: bool = False) -> Answer:
    """Ask `run`'s machine whether its command still runs; with `stop`, stop it if so (TERM
    to its whole process group, KILL two seconds later, as a pass stops an orphan): then
    `STOPPED`. Never adopts a result: one the target kept stays there for the next pass to
    adopt. `loaded`: the inventory as the command read it (`wiring.load`)."""
    machine = loaded.desired.machines.get(run.machine)
    if machine is None:
        return Answer(UNTOLD, f"machine {run.machine} is no longer in the inventory")
    holder = (run.owner or "").split(":", 1)[0]
    if machine.transport == "local" and holder and holder != socket.gethostname():
        # Its markers and processes are on that host (a PostgreSQL worker elsewhere).
        return Answer(UNTOLD, f"it ran on another host ({holder}), which this one cannot see")
    transports = wiring.transports(
        wiring.vault_secrets(ctx, loaded.inventory),
        loaded.inventory.settings,
        loaded.workdir,
        teams=len(loaded.inventory.teams),
    )
    spec = loaded.desired.tasks.get(run.task)

    def reap(stop: bool):
        return transports[machine.transport].reap(
            machine,
            run.id,
            attempt=run.attempt,
            command=spec.run if spec is not None else None,
            stop=stop,
            key=run_key(run),  # another store's run of this id is not this one
        )

    try:
        # Peek first even to stop: a stopping reap answers None both for a command it
        # stopped and for one that had ended, which `queue kill` must tell apart.
        if reap(False) is not STILL_RUNNING:
            return Answer(ENDED)
        if not stop:
            return Answer(RUNNING)
        reap(True)
        return Answer(STOPPED)
    except TransportError as exc:
        return Answer(UNTOLD, str(exc))
    finally:
        for transport in transports.values():
            transport.close()


__all__ = ["ENDED", "RUNNING", "STOPPED", "UNTOLD", "Answer", "ask"]
