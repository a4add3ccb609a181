"""`reconcile keys rotate MACHINE [--finish]`, `keys prune MACHINE`, `keys status`.

The rotation itself is `reconciler.pipeline.keys`; this module finds the machine, reads and writes its
team vault (the private key only ever exists decrypted in memory), audits each step into the
configured store when it exists, and prints what happened.

Wiring: cli/args.py declares the command and its flags (COMMANDS); `run(args) -> int`
executes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from reconciler.adapters.vault import team_vault
from reconciler.adapters.vault.secrets import load_identities
from reconciler.cli import views, wiring
from reconciler.core.diagnostics import did_you_mean
from reconciler.core.errors import InputError, ReconcilerError, StoreError, UsageError, VaultError
from reconciler.core.model import Inventory, Machine
from reconciler.inventory.loader import display_path
from reconciler.pipeline import keys


def run(
    args: argparse.Namespace, ctx: Context, *, on_step=None, transport_factory=None
) -> views.Output:
    """Execute `keys ACTION`; what it did (cli.main prints it in the format asked for).
    `on_step`/`transport_factory` are for tests (see KeyManager)."""
    inventory = wiring.load(args).inventory
    if args.keys_command == "status":
        return _status(args, inventory, transport_factory)
    machine = _machine(inventory, args.machine)
    identities = load_identities(getattr(args, "identity", None))
    if not identities:
        raise UsageError(
            f"keys {args.keys_command}: an identity is needed to read the vault "
            "of team "
            f"'{machine.team}' (--identity, RECONCILE_IDENTITY_FILE "
            "or RECONCILE_IDENTITY)"
        )
    path = team_vault.vault_path(inventory.root, machine.team)
    secrets = team_vault.read(path, identities, display_path(path))
    name = machine.key.name
    if name not in secrets:
        raise VaultError(
            f"secret '{name}' (the key of machine '{machine.name}') is not in the "
            f"vault of team '{machine.team}'"
        )
    audit = _Audit(args, inventory)
    manager = keys.KeyManager(
        machine,
        authorized_keys=args.authorized_keys,
        timeout=args.timeout,
        transport_factory=transport_factory,
        audit=audit,
        on_step=on_step,
    )
    try:
        if args.keys_command == "rotate":
            team = inventory.teams.get(machine.team)
            if team is None:
                raise UsageError(f"machine '{machine.name}': no team '{machine.team}'")
            recipients = team_vault.parse_recipients(team)  # before touching the machine

            def store(private: str) -> None:
                previous = team_vault.read(path, identities, display_path(path))
                if previous.get(name) != secrets[name]:
                    raise VaultError(
                        f"{display_path(path)}: '{name}' changed while rotating; not overwriting it"
                    )
                team_vault.write(path, {**previous, name: private}, recipients, previous=previous)
                audit.vault_write(machine.team, name)

            outcome = manager.rotate(secrets[name], store, finish=args.finish)
        else:
            outcome = manager.prune(secrets[name])
    finally:
        audit.close()
    return _outcome(args, outcome, path)


def _machine(inventory: Inventory, name: str) -> Machine:
    machine = inventory.machines.get(name)
    if machine is None:
        hint = did_you_mean(name, inventory.machines)
        raise UsageError(f"no machine '{name}' in the inventory" + (f" ({hint})" if hint else ""))
    if machine.transport != "ssh" or machine.key is None:
        raise UsageError(
            f"machine '{name}' has no `key: {{vault: NAME}}`: only keys kept in "
            "the team vault can be rotated"
        )
    return machine


def _outcome(args, outcome: keys.Outcome, path: Path) -> views.Output:
    data = {
        "machine": outcome.machine,
        "new_fingerprint": outcome.new_fingerprint,
        "old_fingerprint": outcome.old_fingerprint,
        "removed": outcome.removed,
        "finished": outcome.finished,
        "steps": outcome.steps,
    }
    return views.Output(data, lambda: _outcome_text(args.keys_command, outcome, path))


def _outcome_text(command: str, outcome: keys.Outcome, path: Path) -> str:
    if command == "rotate":
        lines = [
            f"{outcome.machine}: new key {outcome.new_fingerprint} added, verified and stored "
            f"in {display_path(path)}"
        ]
        if outcome.finished:
            lines.append(
                f"{outcome.machine}: old key {outcome.old_fingerprint} removed and refused"
            )
        else:
            lines.append(
                f"{outcome.machine}: the old key {outcome.old_fingerprint} still works; once "
                f"the vault change is merged and live, run: reconcile keys prune "
                f"{outcome.machine}"
            )
        return "\n".join(lines)
    lines = [f"{outcome.machine}: removed {_short(line)}" for line in outcome.removed_lines]
    if not outcome.removed_lines:
        lines.append(f"{outcome.machine}: nothing to remove")
    lines.append(f"{outcome.machine}: the vault key {outcome.new_fingerprint} still logs in")
    return "\n".join(lines)


def _short(raw: str) -> str:
    line = keys.parse_line(raw)
    if line is None:
        return raw[:80]
    return f"{line.fingerprint} {line.comment}".strip()


# ---------------------------------------------------------------- status


def _status(args, inventory: Inventory, transport_factory) -> views.Output:
    identities = load_identities(getattr(args, "identity", None))
    rows = []
    vaults: dict[str, dict | ReconcilerError] = {}
    now = datetime.now(UTC)
    for machine in sorted(inventory.machines.values(), key=lambda m: m.name):
        if machine.transport != "ssh" or machine.key is None:
            continue
        path = team_vault.vault_path(inventory.root, machine.team)
        row = {
            "machine": machine.name,
            "team": machine.team,
            "key": machine.key.name,
            "fingerprint": None,
            "created": None,
            "source": None,
            "age_days": None,
            "error": None,
        }
        created = None
        if machine.team not in vaults:
            try:
                if not identities:
                    raise UsageError("no identity to read the vault")
                vaults[machine.team] = team_vault.read(path, identities, display_path(path))
            except InputError as exc:
                vaults[machine.team] = exc
        secrets = vaults[machine.team]
        if isinstance(secrets, ReconcilerError):
            row["error"] = str(secrets)
        elif machine.key.name not in secrets:
            row["error"] = f"'{machine.key.name}' is not in the vault"
        else:
            manager = keys.KeyManager(
                machine,
                authorized_keys=args.authorized_keys,
                timeout=args.timeout,
                transport_factory=transport_factory,
            )
            try:
                created, row["fingerprint"] = manager.created(secrets[machine.key.name])
                row["source"] = "authorized_keys" if created else None
            except ReconcilerError as exc:
                row["error"] = str(exc)
        if created is None:
            created = _vault_changed(path)
            row["source"] = "vault" if created else None
        if created is not None:
            row["created"] = views.iso(created)
            row["age_days"] = round((now - created).total_seconds() / 86400, 1)
        rows.append(row)
    return views.Output(rows, lambda: _status_text(rows))


def _status_text(rows: list[dict]) -> str:
    if not rows:
        return "(no ssh machine has a key in a team vault)"
    return views.table(
        ("MACHINE", "KEY", "AGE", "SINCE", "FROM", "NOTE"),
        [
            (
                r["machine"],
                r["key"],
                "-" if r["age_days"] is None else f"{r['age_days']:g}d",
                r["created"] or "-",
                r["source"] or "-",
                (r["error"] or "")[:80],
            )
            for r in rows
        ],
    )


def _vault_changed(path: Path) -> datetime | None:
    """When the vault file last changed: its last commit, else its modification time."""
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%ct", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode == 0 and done.stdout.strip():
            return datetime.fromtimestamp(int(done.stdout.strip()), UTC)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


# ---------------------------------------------------------------- audit


class _Audit:
    """Appends `keys.*` entries to the configured store when it exists; never fails the
    command (a warning on stderr instead)."""

    def __init__(self, args, inventory: Inventory):
        from reconciler.adapters.store.factory import open_store

        self.writer = None
        try:
            self.store = open_store(wiring.state_url(args, inventory), create=False)
        except (StoreError, InputError):
            self.store = None
        if self.store is not None:
            from reconciler.adapters.audit.writer import AuditWriter

            self.writer = AuditWriter(self.store)

    def __call__(self, action: str, **detail) -> None:
        if self.writer is None:
            return
        try:
            self.writer.append(action, **detail)
        except StoreError as exc:
            print(f"warning: could not write the audit entry {action}: {exc}", file=sys.stderr)

    def vault_write(self, team: str, name: str) -> None:
        if self.store is None:
            return
        from reconciler.pipeline.sinks import audit_vault_write

        try:
            audit_vault_write(self.store, team, [name], "keys rotate")
        except StoreError as exc:
            print(f"warning: could not write the audit entry: {exc}", file=sys.stderr)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
