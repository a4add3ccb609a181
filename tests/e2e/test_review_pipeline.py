"""Review of the redesigned run pipeline (issue 13): group commit, the PostgreSQL audit queue
and its sealer, incremental dispatch. Each test breaks it the way a hostile user or a tired
operator would, with real processes, a real PostgreSQL server (a fresh database per test),
real SQLite files, real sshd and the local transport.

A test marked xfail(strict) shows a defect its reason names: it passes once the defect is
fixed (and then fails as an unexpected pass until the mark goes). The others are guarantees
that held and that the suite did not cover in this form (batches of several runs at each
failpoint, a full disk under group commit, a killed pass over SSH with a whole batch out).
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import psycopg
import pytest

from reconciler.adapters.store.factory import open_store
from reconciler.adapters.transport.local import LocalTransport
from reconciler.pipeline.engine import Engine
from tests.support.cli import clean_environment, reaped, spawn
from tests.support.in_process import InProcessProject
from tests.support.pg_cluster import Cluster
from tests.support.pg_roles import least_privilege
from tests.support.planning import record_plan
from tests.support.project import Project
from tests.support.ssh_project import ssh_project
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until


def _entries(url, action: str) -> list[dict]:
    """The details of the sealed audit entries of `action`."""
    query = "SELECT detail FROM audit_log WHERE action = %s ORDER BY seq"
    if not str(url).startswith("postgresql://"):
        query = query.replace("%s", "?")
    return [json.loads(detail) for (detail,) in store_rows(url, query, action)]


# --- incremental dispatch ---------------------------------------------------------------------


def test_a_deny_window_that_opens_mid_drain_holds_the_runs_still_waiting(tmp_path):
    """Incremental dispatch: a round where only capacity changed takes the next runs of the
    last decision (`dispatch.fill`). A deny window that opens after that decision is never
    looked at: the runs waiting for capacity started inside it (fixed in 62acba8: a fill
    round checks each run it would start against the deny windows).

    In-process because the CLI has no clock to move and deny windows are cron (minute)
    granular: waiting for a real minute boundary would cost up to a minute. The store
    (SQLite) and the transport (local, real commands) are the real ones."""
    p = InProcessProject(tmp_path)
    ledger = tmp_path / "ledger"
    # Priority 2 is held by a deny window; the window opens at 08:00.
    p.write("teams/ops.yaml", "name: ops\nwindows:\n  - {deny: '0 8 * * *', duration: 1h}\n")
    for i in range(4):
        p.task(f"t{i}", f'echo t{i} >> "{ledger}"', "priority: 2\n")
    before = datetime(2026, 1, 5, 7, 59, 0, tzinfo=UTC)  # a Monday
    inside = datetime(2026, 1, 5, 8, 0, 30, tzinfo=UTC)

    def clock() -> datetime:
        # The window opens once the first run has ended (concurrency 1: nothing else runs).
        return inside if ledger.exists() and ledger.read_text().split() else before

    store = open_store(p.url)
    try:
        engine = Engine(
            store, {"local": LocalTransport(tmp_path / "markers")}, concurrency=1, clock=clock
        )
        report = engine.run_pass(p.desired(), "c0ffee", 10)
    finally:
        store.close()
    started = p.sql("SELECT task, started_at FROM runs WHERE started_at IS NOT NULL ORDER BY id")
    inside_window = [task for task, at in started if at >= inside.isoformat()]
    assert inside_window == [], f"runs of priority 2 started inside the deny window: {started}"
    assert ledger.read_text().split() == ["t0"]
    assert report.counts() == {"pending": 3, "succeeded": 1}


# --- the PostgreSQL audit queue ----------------------------------------------------------------


def test_a_worker_role_cannot_rewrite_a_queued_audit_entry_unseen(tmp_path, postgres_url):
    """docs/postgresql-roles.md: the worker role 'may delete queued entries (sealing moves
    them) but not rewrite them'. DELETE then INSERT is a rewrite: a compromised worker host
    replaces the `run.dispatched` entry a pass killed with -9 left queued (unsealed until the
    next pass: no half-second bound after a crash) with one naming another machine and
    actor; the next seal linked the forgery, `audit verify` called the log intact and `audit
    export` signed a checkpoint over it. Fixed in e5fe4f8 (a queued entry leaves the queue
    only once it is in audit_log; b8d944f: a row-level security policy): the DELETE
    removes nothing and the genuine entry is sealed."""
    p = Project(tmp_path)
    p.task("deploy", f"command: {p.record('deploy')}\n")
    with least_privilege(postgres_url) as (worker_url, reader_url):
        crash = {"RECONCILER_FAILPOINTS": "after_dispatch=crash"}
        assert p.run("--once", "--state", worker_url, "-q", env=crash).code == -signal.SIGKILL
        report = p.run("audit", "verify", "--state", reader_url, "--format", "json", code=0)
        assert report.json()["unsealed"] > 0  # the killed pass's batches wait for a sealer

        with contextlib.suppress(psycopg.Error):  # refused outright: as good as kept
            with psycopg.connect(worker_url) as conn:  # the compromised worker host
                rows = conn.execute(
                    "SELECT at, actor, action, detail FROM audit_queue "
                    "WHERE action = 'run.dispatched'"
                ).fetchall()
                assert rows
                conn.execute("DELETE FROM audit_queue WHERE action = 'run.dispatched'")
                for at, _, action, detail in rows:
                    forged = {**json.loads(detail), "machine": "elsewhere"}
                    canonical = json.dumps(forged, sort_keys=True, separators=(",", ":"))
                    conn.execute(
                        "INSERT INTO audit_queue (at, actor, action, detail) "
                        "VALUES (%s, %s, %s, %s)",
                        (at, "mallory", action, canonical),
                    )

        p.run("audit", "export", "--state", worker_url, "-o", str(tmp_path / "a.jsonl"))
        verdict = p.run("audit", "verify", "--state", reader_url, "--format", "json")
        assert verdict.code == 0, verdict.out
        # A worker may append entries of its own (it may append to the log), but the
        # genuine entry must survive: a rewrite is a forgery in its place.
        genuine = [e for e in _entries(postgres_url, "run.dispatched") if e["machine"] == "box"]
        assert genuine, "the queued run.dispatched entry was replaced unseen"


def test_a_worker_role_cannot_poison_the_audit_chain_through_the_queue(tmp_path, postgres_url):
    """The sealer links queued texts as they are ('not re-parsed'), and verify re-serialises
    each entry's detail canonically. An entry the worker role may INSERT into audit_queue
    with valid JSON that is not in canonical form (a space after a colon) is sealed into the
    chain, and from then on `audit verify` reports entry N 'edited' forever and `audit
    export` refuses every checkpoint: a role that may not touch audit_log breaks it for
    good. Fixed in e5fe4f8: such a detail is sealed as {"unreadable": text}."""
    p = Project(tmp_path)
    p.task("a", f"command: {p.record('a')}\n")
    with least_privilege(postgres_url) as (worker_url, reader_url):
        p.run("--once", "--state", worker_url, "-q", code=0)
        with psycopg.connect(worker_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO audit_queue (at, actor, action, detail) VALUES (%s, %s, %s, %s)",
                ("2026-01-01T00:00:00.000000Z", "w", "run.claimed", '{"run": 1}'),
            )
        p.task("b", f"command: {p.record('b')}\n")
        p.run("--once", "--state", worker_url, "-q", code=0)  # its seal links the queue
        assert p.ledger_lines() == ["a", "b"]
        verdict = p.run("audit", "verify", "--state", reader_url)
    assert verdict.code == 0, verdict.out


def test_a_reader_role_exports_the_audit_log_as_documented(tmp_path, postgres_url):
    """docs/postgresql-roles.md gives `audit verify`/`export` to reconciler_reader (SELECT
    only), and the commit that made export seal first (ca5f02f) says a reader role can run
    verify. `audit export` as the reader exits 3: 'permission denied for table audit_log'
    (it appended its own `audit.export` entry first). Fixed in e5fe4f8: a read-only role
    exports the sealed entries without recording the export."""
    p = Project(tmp_path)
    p.task("a", f"command: {p.record('a')}\n")
    with least_privilege(postgres_url) as (worker_url, reader_url):
        p.run("--once", "--state", worker_url, "-q", code=0)
        out = tmp_path / "audit.jsonl"
        result = p.run("audit", "export", "--state", reader_url, "-o", str(out))
    assert result.code == 0, result.err
    assert "Traceback" not in result.err


# --- kill -9 at every failpoint with a whole batch out (PostgreSQL) -----------------------------


@pytest.mark.parametrize(
    "point, status, ran",
    [
        ("after_claim", "succeeded", {1}),  # claims not committed: run once elsewhere
        ("after_dispatch", "unknown", {0}),  # marked dispatched: never run again
        ("after_spawn", "unknown", {0, 1}),  # a gate may have opened: never twice
        ("before_result", "unknown", {0, 1}),  # ran (or killed with it), result lost: once at most
    ],
)
def test_kill_9_with_a_batch_out_loses_and_doubles_nothing_on_postgresql(
    tmp_path, postgres_url, point, status, ran
):
    """A `--once` claims six runs in one batch and is killed at `point`; a worker sweeps
    (leases aged with SQL) and finishes the queue. Each run ends once, none runs twice, and
    the chain holds a `run.dispatched` entry for every command that ran, with nothing left
    unsealed once the worker stopped. (test_workers covers one run per failpoint.)"""
    p = Project(tmp_path)
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 8\n")
    for i in range(6):
        p.task(f"t{i}", f"command: {p.record(f't{i}')}\n")
    crash = {"RECONCILER_FAILPOINTS": f"{point}=crash"}
    first = p.run("--once", "--state", postgres_url, "-q", "--concurrency", "8", env=crash)
    assert first.code == -signal.SIGKILL, first.err
    p.run("audit", "verify", "--state", postgres_url, code=0)  # queued entries are no problem
    store_rows(
        postgres_url,
        "UPDATE runs SET heartbeat_at = now() - interval '1 hour', "
        "started_at = started_at - interval '1 hour' WHERE status = 'running'",
    )
    worker = spawn("worker", "--state", postgres_url, "-q", cwd=p.root)
    try:
        wait_until(
            lambda: (
                store_rows(
                    postgres_url, "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')"
                )
                == [(0,)]
            ),
            timeout=45,
            message="every run to end",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0 and "Traceback" not in err, err
    rows = store_rows(postgres_url, "SELECT id, task, status FROM runs ORDER BY id")
    assert len(rows) == 6 and {s for _, _, s in rows} == {status}, rows
    counts = Counter(p.ledger_lines())
    assert {counts.get(f"t{i}", 0) for i in range(6)} <= ran, counts
    report = p.run("audit", "verify", "--state", postgres_url, "--format", "json", code=0).json()
    assert report["unsealed"] == 0
    dispatched = {e["task"] for e in _entries(postgres_url, "run.dispatched")}
    assert {f"ops/{t}" for t in counts} <= dispatched  # nothing ran without its entry


# --- a full disk under group commit (SQLite) ------------------------------------------------------


def test_a_full_disk_mid_pass_exits_3_and_dispatches_nothing_without_its_entry(project):
    """The state file cannot grow (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full
    disk) after the plan is recorded and a few batches went through: the pass stops with
    exit 3 and a one-line error, every run marked dispatched has its `run.dispatched` entry,
    nothing ran without one, the chain verifies, and the next pass (disk space back) runs
    each remaining run once and never runs a lost one again."""
    p = project
    p.task("seed", 'command: "true"\n')
    p.run("--once", "-q", code=0)
    for i in range(40):
        # Output makes each end batch grow the file: the limit is met within the pass.
        p.task(f"t{i}", f"command: {p.record(f't{i}')}; head -c 3000 /dev/zero | tr '\\\\0' x\n")
    limit = max(f.stat().st_size for f in p.state.parent.iterdir() if f.is_file()) + 40_000

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(
        [sys.executable, "-m", "reconciler", "--once", "--concurrency", "4", "-q"],
        cwd=p.root,
        env=clean_environment({}),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_disk,
    )
    assert full.returncode == 3, (full.stdout, full.stderr)
    assert "Traceback" not in full.stderr and "error: cannot write state store" in full.stderr
    rows = store_rows(
        p.state, "SELECT id, task, status, dispatched FROM runs WHERE task != ?", "ops/seed"
    )
    assert len(rows) == 40 and any(s == "pending" for _, _, s, _ in rows), rows  # it stopped
    entries = {e["run"] for e in _entries(p.state, "run.dispatched")}
    assert {i for i, _, _, d in rows if d} <= entries
    ran = set(p.ledger_lines())
    assert ran and {f"ops/{t}" for t in ran} <= {t for i, t, _, _ in rows if i in entries}
    p.run("audit", "verify", code=0)

    first_ran = set(p.ledger_lines())
    p.run("--once", "-q")  # lost runs end unknown (exit 1): the local transport keeps nothing
    ledger = Counter(p.ledger_lines())
    assert set(ledger.values()) == {1} and len(ledger) == 40, ledger  # each ran, once
    final = dict(store_rows(p.state, "SELECT task, status FROM runs WHERE task != ?", "ops/seed"))
    assert set(final.values()) <= {"succeeded", "unknown"}, final
    assert {t for t, s in final.items() if s == "unknown"} <= {f"ops/{t}" for t in first_ran}
    p.run("audit", "verify", code=0)


# --- crash adoption from the remote markers of a whole batch (SSH) ------------------------------


def _killed_before_recording_over_ssh(tmp_path, sshd, client_key):
    """Four runs dispatched in one batch over real sshd, exiting 0, 1, 0, 1 after printing
    `outN`; the pass is killed with -9 at its first end batch (before_result), then the next
    pass runs. Returns the project and the second pass's JSON report.

    Each command waits (up to 30 s) until all four are in the ledger: under load the first
    could end, and the pass die, before a later run's wrapper had its input; that run never
    started, and was rightly left `unknown` with nothing kept (the flake of this test)."""
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    barrier = (
        f'i=0; while [ "$(wc -l < "{p.ledger}")" -lt 4 ] && [ $i -lt 3000 ]; '
        "do sleep 0.01; i=$((i+1)); done"
    )
    for i in range(4):
        p.task(
            f"t{i}",
            f"command: 'echo t{i} >> \"{p.ledger}\"; {barrier}; echo out{i}; exit {i % 2}'\n",
        )
    crash = {"RECONCILER_FAILPOINTS": "before_result=crash"}
    killed = p.run("--once", "--identity", str(p.key), "-q", env=crash)
    assert killed.code == -signal.SIGKILL, killed.err
    return p, p.run("--once", "--identity", str(p.key), "--format", "json", code=1).json()


@pytest.mark.integration
def test_a_pass_killed_before_recording_a_batch_over_ssh_adopts_every_exit_code(
    tmp_path, sshd, client_key
):
    """The next pass adopts each real exit code from the two marker files the wrapper keeps
    per run, runs nothing again, and the third pass has nothing to do."""
    p, second = _killed_before_recording_over_ssh(tmp_path, sshd, client_key)
    assert sorted((r["task"], r["status"], r["exit_code"]) for r in second["runs"]) == [
        ("ops/t0", "succeeded", 0),
        ("ops/t1", "failed", 1),
        ("ops/t2", "succeeded", 0),
        ("ops/t3", "failed", 1),
    ]
    third = p.run("--once", "--identity", str(p.key), "--format", "json", code=0).json()
    assert third["runs"] == []
    assert sorted(p.ledger_lines()) == ["t0", "t1", "t2", "t3"]


@pytest.mark.integration
def test_a_pass_killed_before_recording_a_batch_over_ssh_adopts_every_output(
    tmp_path, sshd, client_key
):
    """The runs whose output the killed pass had read (at least the first to end: the
    failpoint is at the first end batch) were adopted with output '' instead of `outN`: the
    SSH transport acknowledged an output (the wrapper then emptied <id>.out) as soon as it
    had read it. It acknowledges only once the end batch committed (Transport.settle)."""
    p, second = _killed_before_recording_over_ssh(tmp_path, sshd, client_key)
    outputs = {
        run["task"]: p.run("queue", "show", str(run["id"]), "--format", "json").json()["output"]
        for run in second["runs"]
    }
    assert outputs == {f"ops/t{i}": f"out{i}\n" for i in range(4)}


@pytest.mark.integration
def test_a_pass_killed_after_reading_the_markers_before_adopting_leaves_the_output(
    tmp_path, sshd, client_key
):
    """A pass killed after it read a dead run's markers and before it recorded the adoption:
    reading them removed the output file, so the next pass adopted the exit code with output
    ''. The output now stays until the adoption is recorded (Transport.settle)."""
    p = ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key)
    p.task("t0", f'command: echo t0 >> "{p.ledger}"; echo out0; exit 1\n')
    crash = {"RECONCILER_FAILPOINTS": "before_result=crash"}
    killed = p.run("--once", "--identity", str(p.key), "-q", env=crash)
    assert killed.code == -signal.SIGKILL, killed.err
    crash = {"RECONCILER_FAILPOINTS": "after_reap=crash"}
    killed = p.run("--once", "--identity", str(p.key), "-q", env=crash)
    assert killed.code == -signal.SIGKILL, killed.err
    third = p.run("--once", "--identity", str(p.key), "--format", "json", code=1).json()
    [run] = third["runs"]
    assert (run["task"], run["status"], run["exit_code"]) == ("ops/t0", "failed", 1)
    shown = p.run("queue", "show", str(run["id"]), "--format", "json").json()
    assert shown["output"] == "out0\n"
    assert p.ledger_lines() == ["t0"]
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    assert not (markers / f"{run['id']}.out").exists()  # gone once the adoption was recorded


# --- the plan's audit entry rides on the first claim batch ----------------------------------------


def test_a_pass_killed_while_its_runs_wait_leaves_its_plan_in_the_audit_log(project):
    """Pass A runs a long command on a machine with max_parallel 1; pass B plans a new task
    (its run is durable in the queue) and waits for the machine; B is killed with -9. The
    run is later adopted and executed, but nothing in the audit log said B enqueued it,
    at which commit, or that B ever planned anything (fixed in 62acba8: the plan's entry
    is written as soon as the plan is recorded)."""
    p = project
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 1\n")
    go = p.root / "go"
    p.task("long", f'command: {p.record("long")}; while [ ! -f "{go}" ]; do sleep 0.02; done\n')
    first = spawn("--once", "-q", cwd=p.root)
    try:
        wait_until(lambda: "long" in p.ledger_lines(), timeout=30, message="the long run")
        p.task("urgent", f"command: {p.record('urgent')}\n")
        second = spawn("--once", "-q", cwd=p.root)
        wait_until(
            lambda: len(store_rows(p.state, "SELECT id FROM runs")) == 2,
            timeout=30,
            message="the second pass to enqueue its run",
        )
        second.kill()
        second.communicate(timeout=30)
        go.touch()
        assert first.wait(timeout=60) == 0
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
        first.communicate()
    p.run("--once", "-q", code=0)  # adopts the dead pass's run and runs it
    assert p.ledger_lines() == ["long", "urgent"]
    enqueued = sum(e["enqueued"] for e in _entries(p.state, "plan.recorded"))
    assert enqueued == 2, "the audit log records fewer enqueued runs than the queue holds"


# --- workers and a restarted server (PostgreSQL) ----------------------------------------------


@pytest.mark.integration
def test_four_workers_one_killed_at_its_first_end_batch_run_nothing_twice(tmp_path, postgres_url):
    """200 runs, four workers; one dies with -9 at its first end batch (before_result), its
    runs' leases are aged with SQL. The three others finish the queue: no command runs twice,
    the dead worker's runs end unknown (never re-run), every command that ran has its
    `run.dispatched` entry and nothing stays unsealed. (The 4 x 2,000 exactly-once run is
    test_workers' test_four_workers_and_a_pass_execute_2000_runs_exactly_once.)"""
    p = Project(tmp_path)
    p.write(
        "machines/box.yaml",
        "machines:\n"
        + "".join(
            f"  - {{name: m{i}, team: ops, transport: local, max_parallel: 4}}\n" for i in range(8)
        ),
    )
    record = f'flock "{tmp_path}/lock" sh -c \'echo $RECONCILE_RUN_ID >> "{p.ledger}"\''
    p.write(
        "tasks/ops/many.yaml",
        "tasks:\n"
        + "".join(
            f"  - name: t{i}\n    selector: {{}}\n    command: {record}\n" for i in range(25)
        ),
    )
    assert len(record_plan(p.inventory, postgres_url)) == 200
    crash = {"RECONCILER_FAILPOINTS": "before_result=crash"}
    victim = spawn(
        "worker", "--state", postgres_url, "-q", "--concurrency", "4", cwd=p.root, env=crash
    )
    workers = [
        spawn("worker", "--state", postgres_url, "-q", "--concurrency", "4", cwd=p.root)
        for _ in range(3)
    ]
    try:
        assert victim.wait(timeout=60) == -signal.SIGKILL
        store_rows(
            postgres_url,
            "UPDATE runs SET heartbeat_at = now() - interval '1 hour', "
            "started_at = started_at - interval '1 hour' "
            "WHERE status = 'running' AND owner LIKE %s",
            f"%:{victim.pid}:%",
        )
        wait_until(
            lambda: (
                store_rows(
                    postgres_url, "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')"
                )
                == [(0,)]
            ),
            timeout=60,
            message="every run to end",
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        ended = [(w.wait(timeout=60), w.stderr.read()) for w in workers]
    assert all(code == 0 and "Traceback" not in err for code, err in ended), ended
    ran = Counter(int(word) for word in p.ledger_lines())
    assert set(ran.values()) == {1}, [r for r, n in ran.items() if n > 1]
    statuses = dict(store_rows(postgres_url, "SELECT id, status FROM runs"))
    unknown = {i for i, s in statuses.items() if s == "unknown"}
    assert 1 <= len(unknown) <= 4 and set(statuses.values()) == {"succeeded", "unknown"}
    assert {i for i, s in statuses.items() if s == "succeeded"} <= set(ran)
    report = p.run("audit", "verify", "--state", postgres_url, "--format", "json", code=0).json()
    assert report["unsealed"] == 0
    assert set(ran) <= {e["run"] for e in _entries(postgres_url, "run.dispatched")}


@pytest.mark.integration
def test_a_once_pass_rides_out_a_postgresql_restart_with_every_entry(tmp_path):
    """`--once` over 100 runs while the server is restarted (`pg_ctl restart -m immediate`)
    mid-pass: the pass ends (exit 0 here; exit 3 with a one-line error would be acceptable),
    each command ran once, and every run marked dispatched has its sealed `run.dispatched`
    entry (group commit through a broken connection)."""
    cluster = Cluster.create()
    try:
        p = Project(tmp_path)
        starts = tmp_path / "starts"
        p.write(
            "tasks/ops/many.yaml",
            "tasks:\n"
            + "".join(
                f'  - name: t{i}\n    machines: [box]\n    command: echo "$RECONCILE_RUN_ID" '
                f">> {starts}; sleep 0.05\n"
                for i in range(100)
            ),
        )
        args = ("--once", "--state", cluster.url, "-q", "--concurrency", "4")
        with reaped(spawn(*args, cwd=p.root)) as once:
            wait_until(
                lambda: starts.exists() and len(starts.read_text().split()) >= 25,
                timeout=60,
                message="a quarter of the runs to start",
            )
            cluster.restart()
            _, err = once.communicate(timeout=120)
        assert once.returncode in (0, 3) and "Traceback" not in err, err
        if once.returncode == 3:
            assert err.strip().splitlines()[-1].startswith("error: "), err
            p.run("--once", "--state", cluster.url, "-q")  # ends what the first left
        started = [int(word) for word in starts.read_text().split()]
        assert len(started) == len(set(started)), "a run started twice"
        dispatched = {i for (i,) in store_rows(cluster.url, "SELECT id FROM runs WHERE dispatched")}
        assert set(started) <= dispatched
        entries = {e["run"] for e in _entries(cluster.url, "run.dispatched")}
        assert dispatched <= entries, sorted(dispatched - entries)
        p.run("audit", "verify", "--state", cluster.url, code=0)
    finally:
        cluster.destroy()


# --- a claim batch that meets a busy SQLite file --------------------------------------------------


def test_a_busy_state_file_at_a_claim_does_not_lose_the_runs_in_flight(project):
    """A long priority-1 run is in flight; another run failed and waits out a 2 s retry
    back-off. An operator's `sqlite3` shell (or any writer) holds the write lock past the
    busy timeout just when the retry comes due. When the lock is released the long run
    ends with exit 0 in the pass's own process, which must record it: it succeeded. (The
    pass ended with exit 3 and the next recorded the run unknown; fixed in 62acba8: claim
    and dispatch batches are tried again after a transient store error.)"""
    p = project
    go = p.root / "go"
    p.task(
        "slow",
        f'priority: 1\ncommand: {p.record("slow")}; while [ ! -f "{go}" ]; do sleep 0.02; done\n',
    )
    p.task("flaky", f"command: {p.record('flaky')}; exit 1\nretry: {{count: 1, delay: 2s}}\n")
    log = p.root / "once.err"
    with log.open("w") as err:
        once = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--once", "-q"],
            cwd=p.root,
            env=clean_environment({}),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(
            lambda: (
                store_rows(
                    p.state,
                    "SELECT status FROM runs WHERE task = 'ops/flaky' AND attempt = 2",
                    while_starting=True,
                )
                == [("pending",)]
                and "slow" in p.ledger_lines()
            ),
            timeout=30,
            message="the retry to wait out its back-off beside the long run",
        )
        holder = sqlite3.connect(p.state, timeout=30, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            wait_until(
                lambda: "database is locked" in log.read_text(),
                timeout=30,
                message="the pass to meet the lock",
            )
        finally:
            holder.execute("COMMIT")
            holder.close()
        go.touch()
        once.wait(timeout=60)
    finally:
        go.touch()
        if once.poll() is None:
            once.kill()
            once.wait()
    [(status,)] = store_rows(p.state, "SELECT status FROM runs WHERE task = 'ops/slow'")
    assert status == "succeeded", (status, once.returncode, log.read_text())


# --- `after` chains drained by a pass and workers together (PostgreSQL) ------------------------


@pytest.mark.integration
def test_after_chains_drained_by_a_pass_and_workers_are_never_wrongly_blocked(
    tmp_path, postgres_url
):
    """Eight chains a -> b -> c on three machines (72 runs of `echo`), one `--once` and three
    workers on one PostgreSQL queue. Every dependency succeeds, so every run must succeed;
    seen: a dozen or more runs blocked with 'dependency ops/cNa has not succeeded on mK'
    while that very run had succeeded (a worker's tracker never saw it active). Fixed in
    a2115d8: a block is confirmed on a fresh snapshot first."""
    p = Project(tmp_path)
    p.write(
        "machines/box.yaml",
        "machines:\n"
        + "".join(
            f"  - {{name: m{i}, team: ops, transport: local, max_parallel: 3}}\n" for i in range(3)
        ),
    )
    tasks = []
    for i in range(8):
        for step, after in (("a", None), ("b", "a"), ("c", "b")):
            tasks.append(
                f"  - name: c{i}{step}\n    selector: {{}}\n    priority: {1 + (i + ord(step)) % 5}\n"
                + (f"    after: [c{i}{after}]\n" if after else "")
                + f'    command: echo "c{i}{step} $RECONCILE_MACHINE" >> "{p.ledger}"\n'
            )
    p.write("tasks/ops/chains.yaml", "tasks:\n" + "".join(tasks))
    workers = [
        spawn("worker", "--state", postgres_url, "-q", "--concurrency", "3", cwd=p.root)
        for _ in range(3)
    ]
    try:
        result = p.run(
            "--once", "--state", postgres_url, "-q", "--concurrency", "3", "--format", "json"
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        ended = [(w.wait(timeout=60), w.stderr.read()) for w in workers]
    assert all(code == 0 and "Traceback" not in err for code, err in ended), ended
    blocked = dict(
        store_rows(
            postgres_url,
            "SELECT task || ' on ' || machine, error FROM runs WHERE status = 'blocked'",
        )
    )
    assert blocked == {}, blocked
    assert result.code == 0 and result.json()["counts"] == {"succeeded": 72}


# --- incremental dispatch after a re-read: a retry's back-off (PostgreSQL) ------------------------


@pytest.mark.integration
def test_a_retry_taken_back_by_another_worker_waits_out_its_back_off(tmp_path, postgres_url):
    """Worker B (concurrency 1) runs a long priority-1 command, the six failing runs wait
    for its capacity in its last decision. B pauses (SIGSTOP: a GC pause, a VM steal, a
    slow host) while worker A takes the six, they fail and wait out a 60 s back-off. B
    resumes, its long run ends, and B must not start any of them before its back-off."""
    p = Project(tmp_path / "b")
    p.write("machines/box.yaml", "name: box\nteam: ops\ntransport: local\nmax_parallel: 16\n")
    go = tmp_path / "go"
    p.task(
        "long",
        f'priority: 1\ncommand: {p.record("long")}; while [ ! -f "{go}" ]; do sleep 0.02; done\n',
    )
    for i in range(6):
        p.task(
            f"f{i}",
            f"priority: 3\nretry: {{count: 1, delay: 60s}}\ncommand: {p.record(f'f{i}')}; exit 1\n",
        )
    # Worker A's checkout lacks `marker`: it leaves that run to B, which shows when B is free.
    a_root = tmp_path / "a"
    shutil.copytree(p.inventory, a_root / "inventory")
    p.task("marker", f"priority: 5\ncommand: {p.record('marker')}\n")
    assert len(record_plan(p.inventory, postgres_url)) == 8
    worker_b = spawn("worker", "--state", postgres_url, "-q", "--concurrency", "1", cwd=p.root)
    worker_a = None
    try:
        wait_until(lambda: "long" in p.ledger_lines(), timeout=30, message="B to start long")
        worker_b.send_signal(signal.SIGSTOP)
        worker_a = spawn("worker", "--state", postgres_url, "-q", cwd=a_root)
        wait_until(
            lambda: (
                store_rows(
                    postgres_url,
                    "SELECT count(*) FROM runs WHERE task LIKE 'ops/f%%' AND status = 'pending' "
                    "AND attempt = 2",
                )
                == [(6,)]
            ),
            timeout=30,
            message="A to fail the six runs into their back-off",
        )
        worker_b.send_signal(signal.SIGCONT)
        go.touch()
        wait_until(lambda: "marker" in p.ledger_lines(), timeout=30, message="B to go on")
    finally:
        go.touch()
        worker_b.send_signal(signal.SIGCONT)
        for worker in (worker_a, worker_b):
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
        ended = [(w.wait(timeout=60), w.stderr.read()) for w in (worker_a, worker_b) if w]
    assert all(code == 0 for code, _ in ended), ended
    twice = {word: n for word, n in Counter(p.ledger_lines()).items() if n > 1}
    assert twice == {}, f"retries started before their 60 s back-off: {twice}"


# --- SQLite end batches over JSON (d910e8f) -------------------------------------------------------


def test_a_run_output_with_a_nul_byte_is_stored_whole(project):
    """`printf 'before\\0after'` and a binary output (70,000 NUL bytes, then a line):
    `queue show` gives back everything after the NUL too, as it did before d910e8f."""
    p = project
    p.task("nul", "command: printf 'before\\000after\\n'; exit 3\n")
    p.task("binary", "command: head -c 70000 /dev/zero; echo; echo tail-line\n")
    runs = p.run("--once", "--format", "json", code=1).json()["runs"]
    shown = {
        run["task"]: p.run("queue", "show", str(run["id"]), "--format", "json").json()["output"]
        for run in runs
    }
    assert shown["ops/nul"] == "before\x00after\n"
    assert shown["ops/binary"].endswith("\x00\ntail-line\n")
