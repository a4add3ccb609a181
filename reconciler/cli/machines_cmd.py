"""`reconcile machines` and `reconcile machines keyscan HOST[:PORT]` (SPEC §4).

`machines` lists every machine of the inventory with its reachability, when it was last seen,
and its load average and memory, read from /proc over the machine's pooled SSH connection
(local machines: read directly). `keyscan` asks a server for its host keys without
authenticating and prints the `host_key:` line to paste with its SHA256 fingerprint, for a
human to compare with what the machine's console shows: the one place an unknown key is
accepted, and only to be printed.

Wiring: cli/args.py declares the command and its flags (COMMANDS); cli/commands.py opens
the transports and calls `run(args, inventory, transports)` (`inventory`: None for keyscan).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from reconciler.adapters.transport import hostkeys
from reconciler.adapters.transport.base import Transport
from reconciler.adapters.transport.probe import Load, local_probe
from reconciler.cli import views
from reconciler.core.errors import InfrastructureError, ReconcilerError, UsageError
from reconciler.core.model import Inventory, Machine

HISTORY = 5000  # recent runs read from the store to find when a machine was last seen


def run(
    args: argparse.Namespace, inventory: Inventory | None, transports: Mapping[str, Transport]
) -> views.Output:
    """Run `machines` or `machines keyscan`; what they found (cli.main prints it in the
    format asked for)."""
    if args.action == "keyscan":
        if not args.target:
            raise UsageError("machines keyscan needs HOST[:PORT]")
        return _keyscan(args.target, args.timeout)
    if args.target:
        raise UsageError(
            f"machines: unexpected argument {args.target!r} (did you mean "
            f"'machines keyscan {args.target}'?)"
        )
    if inventory is None:
        raise UsageError("machines needs an inventory (--inventory DIR)")
    return _list(args, inventory, transports)


# ---------------------------------------------------------------------------- keyscan


def parse_target(text: str) -> tuple[str, int]:
    """Pure: `host`, `host:port`, `[v6]:port` or a bare IPv6 address as (host, port)."""
    host, port = text, "22"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "22"
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"machines keyscan: {text!r} is not HOST[:PORT]")
    return host, int(port)


def _keyscan(target: str, timeout: float) -> views.Output:
    host, port = parse_target(target)
    keys = hostkeys.scan(host, port, timeout)
    data = {
        "host": host,
        "port": port,
        "keys": [
            {"type": k.type, "key": k.base64, "fingerprint": k.fingerprint, "line": k.line}
            for k in keys
        ],
    }
    # The advice goes to stderr with the text form only (JSON is for scripts).
    advice = (
        "Compare the fingerprint with the machine's own (on its console: ssh-keygen -lf "
        "/etc/ssh/ssh_host_*_key.pub) before pasting the host_key line."
    )
    return views.Output(data, lambda: keyscan_text(host, port, keys), warnings=[advice])


def keyscan_text(host: str, port: int, keys: list[hostkeys.ScannedKey]) -> str:
    """Pure: the preferred key's `host_key:` line under its fingerprint; other keys the
    server offers as comments."""
    where = host if port == 22 else f"{host}:{port}"
    best, *others = keys
    lines = [f"# {where} {best.type} {best.fingerprint}", best.line]
    if others:
        lines.append("# also offered (pin one, or a list of them):")
        lines += [f"#   {k.type} {k.fingerprint}\n#   {k.line}" for k in others]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- machines


def _list(args, inventory: Inventory, transports: Mapping[str, Transport]) -> views.Output:
    machines = sorted(inventory.machines.values(), key=lambda m: m.name)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(machines)))) as pool:
        probes = list(pool.map(lambda m: _probe(m, transports, args.timeout), machines))
    history = _last_runs(args, inventory)
    now = datetime.now(UTC)
    rows = [
        status(m, load, error, now if error is None else history.get(m.name))
        for m, (load, error) in zip(machines, probes, strict=True)
    ]
    return views.Output(rows, lambda: machines_text(rows))


def _probe(
    machine: Machine, transports: Mapping[str, Transport], timeout: float
) -> tuple[Load | None, str | None]:
    """(load, None) when the machine answered, (None, why not) otherwise."""
    try:
        if machine.transport == "local":
            return local_probe(), None
        probe = getattr(transports.get(machine.transport), "probe", None)
        if probe is None:
            return None, f"no '{machine.transport}' transport"
        return probe(machine, timeout), None
    except (ReconcilerError, OSError, ValueError) as exc:
        return None, str(exc)


def _last_runs(args, inventory: Inventory) -> dict[str, datetime]:
    """When each machine last finished a command, from the store (empty without one)."""
    from reconciler.cli import wiring

    try:
        store = wiring.store(args, inventory, create=False, read_only=True)
    except (InfrastructureError, ReconcilerError):
        return {}
    if store is None:
        return {}
    try:
        runs = store.list_runs(None, None, HISTORY)
    except InfrastructureError:
        return {}
    finally:
        store.close()
    seen: dict[str, datetime] = {}
    for r in runs:
        if r.exit_code is not None and r.finished_at is not None:
            seen[r.machine] = max(seen.get(r.machine, r.finished_at), r.finished_at)
    return seen


def status(
    machine: Machine, load: Load | None, error: str | None, last_seen: datetime | None
) -> dict:
    """Pure: one machine's row, as `--format json` prints it."""
    return {
        "name": machine.name,
        "team": machine.team,
        "transport": machine.transport,
        "host": machine.host,
        "port": machine.port if machine.transport == "ssh" else None,
        "reachable": error is None,
        "error": error,
        "last_seen": views.iso(last_seen),
        "load": [load.load1, load.load5, load.load15] if load else None,
        "memory": (
            {"total_kib": load.mem_total_kib, "available_kib": load.mem_available_kib}
            if load
            else None
        ),
    }


def machines_text(rows: list[dict]) -> str:
    """Pure: the machines table, then one line per unreachable machine saying why."""
    table = views.table(
        ("MACHINE", "TEAM", "TRANSPORT", "REACHABLE", "LOAD 1/5/15", "MEM FREE", "LAST SEEN"),
        [
            (
                r["name"],
                r["team"],
                r["transport"],
                "yes" if r["reachable"] else "NO",
                " ".join(f"{x:.2f}" for x in r["load"]) if r["load"] else "-",
                _memory(r["memory"]),
                r["last_seen"] or "-",
            )
            for r in rows
        ],
    )
    problems = [f"{r['name']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join([table, *problems])


def _memory(memory: dict | None) -> str:
    if not memory or not memory["total_kib"] or memory["available_kib"] is None:
        return "-"
    gib = memory["total_kib"] / 1024**2
    return f"{memory['available_kib'] * 100 // memory['total_kib']}% of {gib:.1f} GiB"
