"""`reconcile diff BASE [HEAD]`: the desired-state change between two git revisions (SPEC §4).

Needs no state store, no key and no network. Optional enrichments: with an identity
(`--identity`, `RECONCILE_IDENTITY_FILE`, `RECONCILE_IDENTITY`) the changed vaults are
decrypted to name the keys added, removed or changed (values are compared as digests and
never printed); with `--state URL` (or `RECONCILE_STATE`) the store is opened read-only to
say which changed tasks already ran at HEAD's versions. Exit 0; an unknown revision exit 3;
an invalid inventory at a revision exit 2 with `REVISION:path:line:column` errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace

from reconciler.adapters.source.revision import Repository, RevisionInventory
from reconciler.adapters.source.signatures import required_roles
from reconciler.cli import views, wiring
from reconciler.cli.diff_views import diff_json, diff_markdown, diff_text
from reconciler.core.diagnostics import Diagnostics, Location
from reconciler.core.diff import Diff, Revision, Side, diff_sides
from reconciler.core.errors import VaultError, raise_if_errors
from reconciler.core.state import ExecutedState


def run(args: argparse.Namespace, ctx: Context) -> views.Output:
    """The diff of `args.base`..`args.head`, in each format (cli.main prints the one asked
    for); exit 0."""
    with Repository(wiring.inventory_dir(args)) as repo:
        base, head = repo.load(args.base), repo.load(args.head)
    _check_present(base, head)
    for warning in head.warnings:
        print(str(warning), file=sys.stderr)
    diff = compute(args, ctx, base, head)
    if not (base.missing or head.missing):
        diff = replace(
            diff,
            requires=tuple(required_roles(wiring.inventory_dir(args), base.commit, head.commit)),
        )
    return views.Output(
        diff_json(diff), lambda: diff_text(diff), markdown=lambda: diff_markdown(diff)
    )


def compute(
    args: argparse.Namespace, ctx: Context, base: RevisionInventory, head: RevisionInventory
) -> Diff:
    """The `Diff` of two loaded revisions, with the optional vault and state enrichments."""
    from reconciler.adapters.vault.secrets import load_identities

    identities = load_identities(getattr(args, "identity", None))
    changed = {
        t for t in set(base.vaults) | set(head.vaults) if base.vaults.get(t) != head.vaults.get(t)
    }
    learn = ctx.redactor.add
    sides = [_side(loaded, identities, changed, learn) for loaded in (base, head)]
    from reconciler.pipeline.engine import utc_now

    # `now`: whether a schedule change makes a slot due depends on it, as in the pass.
    return diff_sides(sides[0], sides[1], _executed(args), now=utc_now())


def _check_present(base: RevisionInventory, head: RevisionInventory) -> None:
    """An inventory missing at both revisions is a wrong `--inventory`; at one of them, the
    inventory was created (or removed) in between: every object counts as added (removed)."""
    if base.missing and head.missing:
        diags = Diagnostics()
        diags.error(
            Location(base.path),
            f"no inventory folder at {base.revision} nor at {head.revision}",
            "pass --inventory DIR (its path in the repository)",
        )
        raise_if_errors(diags)
    for side, other, word in ((base, head, "added"), (head, base, "removed")):
        if side.missing:
            print(
                f"warning: {side.revision}:{side.path} does not exist; everything at "
                f"{other.revision} counts as {word}",
                file=sys.stderr,
            )


def _side(loaded: RevisionInventory, identities: Sequence, changed: set[str], learn) -> Side:
    """A `Side` for the diff; the changed vaults decrypted to value digests when possible."""
    keys: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    if identities:
        from reconciler.adapters.vault import team_vault
    for team in sorted(changed & set(loaded.vaults)) if identities else ():
        try:
            keys[team] = _digests(_decrypt(loaded.vaults[team], identities, team), learn)
        except team_vault.VaultTeamError as exc:
            raise VaultError(f"at {loaded.revision}: {exc}") from None  # another team's vault
        except VaultError as exc:
            errors[team] = f"at {loaded.revision}: {exc}"
    return Side(
        Revision(loaded.revision, loaded.commit),
        loaded.inventory,
        loaded.desired,
        loaded.vaults,
        keys,
        errors,
    )


def _decrypt(data: bytes, identities: Sequence, team: str) -> dict[str, str]:
    """The secrets of one vault's bytes; `VaultError` with a one-line reason, no plaintext."""
    from reconciler.adapters.vault import age, team_vault

    try:
        plaintext = age.decrypt(data, identities)
    except age.AgeError as exc:
        raise VaultError(team_vault.explain(exc)) from None
    vault = team_vault.decode_vault(plaintext, f"vaults/{team}.age")
    if vault.team is None:  # written before vaults named their team: only key names are shown
        return vault.secrets
    return vault.secrets_of(team, f"vaults/{team}.age")


def _digests(secrets: Mapping[str, str], learn) -> dict[str, str]:
    """Name -> SHA-256 of the value: enough to tell a changed value, never the value. The
    values are taught to the redactor first, so no sink can ever print one."""
    if learn is not None and secrets:
        learn(*secrets.values())
    return {name: hashlib.sha256(value.encode()).hexdigest() for name, value in secrets.items()}


def _executed(args: argparse.Namespace) -> ExecutedState | None:
    """The store's runs with `--state` (or RECONCILE_STATE), opened read-only; a store that
    does not exist yet holds no runs. None when no store was asked for."""
    asked = wiring.settings(args).state  # only the host's word: never the file's
    if asked is None:
        return None
    url = asked.value
    from reconciler.adapters.store.factory import open_store

    store = open_store(url, read_only=True)
    if store is None:
        return ExecutedState()
    try:
        return store.snapshot()
    finally:
        store.close()


__all__ = ["compute", "run"]
