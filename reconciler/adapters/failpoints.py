"""Named crash points for tests of the run protocol.

`RECONCILER_FAILPOINTS=after_claim=crash,after_spawn=crash` makes the process kill itself
with SIGKILL at those points, exactly like a power cut or `kill -9`. Inert (one dictionary
lookup) unless the variable is set. In the adapters tier so that a transport can have its own
points (`after_spawn`: the local transport's command exists, its marker does not yet;
`after_reap`: the SSH transport read a dead run's markers, not yet adopted); the
engine's are reached through `reconciler.pipeline.failpoints`. `after_plan` is hit once a
pass's plan has committed, before anything is claimed. With a journal (every pass and worker
of the CLI) a round claims and marks dispatched in one transaction: `after_claim` is hit
inside it, after the claims and before the commit (the claims die with the process), and
`after_dispatch` after its commit, before any command is sent. `before_pass=hang` stalls each
pass of the daemon before it starts (for /healthz's tests: passes that stop ending);
`before_pass=wait:PATH` holds each one until the file PATH exists (a pass caught planning).
"""

from __future__ import annotations

import os
import signal
import threading
from functools import lru_cache

NAMES = (
    "after_plan",
    "after_claim",
    "after_dispatch",
    "after_spawn",
    "after_reap",
    "before_result",
    "before_pass",
)


@lru_cache(maxsize=4)
def _parse(spec: str) -> dict[str, str]:
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        points[name] = action or "crash"
    return points


def hit(name: str) -> None:
    """Act on failpoint `name` if RECONCILER_FAILPOINTS configures it."""
    spec = os.environ.get("RECONCILER_FAILPOINTS")
    action = _parse(spec).get(name) if spec else None
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":  # a stalled pass (the daemon's `before_pass`): never returns
        threading.Event().wait()
    elif action is not None and action.startswith("wait:"):  # held until a test lets it go
        released = action.removeprefix("wait:")
        while not os.path.exists(released):
            threading.Event().wait(0.02)
