"""The commit check shared by `--once` and the daemon: run only commits that move forward."""

from __future__ import annotations

import argparse
from typing import Callable

from ..engine import utc_now
from ..source import git as gitsource
from ..store.base import StateStore
from . import wiring


def lineage_guard(args: argparse.Namespace, store: StateStore,
                  commit: str | None) -> Callable[[], None]:
    """A `before_plan` hook: refuse (SourceError, exit 3) a commit that does not descend from
    the last one reconciled, else record it as the new last one. Runs under the pass lock,
    so two passes cannot both pass the check with diverging commits."""
    def guard() -> None:
        if commit is None:
            return
        gitsource.check_lineage(wiring.inventory_dir(args), store.last_commit(), commit)
        store.record_commit(gitsource.sha_of(commit), utc_now())
    return guard
