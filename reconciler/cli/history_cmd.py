"""`reconcile accept-history COMMIT --reason TEXT`: accept a new line of history, explicitly.

A pass refuses a commit that does not descend from the last one reconciled (an amend, a
rebase, a force-push), so a rewritten history locks the store out until someone decides. This
command is that decision: it makes COMMIT the store's last reconciled commit, under the pass
lock, and writes `history.accepted` (COMMIT, the commit it replaces, the reason, the OS user
and, under verify, the signer) to the audit log first. Under `git.verify` COMMIT must be signed
by an admin (per the roles of the last reconciled commit) whose roles cover every path that
differs from the last reconciled commit, exactly as a pass in `head` mode would judge it.
Nothing runs; the next pass plans from COMMIT on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
import sys

from reconciler.adapters.audit.writer import AuditWriter, default_actor
from reconciler.adapters.source import git as gitsource
from reconciler.adapters.source.signatures import accept as accept_signed
from reconciler.adapters.store.common import redact_url
from reconciler.adapters.store.factory import open_store
from reconciler.cli import views, wiring
from reconciler.cli.lineage import decide
from reconciler.cli.passes import _git_view, _state_location
from reconciler.core.errors import SourceError
from reconciler.pipeline.engine import utc_now


def run(args: argparse.Namespace, ctx: Context) -> int:
    inventory = wiring.inventory_dir(args)
    view = _git_view(inventory)
    if view is None:
        raise SourceError(
            f"{inventory} is not in a git repository with commits: there is no history to accept"
        )
    trees, _ = view
    sha = trees.resolve(args.commit)
    if sha is None:
        raise SourceError(f"unknown revision '{args.commit}'; fetch it first")
    reason = " ".join(views.utf8_argument("--reason", args.reason).split())
    if not reason:
        raise SourceError("--reason must say why (it is kept in the audit log)")
    settings = ctx.settings
    url, state = _state_location(settings, inventory, view, gitsource.head_commit(inventory))
    store = open_store(url, create=False)
    if store is None:
        raise SourceError(
            f"no state store at {redact_url(url)}: nothing was reconciled, so there is no "
            "history to replace (a new store's first pass takes --trust-anchor)"
        )
    try:
        with store.pass_lock(wiring.lock_timeout(args)):
            return _accept(args, ctx, settings, store, inventory, view, state, sha, reason)
    finally:
        store.close()


def _accept(args, ctx, settings, store, inventory, view, state, sha: str, reason: str) -> int:
    trees, _ = view
    last = store.last_commit()
    if last is None:
        raise SourceError(
            "this store has never reconciled a commit: there is no history to "
            "replace (a new store's first pass takes --trust-anchor)"
        )
    if last == sha or trees.is_ancestor(last, sha):
        print(
            f"{sha[:12]} descends from {last[:12]}, the last commit reconciled: nothing to "
            "accept, the next pass takes it"
        )
        return 0
    trust = decide(settings, view, last, sha, state)
    signer = accept_signed(inventory, last, sha).fingerprint if trust.on else None
    AuditWriter(store, actor=default_actor(), clock=utc_now, redact=ctx.redactor).append(
        "history.accepted",
        commit=sha,
        previous=last,
        reason=reason,
        signer=signer,
        verify=trust.mode,
    )
    store.record_commit(sha, utc_now())
    print(
        f"accepted {sha[:12]} in place of {last[:12]} as the last commit reconciled"
        + (f" (signed by admin key {signer})" if signer else ""),
        file=sys.stderr,
    )
    return 0


__all__ = ["run"]
