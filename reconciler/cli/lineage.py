"""The commit check shared by `--once` and the daemon: run only commits that move forward."""

from __future__ import annotations

import argparse
from typing import Callable

import logging

from ..engine import utc_now
from ..errors import SourceError
from ..source.signatures import verify as verify_commits
from ..source import git as gitsource
from ..store.base import StateStore
from . import wiring

log = logging.getLogger(__name__)


def lineage_guard(args: argparse.Namespace, store: StateStore, commit: str | None,
                  verify: str = "none") -> Callable[[], None]:
    """A `before_plan` hook: refuse (SourceError, exit 3) a commit that does not descend from
    the last one reconciled — or, with `git.verify`, one that is unsigned, signed by a key no
    member holds, or changes what its signer's role does not allow — else record it as the
    new last one. Runs under the pass lock, so two passes cannot both pass the check."""
    def guard() -> None:
        if commit is None:
            if verify != "none":
                raise SourceError("git.verify is on, but the inventory is not in a git "
                                  "repository: there is no commit to verify")
            return
        inventory = wiring.inventory_dir(args)
        last = store.last_commit()
        gitsource.check_lineage(inventory, last, commit)
        if verify != "none":
            if commit.endswith("-dirty"):
                raise SourceError("git.verify is on and the inventory has uncommitted changes, "
                                  "which no signature covers: commit (signed) or stash them")
            for verdict in verify_commits(inventory, verify, last, gitsource.sha_of(commit)):
                if verdict.first_use:
                    log.warning("trusting commit %s on first use: signed by admin key %s",
                                verdict.commit[:12], verdict.fingerprint)
        store.record_commit(gitsource.sha_of(commit), utc_now())
    return guard
