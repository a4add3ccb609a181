"""`reconcile validate`: check the inventory; no state, no network (an identity, if given,
also checks the `{vault: NAME}` references against the vaults).

Apart from the other commands so that it imports only the loader and the checks: no engine,
store or transport (issue 14: it starts at once, in CI on every push).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
from datetime import UTC, datetime

from reconciler.cli import views, wiring
from reconciler.cli.json_errors import diagnostic_json, message_json
from reconciler.core.compile import shared_user_warnings
from reconciler.core.diagnostics import Diagnostic, Diagnostics, Location, Severity, did_you_mean
from reconciler.core.errors import InputError, VaultError, raise_if_errors
from reconciler.core.model import VaultRef
from reconciler.inventory.lint import (
    find_ended_freezes,
    find_hardcoded_credentials,
    find_short_approvals,
)


def run(args: argparse.Namespace, ctx: Context) -> views.Output:
    """Check the inventory: schemas, references, cycles, likely hardcoded credentials."""
    try:
        loaded = wiring.load(args)
        warnings = [
            *loaded.warnings,
            *find_hardcoded_credentials(loaded.inventory),
            *find_ended_freezes(loaded.inventory, datetime.now(UTC)),
            *find_short_approvals(loaded.inventory),
            *shared_user_warnings(loaded.inventory),
        ]
        warnings += _check_vault_references(ctx, loaded)
    except InputError as exc:
        # SPEC §7: in JSON, a verdict on stdout even when the inventory is invalid.
        redact = ctx.redactor
        verdict = {
            "valid": False,
            "errors": [diagnostic_json(d, redact) for d in exc.diagnostics.errors],
            "warnings": [redact(str(w)) for w in exc.diagnostics.warnings],
        }
        return views.Output(verdict, exit_code=exc.exit_code, failure=exc)
    counts = {
        "teams": len(loaded.inventory.teams),
        "machines": len(loaded.inventory.machines),
        "tasks": len(loaded.desired.tasks),
    }
    failed = bool(args.strict and warnings)
    return views.Output(
        {
            "valid": not failed,
            # Under --strict the warnings are what failed it: each as an error, located.
            "errors": [_located(w, ctx.redactor) for w in warnings] if failed else [],
            **counts,
            "warnings": [ctx.redactor(str(w)) for w in warnings],
        },
        lambda: views.validate_text(counts, len(warnings)),
        exit_code=2 if failed else 0,
        warnings=warnings,
    )


def _located(warning, redact) -> dict:
    """A warning as an error of the JSON verdict: path, line, column (null when it is no
    file's), message, hint, text."""
    if isinstance(warning, Diagnostic):
        return diagnostic_json(warning, redact)
    return message_json(redact(str(warning)))


def _check_vault_references(ctx: Context, loaded) -> list:
    """With an identity, every `{vault: NAME}` must name a key of its team's vault: unknown
    names are errors (exit 2); vaults this identity cannot open are warnings (one may be a
    recipient of some teams only). Without an identity nothing is checked."""
    from reconciler.adapters.vault.secrets import VaultSecrets, load_identities

    identities = load_identities(ctx.settings.identity)
    if not identities:
        return []
    resolver = VaultSecrets(loaded.inventory.root, identities, ctx.redactor)
    errors, warnings = Diagnostics(), []
    for team, refs in sorted(_vault_references(loaded.inventory).items()):
        try:
            names = resolver.team_secrets(team)
        except VaultError as exc:
            warnings.append(
                Diagnostic(
                    Location(f"team {team}"),
                    f"cannot check its vault references: {exc}",
                    severity=Severity.WARNING,
                )
            )
            continue
        for ref in refs:
            if ref.name not in names:
                errors.error(
                    ref.location or Location(loaded.inventory.root),
                    f"secret '{ref.name}' is not in the vault of team '{team}'",
                    did_you_mean(ref.name, names)
                    or f"add it: reconcile vault set {team} {ref.name} -",
                )
    raise_if_errors(errors)
    return warnings


def _vault_references(inventory) -> dict[str, list[VaultRef]]:
    """Every `{vault: NAME}` of the inventory, by the team whose vault it reads."""
    refs: dict[str, list[VaultRef]] = {}
    for task in inventory.tasks.values():
        refs.setdefault(task.team, []).extend(v for _, v in task.env if isinstance(v, VaultRef))
    for machine in inventory.machines.values():
        if machine.key is not None:
            refs.setdefault(machine.team, []).append(machine.key)
    for team in inventory.teams.values():
        refs.setdefault(team.name, []).extend(
            a.url for a in team.alerts if isinstance(a.url, VaultRef)
        )
    return {team: found for team, found in refs.items() if found}
