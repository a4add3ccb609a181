"""`reconcile machines` and `machines keyscan` against real sshd (called as the CLI wires them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport import hostkeys
from reconciler.adapters.transport.local import LocalTransport
from reconciler.adapters.transport.ssh import SshTransport
from reconciler.cli import machines_cmd
from reconciler.cli.args import build_parser
from reconciler.cli.main import present
from reconciler.core.compile import compile_inventory
from reconciler.core.errors import UsageError
from reconciler.core.redact import Secret
from reconciler.inventory.loader import load_inventory
from reconciler.pipeline.engine import Engine


def _args(*argv: str, state: str | None = None, inventory: Path | None = None):
    args = build_parser().parse_args(["machines", *argv])
    args.state, args.inventory = state, str(inventory) if inventory else None
    return args


def _run(args, inventory, transports) -> int:
    """`machines_cmd.run` printed as cli.main prints it; its exit code."""
    return present(machines_cmd.run(args, inventory, transports), args)


@pytest.fixture
def transports(client_key, tmp_path):
    ssh = SshTransport(
        lambda machine: Secret(client_key.private),
        markers_dir=str(tmp_path / "markers"),
        connect_timeout=3,
    )
    yield {"ssh": ssh, "local": LocalTransport(tmp_path / "local-markers")}
    ssh.close()


def _inventory(root: Path, daemons: dict) -> Path:
    for folder in ("teams", "machines", "tasks/ops"):
        (root / folder).mkdir(parents=True)
    (root / "teams" / "ops.yaml").write_text("name: ops\n")
    (root / "machines" / "here.yaml").write_text("name: here\nteam: ops\ntransport: local\n")
    for name, daemon in daemons.items():
        (root / "machines" / f"{name}.yaml").write_text(
            f"name: {name}\nteam: ops\nhost: 127.0.0.1\nport: {daemon.port}\n"
            f"host_key: {daemon.host_key}\nkey: {{vault: SSH_KEY}}\n"
        )
    (root / "tasks" / "ops" / "hello.yaml").write_text(
        f"name: hello\nmachines: [{', '.join(daemons)}]\ncommand: echo hello\n"
    )
    return root


def test_machines_lists_reachability_load_and_last_seen(sshd_factory, transports, tmp_path, capsys):
    up, down = sshd_factory(), sshd_factory()
    root = _inventory(tmp_path / "inventory", {"up": up, "down": down})
    inventory = load_inventory(root)[0]
    state = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(state)
    try:  # one pass first, so the store knows when `down` was last seen
        Engine(store, transports).run_pass(compile_inventory(inventory), None, 10)
    finally:
        store.close()
    down.stop()
    assert _run(_args("--format", "json", state=state, inventory=root), inventory, transports) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert [rows[n]["reachable"] for n in ("down", "here", "up")] == [False, True, True]
    assert "unreachable" in rows["down"]["error"] and rows["down"]["last_seen"]
    assert rows["down"]["load"] is None
    for name in ("here", "up"):
        assert len(rows[name]["load"]) == 3 and rows[name]["memory"]["total_kib"] > 0
    assert up.logins() == 1  # the probe used the connection of the pass

    _run(_args(state=state, inventory=root), inventory, transports)
    text = capsys.readouterr().out
    assert "REACHABLE" in text and "down: machine 'down'" in text


def test_machines_without_a_store_still_lists(sshd, transports, tmp_path, capsys):
    root = _inventory(tmp_path / "inventory", {"up": sshd})
    args = _args("--format", "json", state=f"sqlite:///{tmp_path / 'none.db'}", inventory=root)
    _run(args, load_inventory(root)[0], transports)
    rows = json.loads(capsys.readouterr().out)
    assert [r["reachable"] for r in rows] == [True, True]
    assert not (tmp_path / "none.db").exists()


def test_keyscan_prints_the_line_to_paste_and_its_fingerprint(sshd_factory, capsys):
    daemon = sshd_factory(host_key_types=("ed25519", "ecdsa"))
    assert _run(_args("keyscan", f"127.0.0.1:{daemon.port}"), None, {}) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    fingerprint = hostkeys.parse_host_key(daemon.host_key).fingerprint
    assert lines[0] == f"# 127.0.0.1:{daemon.port} ssh-ed25519 {fingerprint}"
    assert lines[1] == f"host_key: {daemon.host_key}"
    assert f"#   host_key: {daemon.host_keys['ecdsa'].public}" in lines
    assert "Compare the fingerprint" in captured.err
    _run(_args("keyscan", f"127.0.0.1:{daemon.port}", "--format", "json"), None, {})
    data = json.loads(capsys.readouterr().out)
    assert data["keys"][0]["fingerprint"] == fingerprint and data["port"] == daemon.port
    assert "Accepted" not in daemon.log_text() and "Failed" not in daemon.log_text()


def test_keyscan_targets_are_parsed_like_ssh():
    assert machines_cmd.parse_target("example.org") == ("example.org", 22)
    assert machines_cmd.parse_target("10.0.0.5:2222") == ("10.0.0.5", 2222)
    assert machines_cmd.parse_target("[::1]:2200") == ("::1", 2200)
    assert machines_cmd.parse_target("fe80::1") == ("fe80::1", 22)
    for bad in ("host:", "host:0", "host:99999", "[::1]:x", ""):
        with pytest.raises(UsageError):
            machines_cmd.parse_target(bad)
    with pytest.raises(UsageError, match="needs HOST"):
        _run(_args("keyscan"), None, {})
