"""Second hostile review of issue 19 (CODEOWNERS, editor schemas, metrics, JSON on every exit
code), after the first review's ten defects were fixed: through the CLI, in scratch projects,
with real git, real matchers (PyPI `codeowners`), check-jsonschema, a real daemon's /metrics,
and real signals.

Each defect found is a test marked `xfail(strict=True)` whose reason names it and where its
cause seems to be: it passes while the defect stands and turns red once it is fixed (then drop
the mark). None needs PostgreSQL: an unreachable store is a closed port on 127.0.0.1, and a
store that never answers is a listening socket of the test's own that accepts and says nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import Result, clean_environment, reaped, reconcile
from tests.support.integration import missing
from tests.support.project import Project
from tests.support.review import git, one_document
from tests.support.sshd import free_port
from tests.support.waiting import wait_until


def _daemon(project: Project, *args: str, log: Path) -> subprocess.Popen:
    """The continuous mode in the background, its stderr in `log` (read while it runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--watch-files", *args],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        text=True,
    )


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def _sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


# =============================================================================================
# Item 4: no secret in the JSON (or on stderr) — a store password libpq accepts, shown verbatim
# =============================================================================================


@pytest.mark.parametrize("password", ["Hunt#er2-Secret", "Hunt?er2-Secret"], ids=["hash", "query"])
def test_a_store_password_with_a_hash_or_question_mark_never_shows(project, password):
    url = f"postgresql://admin:{password}@127.0.0.1:1/reconciler"
    result = project.run("--state", url, "status", "--format", "json")
    document = one_document(result)
    assert result.code == 3 and document["exit_code"] == 3, result
    assert "er2-Secret" not in result.out + result.err, result.out


def test_a_short_store_password_does_not_garble_the_error(project):
    result = project.run(
        "--state", "postgresql://admin:on@127.0.0.1:1/reconciler", "status", "--format", "json"
    )
    document = one_document(result)
    assert result.code == 3, result
    message = document["errors"][0]["message"]
    assert "onnection" in message and "***necti" not in message, message


# =============================================================================================
# Item 4: one JSON document on every exit — SIGTERM while a command waits on its store
# =============================================================================================


@pytest.fixture
def silent_store():
    """A PostgreSQL URL whose server accepts the connection and never answers; the listening
    socket (to see when a command has connected)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    accepted: list[socket.socket] = []
    port = listener.getsockname()[1]
    try:
        yield (
            f"postgresql://admin@127.0.0.1:{port}/reconciler?connect_timeout=60",
            listener,
            accepted,
        )
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def _connected(listener: socket.socket, accepted: list) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    accepted.append(conn)
    return True


@pytest.mark.parametrize("args", [("plan",), ("status",), ("--once",)], ids=lambda a: a[0])
def test_sigterm_while_the_store_does_not_answer_is_one_json_document(project, silent_store, args):
    url, listener, accepted = silent_store
    project.task("hello", f"command: {project.record('hello')}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--state", url, *args, "--format", "json"],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped(proc):
        wait_until(lambda: _connected(listener, accepted), timeout=60, message="a connection")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    document = one_document(Result(proc.returncode, out, err))
    assert proc.returncode == 143 and document["exit_code"] == 143, (proc.returncode, err)
    assert document["kind"] == "stopped", document


# =============================================================================================
# Item 1: `reconcile codeowners` — a file name that is not UTF-8
# =============================================================================================


def test_codeowners_with_a_file_name_that_is_not_utf8(tmp_path):
    root = tmp_path / "repo"
    files = {
        "inv/teams/prod.yaml": "name: prod\nmembers: [{name: alice, role: admin}, "
        "{name: bob, role: operator}]\n",
        "inv/machines/p1.yaml": "{name: p1, team: prod, transport: local, user: nobody}\n",
    }
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    # tasks/d\xe9ploy.yaml: Latin-1 bytes, as a file copied from an old machine would be named.
    name = os.fsencode(root / "inv" / "tasks") + b"/d\xe9ploy.yaml"
    os.makedirs(os.fsdecode(os.path.dirname(name)), exist_ok=True)
    with open(name, "wb") as handle:
        handle.write(b"{name: x, team: prod, machines: [p1], command: 'true'}\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "inventory")
    reconcile("--inventory", "inv", "validate", cwd=root, check_code=0)
    written = reconcile("--inventory", "inv", "codeowners", "-o", "CODEOWNERS", cwd=root)
    assert "Traceback" not in written.err and "internal error" not in written.err, written.err
    assert written.code == 0, written
    (root / "CODEOWNERS").read_bytes().decode("utf-8")  # GitHub reads it as UTF-8
    printed = subprocess.run(
        [sys.executable, "-m", "reconciler", "--inventory", "inv", "codeowners"],
        cwd=root,
        env=clean_environment(None),
        capture_output=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    printed.stdout.decode("utf-8")


def test_a_paths_pattern_ending_in_double_star_slash_owns_what_signing_gives(tmp_path):
    try:
        from codeowners import CodeOwners
    except ImportError:
        missing("the PyPI package 'codeowners' is not installed (pip install -e '.[test]')")
    root = tmp_path / "repo"
    files = {
        "inv/reconciler.yaml": 'paths: {"**/": dev}\n',
        "inv/teams/all.yaml": "teams:\n  - {name: prod, members: [{name: alice, role: admin}]}\n"
        "  - {name: dev, members: [{name: carol, role: admin}, {name: dan, role: operator}]}\n",
        "README.md": "# a project\n",
        "scripts/x.sh": "exit 0\n",
    }
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "inventory")
    base = git(root, "rev-parse", "HEAD").strip()
    text = reconcile("--inventory", "inv", "codeowners", cwd=root, check_code=0).out
    for relative in ("README.md", "scripts/x.sh"):
        with open(root / relative, "a") as handle:
            handle.write("# changed\n")
    git(root, "commit", "-q", "-a", "-m", "change")
    diff = reconcile("--inventory", "inv", "diff", base, "HEAD", "--format", "json", cwd=root)
    requires = json.loads(diff.out)["requires"]
    assert "admin or operator of team dev (README.md)" in requires, requires  # signing's answer
    rules = CodeOwners(text)
    owners = {p: {o for _k, o in rules.of(p)} for p in ("README.md", "scripts/x.sh")}
    assert owners == {"README.md": {"@carol", "@dan"}, "scripts/x.sh": {"@carol", "@dan"}}, text


def test_a_paths_pattern_with_a_newline_is_refused_not_written_as_two_rules(tmp_path):
    root = tmp_path / "repo"
    (root / "inv" / "teams").mkdir(parents=True)
    (root / "inv" / "reconciler.yaml").write_text('paths: {"scripts/**\\n/README.md": dev}\n')
    (root / "inv" / "teams" / "all.yaml").write_text(
        "teams:\n  - {name: prod, members: [{name: alice, role: admin}]}\n"
        "  - {name: dev, members: [{name: carol, role: admin}, {name: dan, role: operator}]}\n"
    )
    git(root, "init", "-q", "-b", "main")
    validated = reconcile("--inventory", "inv", "validate", cwd=root)
    if validated.code == 2:
        return  # refused with its location: what a fix may do
    text = reconcile("--inventory", "inv", "codeowners", cwd=root, check_code=0).out
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(len(line.split()) >= 2 for line in rules), text  # every rule has an owner
    assert not any(line.startswith("/README.md ") for line in rules), text


# =============================================================================================
# Item 3: metrics
# =============================================================================================


def test_a_pass_refused_for_an_invalid_inventory_counts_as_an_error(project, tmp_path):
    pytest.importorskip("prometheus_client")
    project.task("hello", f"command: {project.record('hello')}\n")
    port, log = free_port(), tmp_path / "daemon.log"
    with reaped(_daemon(project, "-q", "--metrics-addr", f"127.0.0.1:{port}", log=log)) as proc:
        wait_until(
            lambda: _sample(
                _scrape(port) or "", "reconciler_last_successful_pass_timestamp_seconds", {}
            ),
            timeout=60,
            message="a first pass",
        )
        project.task("hello", f"command: {project.record('hello')}\npriority: 9\n")
        wait_until(
            lambda: "inventory is invalid" in log.read_text(), timeout=60, message="a refusal"
        )
        errors = _sample(_scrape(port) or "", "reconciler_passes_total", {"result": "error"})
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert errors is not None and errors >= 1, log.read_text()


def test_an_empty_metrics_addr_is_refused(project):
    project.task("hello", f"command: {project.record('hello')}\n")
    result = project.run("--metrics-addr", "", "--once", "--format", "json")
    assert result.code == 2 and "--metrics-addr" in result.err, result
    assert project.ledger_lines() == []


def test_a_metrics_port_of_zero_is_refused_or_said(project, tmp_path):
    project.task("hello", f"command: {project.record('hello')}\n")
    log = tmp_path / "daemon.log"
    with reaped(_daemon(project, "--metrics-addr", "127.0.0.1:0", log=log)) as proc:
        wait_until(
            lambda: proc.poll() is not None or project.ledger_lines(),
            timeout=60,
            message="a pass",
        )
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 2 or re.search(r"127\.0\.0\.1:[1-9][0-9]*", text), text


# =============================================================================================
# Item 2: editor schemas against validate (the newest fields)
# =============================================================================================

_MACHINE = "name: box\nteam: ops\ntransport: local\nuser: nobody\n"


def _verdicts(tmp_path: Path, kind: str, samples: dict[str, str]) -> dict[str, tuple[int, bool]]:
    """Each sample task body (or machine file) -> (validate's exit, whether the schema
    accepts the file)."""
    from tests.support.schemas import SHIPPED, check_jsonschema

    found = {}
    for name, text in samples.items():
        root = tmp_path / name
        (root / "teams").mkdir(parents=True)
        (root / "teams" / "ops.yaml").write_text("name: ops\n")
        (root / "machines").mkdir()
        (root / "machines" / "box.yaml").write_text(_MACHINE)
        target = root / ("tasks/ops/t.yaml" if kind == "task" else "machines/box.yaml")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        validated = reconcile("--inventory", str(root), "validate", cwd=tmp_path)
        schema = check_jsonschema("--schemafile", str(SHIPPED / f"{kind}.schema.json"), str(target))
        found[name] = (validated.code, schema.returncode == 0)
    return found


def _task(extra: str) -> str:
    return "name: t\nmachines: [box]\ncommand: 'true'\n" + extra


def test_the_until_schema_agrees_with_validate(tmp_path):
    # The documented form (the schema's pattern) is the one both accept: the forms only
    # Python's fromisoformat read are refused by validate too, as are impossible dates.
    valid = {
        "control": "2030-01-01T00:00Z",
        "seconds-fraction-offset": "2028-02-29 23:59:59.5-0130",
    }
    invalid = {
        "basic": "20300101T0000Z",
        "week": "2030-W01-1T00:00Z",
        "hour-only": "2030-01-01T00Z",
        "decimal-comma": "2030-01-01T00:00:00,5Z",
        "offset-seconds": "2030-01-01T00:00:00+01:00:30",
        "leading-space": " 2030-01-01T00:00Z",
    }
    invalid |= {"february-30": "2030-02-30T00:00Z", "april-31": "2030-04-31T00:00Z"}
    invalid |= {"february-29-not-leap": "2100-02-29T00:00Z", "year-0": "0000-01-01T00:00Z"}
    samples = {n: _task(f"suspend: {{reason: r, until: '{u}'}}\n") for n, u in valid.items()}
    samples |= {n: _task(f"suspend: {{reason: r, until: '{u}'}}\n") for n, u in invalid.items()}
    verdicts = _verdicts(tmp_path, "task", samples)
    wrong = {
        name: verdict
        for name, verdict in verdicts.items()
        if (verdict[0] == 0) != verdict[1] or (name in invalid) != (verdict[0] == 2)
    }
    assert wrong == {}, "(validate's exit, whether the schema accepts it)"


def test_the_timezone_schema_refuses_posixrules_as_validate_does(tmp_path):
    verdicts = _verdicts(
        tmp_path,
        "task",
        {
            "control": _task("schedule: '0 * * * *'\ntimezone: Europe/Berlin\n"),
            "posixrules": _task("schedule: '0 * * * *'\ntimezone: posixrules\n"),
        },
    )
    assert verdicts == {"control": (0, True), "posixrules": (2, False)}


@pytest.mark.parametrize("reason", ['"  "', '"a\\tb"', '"\\u00a0"'], ids=["blank", "tab", "nbsp"])
def test_a_bad_freeze_reason_gets_a_readable_error(project, reason):
    project.write("machines/box.yaml", _MACHINE + f"suspend: {{reason: {reason}}}\n")
    result = project.run("validate", "--format", "json")
    document = one_document(result)
    assert result.code == 2, result
    message = document["errors"][0]["message"]
    assert "does not match" not in message and "\\x00" not in message, message


# =============================================================================================
# Item 4: a second signal to --once --format json loses the runs it stopped
# =============================================================================================


def test_a_second_sigint_still_says_which_runs_it_stopped(project, tmp_path):
    started = tmp_path / "started"
    project.task("slow", f"command: 'touch {started}; sleep 60'\n")
    log = tmp_path / "pass.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--once", "--format", "json"],
        cwd=project.root,
        env=clean_environment(None),
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    with reaped(proc):
        wait_until(started.exists, timeout=60, message="the run to start")
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: "starting nothing more" in log.read_text(), message="the first stop")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    document = one_document(Result(proc.returncode, out, log.read_text()))
    assert proc.returncode == 130, (proc.returncode, document)
    assert "ops/slow" in json.dumps(document), document
