"""Following one run from any host (issue 16 §1): its output so far, then what comes, read
from the store, until the run ends, whichever process executes it.

While the run runs, its holder writes its new lines as chunks once a second (`LiveRuns`);
their offsets say where each starts in the run's (redacted) output, so a follower shows
every byte once and marks what it could not see (dropped beyond the last 64 KiB). When the
run ended, the rest is in its final output (`core.output.unseen`): a run that wrote chunks
records the same stream there. A retried run shows each attempt in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reconciler.adapters.store.base import StateStore
from reconciler.core.errors import UsageError
from reconciler.core.output import MARK, unseen
from reconciler.core.state import Run, RunStatus

POLL_SECONDS = 0.25  # how often the store is asked (its holder writes once a second)


@dataclass(frozen=True)
class Piece:
    """Output of `attempt` of the followed run, in order (a mark for what was missed)."""

    attempt: int
    text: str


@dataclass(frozen=True)
class Ended:
    """The followed run ended: as the store has it."""

    run: Run


def follow(
    store: StateStore,
    run_id: int,
    *,
    poll: float = POLL_SECONDS,
    wait: Callable[[float], object] = time.sleep,
) -> Iterator[Piece | Ended]:
    """The followed run's output pieces as they come, then `Ended`. Raises `UsageError`
    (exit 2) for a run that does not exist."""
    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"run {run_id} does not exist (see `reconcile queue list`)")
    attempt, seen, seq = run.attempt, 0, 0
    while True:
        if run.attempt != attempt:  # the attempt followed ended and the run was retried:
            if run.status.is_active:  # the retry has not ended, so the output is its own
                yield from _piece(attempt, unseen(run.output, seen))
            attempt, seen, seq = run.attempt, 0, 0
        if run.status.is_final:
            yield from _piece(attempt, unseen(run.output, seen))
            yield Ended(run)
            return
        if run.status is RunStatus.RUNNING:
            for chunk in store.output_since(run_id, attempt, seq):
                if chunk.start > seen:
                    yield Piece(attempt, MARK.format(chunk.start - seen))
                    seen = chunk.start
                body = chunk.body.encode("utf-8", "replace")[seen - chunk.start :]
                yield from _piece(attempt, body.decode("utf-8", "replace"))
                seen, seq = max(seen, chunk.end), chunk.seq
        wait(poll)
        latest = store.get_run(run_id)
        if latest is None:  # pruned meanwhile: nothing more to show
            yield Ended(run)
            return
        run = latest


def _piece(attempt: int, text: str) -> Iterator[Piece]:
    if text:
        yield Piece(attempt, text)


__all__ = ["Ended", "Piece", "follow"]
