"""The one place that knows concrete classes: store, transports, engine; and the settings of a
command, resolved by `cli.settings` (flag > environment > `inventory/reconciler.yaml` >
default; SPEC §6) and read here.

The store and the transports are imported by the functions that build them: `validate`
loads the inventory through this module and must not pay for SQLite, PostgreSQL or SSH
(issue 14: it starts in under 0.15 s; tests/e2e/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cli.settings import Context, HostSettings, resolve
from reconciler.core.compile import compile_collecting
from reconciler.core.diagnostics import Diagnostic, Diagnostics, Location
from reconciler.core.errors import UsageError, raise_if_errors
from reconciler.core.model import DesiredState, Inventory
from reconciler.inventory.loader import read_inventory

if TYPE_CHECKING:
    from reconciler.adapters.store.base import StateStore
    from reconciler.adapters.transport.base import Transport
    from reconciler.adapters.transport.kept import KeptTransports


@dataclass(frozen=True)
class Loaded:
    """A validated inventory and what it compiles to, with the warnings found on the way."""

    inventory: Inventory
    desired: DesiredState
    warnings: list[Diagnostic]
    # Where local runs start: under git.verify the verified commit's private checkout; None:
    # the reconciler's own working directory.
    workdir: Path | None = None


def settings(args: argparse.Namespace) -> HostSettings:
    """The flags of this command over the environment, resolved (cli/settings.py)."""
    return resolve(args, os.environ)


def inventory_dir(args: argparse.Namespace) -> Path:
    return settings(args).inventory.value


def load(args: argparse.Namespace) -> Loaded:
    """Load and compile the inventory; raises `InputError` with every problem."""
    return load_from(inventory_dir(args))


def load_from(folder: Path) -> Loaded:
    """Load and compile the inventory in `folder`; raises `InputError` with every problem."""
    # Every problem in one run: the files' own, then references, cycles and targets among
    # the objects that are valid (validate never reports stage by stage).
    inventory, diags, unresolved = read_inventory(folder)
    desired = compile_collecting(inventory, unresolved, diags)
    raise_if_errors(diags)
    return Loaded(inventory, desired, diags.warnings)


def inventory_stamp(folder: Path) -> tuple[tuple, float]:
    """What a reload of the inventory in `folder` could see change, without reading it: the
    path, size, modification time and inode of every entry under it (hidden ones left out,
    as the loader leaves them out; symlinks followed), and the newest modification time. A
    few milliseconds for thousands of files, where loading them takes most of a second."""
    entries: list[tuple] = []
    newest = 0.0
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [".", *sorted(f for f in files if not f.startswith("."))]:
            path = os.path.join(top, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                entries.append((path, exc.errno))
                continue
            entries.append((path, st.st_size, st.st_mtime_ns, st.st_ino))
            newest = max(newest, st.st_mtime)
    return tuple(entries), newest


def inventory_if_valid(args: argparse.Namespace) -> Inventory | None:
    """The inventory for commands that only need its settings, the state URL (queue, audit,
    prune): a typo in a task or a team must not stop an operator from them, nor point them
    at another store. When files have errors, the inventory of what is valid in them is
    returned, and with it `reconciler.yaml`'s settings (only its `state:` is read).

    When `reconciler.yaml` itself has an error, its `state:` cannot be trusted and the default
    store would be the wrong one: refused (`InputError`, exit 2, naming the file), unless
    `--state` or `RECONCILE_STATE` names the store. None when there is no inventory folder
    (then no `state:` either: the flag, the variable or the default)."""
    from reconciler.core.errors import InputError
    from reconciler.inventory.loader import SETTINGS_FILES, display_path

    folder = inventory_dir(args)
    try:
        inventory, diags, _ = read_inventory(folder)
    except InputError:  # no inventory folder, or not a folder
        return None
    if not diags.errors or settings(args).state is not None:
        return inventory
    shown = {display_path(folder / name) for name in SETTINGS_FILES}
    broken = Diagnostics()
    broken.extend(d for d in diags.errors if d.location.path in shown)
    if broken.errors:
        broken.error(
            Location(broken.errors[0].location.path),
            "the state store is named in this file, which has errors: not opening another",
            "fix the file, or name the store with --state or RECONCILE_STATE",
        )
        raise_if_errors(broken)
    return inventory


def output_format(args: argparse.Namespace, allowed=("text", "json")) -> str:
    """The requested output format; one the command cannot write is a usage error (the root
    parser accepts `markdown` for `plan` wherever `--format` is written)."""
    fmt = getattr(args, "format", None) or "text"
    if fmt not in allowed:
        raise UsageError(f"--format {fmt} is not available here; use " + " or ".join(allowed))
    return fmt


def state_url(args: argparse.Namespace, inventory: Inventory | None) -> str:
    return settings(args).state_url(inventory.settings if inventory is not None else None).value


def store(
    args: argparse.Namespace,
    inventory: Inventory | None,
    *,
    create: bool = True,
    read_only: bool = False,
) -> StateStore | None:
    """The configured store; with `create=False` or `read_only`, None when it does not
    exist yet (read-only commands never create, migrate or write a store)."""
    from reconciler.adapters.store.factory import open_store

    return open_store(state_url(args, inventory), create=create, read_only=read_only)


def concurrency(args: argparse.Namespace, inventory: Inventory) -> int:
    return settings(args).concurrency_for(inventory.settings).value


def lock_timeout(args: argparse.Namespace) -> float:
    return settings(args).lock_timeout.value


def vault_secrets(ctx: Context, inventory: Inventory):
    """The resolver of `{vault: NAME}` for runs; vaults are decrypted lazily, when a run that
    needs one starts, so a pass without secrets needs no identity."""
    from reconciler.adapters.vault.secrets import VaultSecrets, load_identities

    return VaultSecrets(inventory.root, load_identities(ctx.settings.identity), ctx.redactor)


def grace(args: argparse.Namespace) -> float:
    """How long running runs may go on after SIGTERM/SIGINT before they are stopped and
    recorded `unknown` (daemon and worker)."""
    return settings(args).grace.value


# The transports whose `prepare` opens connections ahead of the runs (worth previewing a
# plan for, `passes.connect_ahead`).
CONNECTING = frozenset({"ssh"})


def transports(
    secrets=None, settings=None, workdir=None, teams: int = 1, kept: KeptTransports | None = None
) -> Transports:
    """The transports of one pass. `secrets` resolves a machine's `key: {vault: NAME}` when
    its first connection is opened (never earlier, never to disk); `settings` (the
    inventory's) may tune the SSH liveness check (`ssh_keepalive`, `ssh_keepalive_count`).
    With more than one team (`teams`), a local machine whose `user:` is the reconciler's
    own account fails its runs unless the settings allow the shared user (compile refuses
    the cases it can see without the host: no `user:`, `user: root`). With `kept` (the
    daemon's), the SSH transport is borrowed from it: its logins and runners outlive the
    pass, and closing the pass's transports closes none of its connections.

    Each transport is built (and its module imported) when a run first asks for it: the SSH
    one loads paramiko and cryptography (~0.1 s), which a pass over local machines only never
    needs."""

    def resolve_key(machine):
        if machine.key is None or secrets is None:
            return None
        return secrets(machine.team, machine.key)

    def local() -> Transport:
        from reconciler.adapters.transport.local import LocalTransport

        shared = getattr(getattr(settings, "local_machines", None), "allow_shared_user", False)
        return LocalTransport(cwd=workdir, own_user_allowed=teams < 2 or shared)

    def ssh() -> Transport:
        from reconciler.adapters.transport.ssh import KEEPALIVE, KEEPALIVE_COUNT, SshTransport

        keepalive = getattr(settings, "ssh_keepalive", None) or KEEPALIVE
        count = getattr(settings, "ssh_keepalive_count", None) or KEEPALIVE_COUNT
        if kept is not None:
            return kept.ssh(secrets, keepalive, count)
        # The engine settles each end batch: outputs stay on the target until recorded.
        return SshTransport(
            resolve_key=resolve_key,
            keepalive=keepalive,
            keepalive_count=count,
            hold_outputs=True,
        )

    return Transports({"local": local, "ssh": ssh})


class Transports(Mapping):
    """The transports by name, each built by its factory on first lookup (thread-safe:
    `machines list` probes machines from a thread pool). `values()` is the transports built
    so far, which is what the caller closes: one never built has nothing to close, and
    building it only to close it would import what the laziness saves."""

    def __init__(self, factories: dict[str, Callable[[], Transport]]):
        self._factories = factories
        self._built: dict[str, Transport] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Transport:
        built = self._built.get(name)
        if built is not None:
            return built
        factory = self._factories[name]  # KeyError for a name no factory builds
        with self._lock:
            if name not in self._built:
                self._built[name] = factory()
            return self._built[name]

    def __contains__(self, name: object) -> bool:  # without building it
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def values(self) -> list[Transport]:  # type: ignore[override]
        with self._lock:
            return list(self._built.values())
