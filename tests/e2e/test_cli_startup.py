"""A command loads only what it uses, and `vault decrypt`/`encrypt` stream (issue 14, item 6).

Nothing here is timed (a busy CI host says little about speed; bench/bench_cli.py measures):
what is checked is which modules a command imports, and a bound on the memory a whole
`reconcile vault` process uses for a file much larger than that bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.alert_receiver import AlertReceiver
from tests.support.cli import clean_environment
from tests.support.vault_project import keygen

# What a pass, a worker or a remote machine needs, and no `--help`, `validate` or `vault`
# command does: each costs tens to hundreds of milliseconds to import.
PASS_ONLY = (
    "reconciler.pipeline.engine",
    "reconciler.cli.commands",
    "reconciler.cli.passes",
    "reconciler.adapters.transport.ssh",
    "fabric",
    "paramiko",
    "psycopg",
    "apprise",
    "rich",
    "git",
)
# What reads an inventory: the age file commands and `--help` need none of it.
INVENTORY = (
    "reconciler.inventory.loader",
    "reconciler.cli.wiring",
    "reconciler.adapters.store.factory",
    "jsonschema",
    "croniter",
    "yaml",
)

# The age modules of the key kinds other than X25519 (age1...), which the X25519 files
# most are never need: SSH keys (with cryptography's OpenSSH serialization) and the
# post-quantum hybrid. They are loaded when a key of their kind is parsed.
OTHER_KEY_KINDS = (
    "reconciler.adapters.vault.age.ssh",
    "reconciler.adapters.vault.age.hybrid",
    "cryptography.hazmat.primitives.serialization.ssh",
)

# Runs `main(words)` in a fresh interpreter, then writes which of `modules` it imported.
PROBE = """
import json, sys
from reconciler.cli.main import main
words, modules, report = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
try:
    code = main(words)
except SystemExit as exc:  # --help
    code = exc.code
with open(report, "w") as out:
    json.dump({"code": code, "loaded": [m for m in modules if m in sys.modules]}, out)
"""


def _imported(project, words: list[str], modules: tuple[str, ...], stdin: bytes = b"") -> dict:
    report = project.root / "probe.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(words), json.dumps(modules), str(report)],
        cwd=project.root,
        env=clean_environment(None),
        input=stdin,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return json.loads(report.read_text())


@pytest.mark.parametrize(
    "words", [["--help"], ["vault", "--help"], ["diff", "--help"], ["queue", "list", "--help"]]
)
def test_help_imports_no_command(project, words):
    found = _imported(project, words, PASS_ONLY + INVENTORY)
    assert found == {"code": 0, "loaded": []}


# What `validate` of a valid inventory needs none of: the stores and transports (wiring
# imports them only to build them), the planner, croniter (only to read a schedule or a
# deny window) and jsonschema (only to word what is wrong with an object).
NOT_FOR_VALIDATE = (
    "reconciler.adapters.store.factory",
    "reconciler.adapters.store.sqlite",
    "reconciler.adapters.transport.local",
    "reconciler.core.plan",
    "croniter",
    "jsonschema",
)


def test_validate_reads_the_inventory_and_imports_nothing_of_a_pass(project):
    project.task("hello", "command: 'true'\n")
    found = _imported(project, ["validate"], PASS_ONLY + NOT_FOR_VALIDATE)
    assert found == {"code": 0, "loaded": []}


def test_validate_imports_croniter_for_a_schedule_and_jsonschema_for_a_mistake(project):
    """Loaded lazily, each is still loaded when it is needed: no check is skipped."""
    project.task("hello", "command: 'true'\nschedule: '*/5 * * * *'\n")
    watched = ("croniter", "jsonschema")
    assert _imported(project, ["validate"], watched) == {"code": 0, "loaded": ["croniter"]}
    project.task("bad", "command: 'true'\npriority: 9\n")
    assert _imported(project, ["validate"], watched) == {
        "code": 2,
        "loaded": ["croniter", "jsonschema"],
    }
    result = project.run("validate", code=2)
    assert "priority must be" in result.err


# What a `--once` pass over local machines, with no schedule, no alert to send and no git
# repository, never needs: each is loaded where it is used (the SSH transport by the first
# run on an ssh machine, prometheus_client and its http.server when metrics are served,
# apprise when an alert is delivered, gitpython inside a repository, croniter to read a
# schedule, the commit-signature checks under git.verify). unittest.mock and asyncio come
# with fabric (through invoke): a pass that needs no SSH loads neither.
NOT_FOR_A_LOCAL_PASS = (
    "reconciler.adapters.transport.ssh",
    "fabric",
    "paramiko",
    "invoke",
    "asyncio",
    "unittest.mock",
    "http.server",
    "prometheus_client",
    "apprise",
    "git",
    "croniter",
    "jsonschema",
    "rich",
    "psycopg",
    "reconciler.adapters.source.signatures",
)


def test_a_pass_over_local_machines_loads_no_ssh_metrics_alerts_git_or_cron(project):
    project.task("hello", f"command: '{project.record('hello')}'\n")
    found = _imported(project, ["--once"], NOT_FOR_A_LOCAL_PASS)
    assert found == {"code": 0, "loaded": []}
    assert project.ledger_lines() == ["hello"]  # the run did run


def test_a_pass_loads_croniter_for_a_schedule_and_apprise_for_an_alert(project):
    """Loaded lazily, each is still loaded when its work comes: the schedule is read and the
    alert of the failed run is delivered."""
    receiver = AlertReceiver()
    try:
        project.write("teams/ops.yaml", f"name: ops\nalerts: [{receiver.url()}]\n")
        project.task("tick", "command: 'true'\nschedule: '*/5 * * * *'\n")
        project.task("boom", "command: 'exit 3'\nretry: {count: 0, failure_action: alert}\n")
        watched = ("croniter", "apprise", "http.server", "prometheus_client")
        found = _imported(project, ["--once"], watched)
        assert found == {"code": 1, "loaded": ["croniter", "apprise"]}
        assert receiver.titles("boom"), receiver.bodies  # --once waits for its deliveries
    finally:
        receiver.close()


def test_vault_file_commands_import_neither_a_pass_nor_the_inventory(project):
    key, public = keygen(project, "k")
    sealed, opened = project.root / "file.age", project.root / "file.txt"
    modules = PASS_ONLY + INVENTORY + OTHER_KEY_KINDS
    assert _imported(project, ["vault", "keygen", "-o", str(project.root / "k2")], modules) == {
        "code": 0,
        "loaded": [],
    }
    encrypt = ["vault", "encrypt", "-r", public, "-o", str(sealed)]
    assert _imported(project, encrypt, modules, b"plain text\n") == {"code": 0, "loaded": []}
    decrypt = ["vault", "decrypt", "-i", str(key), "-o", str(opened), str(sealed)]
    assert _imported(project, decrypt, modules) == {"code": 0, "loaded": []}
    assert opened.read_text() == "plain text\n"


def test_an_ssh_key_loads_the_ssh_module_when_it_is_parsed(project):
    """The modules of the other key kinds are loaded lazily, and then work as before."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    key = project.root / "id_ed25519"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    sealed, opened = project.root / "file.age", project.root / "file.txt"
    encrypt = ["vault", "encrypt", "-r", public, "-o", str(sealed)]
    ssh_module = ("reconciler.adapters.vault.age.ssh",)
    assert _imported(project, encrypt, ssh_module, b"over ssh\n") == {
        "code": 0,
        "loaded": list(ssh_module),
    }
    decrypt = ["vault", "decrypt", "-i", str(key), "-o", str(opened), str(sealed)]
    assert _imported(project, decrypt, ssh_module) == {"code": 0, "loaded": list(ssh_module)}
    assert opened.read_text() == "over ssh\n"


# The bound for a whole `vault decrypt`/`encrypt` process, whatever the file's size;
# the file is several times larger, so a command that read it whole could not stay under it.
MEMORY_BOUND_MIB = 64
LARGE_MIB = 200


# Runs argv[2:] and writes its exit code and peak RSS (KiB) to argv[1]. Linux counts in a
# process's peak RSS the memory of the process that forked it, as it was at the fork (the
# high-water mark survives exec): measured as a child of a pytest worker that has grown
# past the bound, `reconcile vault` seemed to use 66 MiB. Started by this small process
# instead, the command's peak is its own.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def _peak_mib(argv: list[str], cwd: Path, stdin=subprocess.DEVNULL, feed: Path | None = None):
    """Run `argv` to the end; its own peak RSS in MiB (os.wait4 in `LAUNCHER`). With `feed`,
    the file is written to its stdin from a thread (a pipe, not a file)."""
    report = cwd / "peak.txt"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(report), *argv],
        cwd=cwd,
        env=clean_environment(None),
        stdin=subprocess.PIPE if feed else stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    writer = None
    if feed is not None:

        def pour() -> None:
            with feed.open("rb") as source, launcher.stdin:
                while block := source.read(1 << 20):
                    launcher.stdin.write(block)

        writer = threading.Thread(target=pour)
        writer.start()
    err = launcher.stderr.read()
    launcher.wait()
    if writer is not None:
        writer.join()
    code, peak_kib = (int(word) for word in report.read_text().split())
    report.unlink()
    assert code == 0, err.decode()[-2000:]
    return peak_kib / 1024


def test_vault_encrypt_and_decrypt_of_a_large_file_stay_in_bounded_memory(project):
    key, public = keygen(project, "k")
    plain = project.root / "large"
    with plain.open("wb") as handle:  # sparse: no disk written for the plaintext
        handle.truncate(LARGE_MIB << 20)
    sealed, opened = project.root / "large.age", project.root / "large.out"
    cli = [sys.executable, "-m", "reconciler", "vault"]
    peaks = {
        "encrypt file -> file": _peak_mib(
            [*cli, "encrypt", "-r", public, "-o", str(sealed), str(plain)], project.root
        ),
        "decrypt file -> file": _peak_mib(
            [*cli, "decrypt", "-i", str(key), "-o", str(opened), str(sealed)], project.root
        ),
    }
    assert opened.stat().st_size == LARGE_MIB << 20
    opened.unlink()
    # To stdout every chunk is verified before any is written: the file is read twice.
    peaks["decrypt file -> stdout"] = _peak_mib(
        [*cli, "decrypt", "-i", str(key), str(sealed)], project.root
    )
    # From stdin, the ciphertext is kept in a temporary file for the second read.
    peaks["decrypt stdin -> stdout"] = _peak_mib(
        [*cli, "decrypt", "-i", str(key)], project.root, feed=sealed
    )
    peaks["encrypt stdin -> stdout"] = _peak_mib(
        [*cli, "encrypt", "-r", public], project.root, feed=plain
    )
    over = {how: round(mib) for how, mib in peaks.items() if mib >= MEMORY_BOUND_MIB}
    assert over == {}, f"peak RSS (MiB) above {MEMORY_BOUND_MIB} for {LARGE_MIB} MiB: {peaks}"


def test_decrypt_of_a_damaged_file_to_a_file_leaves_the_file_as_it_was(project):
    """Streamed to a file, the plaintext is written beside it and renamed into place only
    once the last chunk verifies: no part of a damaged file's plaintext is left behind."""
    key, public = keygen(project, "k")
    sealed = project.root / "file.age"
    project.run("vault", "encrypt", "-r", public, "-o", str(sealed), code=0, input="line\n" * 40000)
    data = bytearray(sealed.read_bytes())
    data[-100] ^= 0x01  # in the last chunk: the earlier ones decrypt and verify
    sealed.write_bytes(bytes(data))
    new, existing = project.root / "new.txt", project.root / "existing.txt"
    existing.write_text("kept\n")
    for out in (new, existing):
        result = project.run("vault", "decrypt", "-i", str(key), "-o", str(out), str(sealed))
        assert result.code == 2 and "line" not in result.err
    assert not new.exists() and existing.read_text() == "kept\n"
    assert sorted(p.name for p in project.root.iterdir() if p.name.startswith(".")) == []
