"""A second attack review of issue 11 (vault binding, redaction, library logs, private state,
signed prune anchors, hostile numbers): each test is an attack that once got through the
real command, kept so it stays shut."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.support.audit_history import history_with_a_secret_task
from tests.support.vault_project import PROD_PASSWORD, SECRET, vault_set

BEYOND_64_BITS = "99999999999999999999999"
HUGE = "9" * 5000


# --- hostile numbers: item 14 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["queue", "show", BEYOND_64_BITS],
        ["queue", "show", "-" + BEYOND_64_BITS],
        ["queue", "retry", BEYOND_64_BITS],
        ["queue", "cancel", BEYOND_64_BITS],
        ["queue", "list", "--limit", BEYOND_64_BITS],
    ],
)
def test_a_run_id_or_limit_beyond_64_bits_is_a_usage_error_not_an_internal_one(project, command):
    project.task("t", "command: echo hi\n")
    project.run("--once", "-q", code=0)
    result = project.run(*command, code=2)
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert result.err.count("\n") == 1


@pytest.mark.parametrize("value", [f"{HUGE}s", f'"{HUGE}"', f"1h{HUGE}s"])
def test_a_duration_of_5000_digits_is_a_located_exit_2(project, value):
    path = project.task("slow", f"command: echo hi\ntimeout: {value}\n")
    result = project.run("validate", code=2)
    assert "internal error" not in result.err
    assert result.err.startswith(f"error: {path.relative_to(project.root)}:4:10: timeout ")
    assert result.err.count("\n") == 1


# --- redaction of other encodings: item 10 ----------------------------------------------------

# What a generated password often holds: `/` and `+` (base64 alphabets), a quote, a backslash.
ODD = 'Zq9/x+Tr7"Lm3\\Wp0sKd8Vb'


@pytest.fixture
def odd_secret(vaulted):
    vault_set(vaulted, "ops", "ODD", ODD + "\n", vaulted.alice)
    return vaulted


def _output_of(project, command: str) -> str:
    project.task("print", "env: {ODD: {vault: ODD}}\ncommand: " + json.dumps(command) + "\n")
    data = project.run("--once", "--format", "json", "--identity", str(project.alice)).json()
    run_id = data["runs"][0]["id"]
    return project.run("queue", "show", str(run_id), "--format", "json", code=0).json()["output"]


def PY(code: str) -> str:  # noqa: N802  (reads like a command)
    return "python3 -c " + shlex.quote(code)


@pytest.mark.parametrize(
    "label, command, forbidden",
    [
        (
            "url path (quote keeps /)",
            PY("import os, urllib.parse as u; print(u.quote(os.environ['ODD']))"),
            "Zq9/x%2BTr7%22Lm3%5CWp0sKd8Vb",
        ),
        (
            "url, lower-case escapes",
            PY(
                "import os, urllib.parse as u, re; print(re.sub('%..', lambda m: m[0].lower(), "
                "u.quote(os.environ['ODD'], safe='')))"
            ),
            "Zq9%2fx%2bTr7%22Lm3%5cWp0sKd8Vb",
        ),
        (
            "json string",
            PY("import os, json; print(json.dumps({'password': os.environ['ODD']}))"),
            'Zq9/x+Tr7\\"Lm3\\\\Wp0sKd8Vb',
        ),
        (
            "json with escaped slashes (PHP, some Java)",
            PY("import os, json; print(json.dumps(os.environ['ODD']).replace('/', '\\\\/'))"),
            'Zq9\\/x+Tr7\\"Lm3\\\\Wp0sKd8Vb',
        ),
        (
            "base64 wrapped at 32 columns",
            PY(
                "import os, base64, textwrap; b = base64.b64encode(('user:' + os.environ['ODD']) "
                ".encode() * 3).decode(); print(chr(10).join(textwrap.wrap(b, 32)))"
            ),
            None,
        ),
    ],
)
def test_a_secret_printed_in_another_common_encoding_is_masked(
    odd_secret, label, command, forbidden
):
    output = _output_of(odd_secret, command)
    assert "***" in output, label
    if forbidden is not None:
        assert forbidden not in output, label
    else:  # wrapped base64: no 12 characters of what the secret alone decides
        import base64

        joined = output.replace("\n", "")
        raw = ODD.encode()
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + raw).decode()
            core = encoded[-(-8 * offset // 6) : (8 * (offset + len(raw))) // 6]
            assert not any(core[i : i + 12] in joined for i in range(len(core) - 12)), label


# --- private state on PostgreSQL too: item 12 -------------------------------------------------


@pytest.fixture
def umask_000():
    """The loosest umask: whatever the reconciler creates without an explicit mode is
    writable by every local user."""
    import os

    previous = os.umask(0)
    yield
    os.umask(previous)


def test_with_a_postgresql_store_the_local_state_folder_and_audit_key_are_private(
    project, umask_000
):
    import stat

    from tests.support.postgres import fresh_database

    project.task("t", "command: echo hi\n")
    with fresh_database() as url:
        project.run("--once", "-q", "--state", url, code=0)  # local runs leave their markers
        project.run(
            "audit", "export", "-o", str(project.root / "audit.jsonl"), "--state", url, code=0
        )  # creates the audit signing key beside the store
    folder = project.root / ".reconciler"
    modes = {
        str(p.relative_to(project.root)): stat.S_IMODE(p.stat().st_mode)
        for p in [folder, *folder.rglob("*")]
    }
    assert ".reconciler/audit.key" in modes
    assert modes == {name: 0o700 if (project.root / name).is_dir() else 0o600 for name in modes}


# --- an export's checkpoint is no prune anchor: item 13 ----------------------------------------


def test_an_export_checkpoint_replayed_as_a_prune_anchor_does_not_hide_a_deletion(
    project, tmp_path
):
    """An export signs (count, head) of the log with the same key as a prune's anchor, and
    exports are meant to be kept elsewhere. Whoever can write the store (and read one old
    export) deletes every entry up to that export, anchors the rest there, and appends an
    `audit.anchor` entry quoting the export's signature, chained like any other entry."""
    import sqlite3

    from reconciler.adapters.audit import checkpoint as cp
    from reconciler.adapters.audit.chain import entry_hash

    early, _ = history_with_a_secret_task(project, tmp_path)
    signed, _ = cp.read_checkpoint(early)
    with sqlite3.connect(project.state) as db:
        db.execute("DELETE FROM audit_log WHERE seq <= ?", (signed.count,))
        db.execute(
            "INSERT INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, ?, ?, ?)",
            (signed.count, signed.head, "2026-01-01T00:00:00Z"),
        )
        seq, prev, at = db.execute(
            "SELECT seq, hash, at FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        detail = {"anchor": signed.to_json()}
        db.execute(
            "INSERT INTO audit_log (seq, at, actor, action, detail, prev, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                seq + 1,
                at,
                "reconciler",
                "audit.anchor",
                json.dumps(detail),
                prev,
                entry_hash(prev, seq + 1, at, "reconciler", "audit.anchor", detail),
            ),
        )
        assert not db.execute("SELECT 1 FROM audit_log WHERE detail LIKE '%covert%'").fetchall()
    plain = project.run("audit", "verify", code=1)
    assert "tampered:" in plain.out and "anchor" in plain.out
    project.run("audit", "verify", "--checkpoint", str(early), code=1)


# --- an unnamed vault from git history is not adopted by a routine write: item 8 ----------------


def test_a_routine_vault_set_does_not_adopt_an_unnamed_vault_copied_from_history(two_teams):
    """prod's vault from before vaults named their team still lies in git history. A dev
    admin commits it as vaults/dev.age; the operator, whose identity reads every vault, later
    adds a dev secret with `vault set`: the write must not stamp prod's old secrets as dev's."""
    import subprocess

    from tests.support.integration import require_binary

    p = two_teams
    legacy = p.inventory / "vaults" / "dev.age"
    host_public = (p.root / "reconciler.key").read_text().split("public key: ")[1].split()[0]
    subprocess.run(
        [require_binary("age"), "-a", "-r", host_public, "-o", str(legacy)],
        input=f"DB_PASSWORD: {PROD_PASSWORD}\n",
        text=True,
        check=True,
    )
    before = legacy.read_bytes()
    for command in (["set", "dev", "NEW", "value"], ["unset", "dev", "DB_PASSWORD"]):
        refused = p.run("vault", *command, "--identity", str(p.host_key), code=2)
        assert "names no team" in refused.err and "vault rekey dev" in refused.err
        assert PROD_PASSWORD not in refused.out + refused.err
    assert legacy.read_bytes() == before
    p.run("vault", "get", "dev", "DB_PASSWORD", "--identity", str(p.host_key), code=2)


# --- a secret printed by a task that does not ask for it: item 10 -------------------------------


def test_a_secret_printed_by_a_task_without_vault_references_is_masked(vaulted):
    """One task puts DB_PASSWORD into a config file; at a later pass another task, which
    names no secret, prints that file. The pass never needed the vault, so the redactor had
    never seen the value: it was stored, shown and alerted in the clear."""

    p = vaulted
    conf = p.root / "app.conf"
    p.task(
        "configure",
        "env: {DB_PASSWORD: {vault: DB_PASSWORD}}\n"
        f'command: printf "password=%s\\n" "$DB_PASSWORD" > "{conf}"\n',
    )
    p.run("--once", "-q", "--identity", str(p.alice), code=0)
    p.task("show", f'command: cat "{conf}"; exit 1\nretry: {{count: 0}}\n')
    data = p.run("--once", "--format", "json", "--identity", str(p.alice), code=1).json()
    [run] = [r for r in data["runs"] if r["task"].endswith("show")]
    shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0)
    assert "password=***" in shown.json()["output"]
    assert SECRET not in shown.out
    assert SECRET not in p.state.read_bytes().decode("utf-8", "replace")
