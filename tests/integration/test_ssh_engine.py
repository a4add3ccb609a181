"""A whole pass over real sshd machines: the engine drives SshTransport as the CLI will."""

from __future__ import annotations

from pathlib import Path

from reconciler.adapters.store.factory import open_store
from reconciler.core.compile import compile_inventory
from reconciler.core.model import VaultRef
from reconciler.core.redact import Secret
from reconciler.core.state import RunStatus
from reconciler.inventory.loader import load_inventory
from reconciler.pipeline.engine import Engine


def _inventory(root: Path, daemons: dict, tasks: dict[str, str]) -> Path:
    for folder in ("teams", "machines", "tasks/ops"):
        (root / folder).mkdir(parents=True)
    (root / "teams" / "ops.yaml").write_text("name: ops\n")
    for name, daemon in daemons.items():
        (root / "machines" / f"{name}.yaml").write_text(
            f"name: {name}\nteam: ops\nhost: 127.0.0.1\nport: {daemon.port}\n"
            f"host_key: {daemon.host_key}\nkey: {{vault: SSH_KEY}}\nmax_parallel: 4\n"
        )
    for name, body in tasks.items():
        (root / "tasks" / "ops" / f"{name}.yaml").write_text(f"name: {name}\n{body}")
    return root


def _pass(root: Path, tmp_path: Path, transport, resolve=None):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        engine = Engine(
            store, {"ssh": transport}, concurrency=16, **({"resolve": resolve} if resolve else {})
        )
        return engine.run_pass(compile_inventory(load_inventory(root)[0]), None, 10)
    finally:
        store.close()


def test_a_pass_runs_every_task_over_one_login_per_machine(sshd_factory, transport, tmp_path):
    daemons = {"a": sshd_factory(), "b": sshd_factory()}
    tasks = {
        f"t{i}": f"machines: [a, b]\ncommand: echo t{i} on $RECONCILE_MACHINE\n" for i in range(10)
    }
    tasks["secret"] = (
        "machines: [a]\nenv: {PW: {vault: PW}}\n"
        'command: test "$PW" = "s3cret value" && echo has it\n'
    )
    report = _pass(
        _inventory(tmp_path / "inventory", daemons, tasks),
        tmp_path,
        transport,
        lambda team, ref: Secret("s3cret value") if ref == VaultRef("PW") else None,
    )
    runs = list(report.runs.values())
    assert len(runs) == 21 and {r.status for r in runs} == {RunStatus.SUCCEEDED}, [
        (r.id, r.status.value, r.error) for r in runs if r.status is not RunStatus.SUCCEEDED
    ]
    assert [d.logins() for d in daemons.values()] == [1, 1]


def test_unreachable_runs_are_retried_then_fail_as_unreachable(sshd, transport, tmp_path):
    sshd.stop()
    root = _inventory(
        tmp_path / "inventory",
        {"m1": sshd},
        {"hello": "machines: [m1]\ncommand: echo hello\nretry: {count: 2, delay: 0}\n"},
    )
    [run] = _pass(root, tmp_path, transport).runs.values()
    assert run.status is RunStatus.FAILED and run.attempt == 3
    assert f"127.0.0.1:{sshd.port} is unreachable: Connection refused" in (run.error or "")


def test_a_pass_settles_the_output_of_every_run_it_recorded(sshd_factory, client_key, tmp_path):
    """With the CLI's `hold_outputs`, each wrapper keeps its output until the end batch that
    records the run committed; the engine settles every end batch, so when the pass is over
    nothing waits for an acknowledgement and no output is left on the target."""
    from reconciler.adapters.transport.ssh import SshTransport

    markers = tmp_path / "markers"
    transport = SshTransport(
        lambda machine: Secret(client_key.private),
        markers_dir=str(markers),
        connect_timeout=5,
        hold_outputs=True,
    )
    tasks = {f"t{i}": f"machines: [a]\ncommand: echo out{i}\n" for i in range(12)}
    try:
        report = _pass(
            _inventory(tmp_path / "inventory", {"a": sshd_factory()}, tasks), tmp_path, transport
        )
        assert transport._held == {}  # settled batch by batch, not by close()
    finally:
        transport.close()
    runs = list(report.runs.values())
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED} and len(runs) == 12
    outputs = sorted(markers.glob("*.out"))
    assert len(outputs) == 12 and all(path.stat().st_size == 0 for path in outputs)
