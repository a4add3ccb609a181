"""Hostile review of the SSH transport's runners (`wrapper.RUNNER`: one bash per channel that
runs one run after another) through the CLI, against real sshd: what a task does in its runner,
what stays in a runner's memory, how many runners and logins a pass costs, a kill of one run
beside another. Each defect found was an `xfail(strict=True)` test until it was fixed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import clean_environment, reaped, spawn
from tests.support.line_reader import follow_lines
from tests.support.login_shell_sshd import LoginShellSshd
from tests.support.markers import exited
from tests.support.planning import record_plan
from tests.support.processes import pids_in, running
from tests.support.ssh_project import ssh_project
from tests.support.store_rows import store_rows
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SECRET = "Runner-Held-Secret-90210"


def _project(tmp_path, sshd, client_key, **options):
    return ssh_project(tmp_path / "project", sshd.port, sshd.host_key, client_key, **options)


def _once(p, *args: str, code: int | None = None) -> dict:
    return p.run("--once", "--format", "json", "--identity", str(p.key), *args, code=code).json()


def _output(p, run_id: int) -> str:
    return p.run("queue", "show", str(run_id), "--format", "json", code=0).json()["output"]


def _runners(home: Path) -> list[int]:
    """The runners of the test daemon whose sessions have HOME `home` (any pass's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"reconciler-runner" in argv and f"HOME={home}".encode() in environ:
            found.append(int(entry.name))
    return found


def _argv_holding(needle: bytes) -> list[int]:
    """The processes of this host (the target's too) whose argument list holds `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _memory_holds(pid: int, needle: bytes) -> list[str]:
    """The mappings of process `pid` whose bytes hold `needle` (read through /proc as root)."""
    found = []
    with open(f"/proc/{pid}/mem", "rb") as memory:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            low, high = (int(x, 16) for x in span.split("-"))
            try:
                memory.seek(low)
                data = memory.read(high - low)
            except (OSError, OverflowError, ValueError):
                continue
            if needle in data:
                found.append(line)
    return found


# --- a task's env names are its own -------------------------------------------------------------


def test_a_task_env_named_like_a_runner_variable_reaches_the_task(tmp_path, sshd, client_key):
    names = ["held", "n", "s", "t", "f", "d", "nl", "i", "k", "c", "z", "rc", "m", "st"]
    p = _project(tmp_path, sshd, client_key, max_parallel=1)
    env = "".join(f"  {name}: v-{name}\n" for name in names)
    p.task("named", "priority: 1\nenv:\n" + env + "command: /usr/bin/env | sort\n")
    p.task("after", "priority: 2\ncommand: echo after\n")  # the same runner, undisturbed
    data = _once(p, code=0)
    runs = {r["task"]: r for r in data["runs"]}
    assert _output(p, runs["ops/after"]["id"]) == "after\n"
    got = _output(p, runs["ops/named"]["id"]).splitlines()
    missing = [name for name in names if f"{name}=v-{name}" not in got]
    assert missing == []


def test_a_task_env_named_like_a_bash_special_variable_is_refused_before_anything_runs(
    tmp_path, sshd, client_key
):
    """Over SSH a task's env is set by bash, where UID and EUID are read-only, GROUPS an
    array and RANDOM dynamic: the task would not see the value given. Such names are refused
    with their place in the file, and nothing runs."""
    p = _project(tmp_path, sshd, client_key, max_parallel=1)
    p.task("special", "env:\n  UID: '1000'\n  RANDOM: '4'\ncommand: /usr/bin/env\n")
    result = p.run("--once", "--identity", str(p.key))
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert "env name 'UID' is reserved by the shell" in result.err
    assert "env name 'RANDOM' is reserved by the shell" in result.err
    assert sshd.logins() == 0


# --- secrets in a runner's memory ----------------------------------------------------------------


def test_an_idle_runner_keeps_no_secret_of_the_run_it_ran(tmp_path, sshd, client_key):
    """Two runners: `vaulted` (a vault secret in its env) ends at once, `busy` waits for a
    file. While `busy` runs, the runner that ran `vaulted` idles; its memory is read."""
    p = _project(tmp_path, sshd, client_key, max_parallel=2, secrets={"TOKEN": SECRET})
    go, parent = tmp_path / "go", tmp_path / "parent"
    p.task("vaulted", 'priority: 1\nenv: {T: {vault: TOKEN}}\ncommand: test -n "$T"\n')
    p.task(
        "busy",
        f'priority: 2\ncommand: echo $PPID > "{parent}"; '
        f'while [ ! -f "{go}" ]; do sleep 0.05; done\n',
    )
    with reaped(spawn("--once", "--identity", str(p.key), "-q", cwd=p.root)) as once:
        try:
            wait_until(lambda: parent.exists() and parent.read_text().strip(), timeout=30)
            busy = pids_in(parent)[0]
            wait_until(
                lambda: (
                    p.run("queue", "show", "1", "--format", "json").json()["status"] == "succeeded"
                ),
                timeout=30,
                message="vaulted to end",
            )
            idle = [pid for pid in _runners(sshd.root / "home") if pid != busy]
            assert idle, "no idle runner"
            holding = {pid: _memory_holds(pid, SECRET.encode()) for pid in idle}
        finally:
            go.touch()
        assert once.wait(timeout=60) == 0
    assert {pid: maps for pid, maps in holding.items() if maps} == {}


def test_a_vault_value_that_is_not_utf8_is_refused_or_harmless(tmp_path, sshd, client_key):
    p = _project(tmp_path, sshd, client_key)
    stored = subprocess.run(
        [sys.executable, "-m", "reconciler", "vault", "set", "ops", "BLOB", "-"]
        + ["--identity", str(p.key)],
        cwd=p.root,
        input=b"ab\xff\xfecd",
        capture_output=True,
        env=clean_environment(None),
        timeout=60,
    )
    p.task("plain", "command: echo plain\n")  # names no vault value at all
    result = p.run("--once", "--identity", str(p.key))
    refused = stored.returncode != 0 and b"Traceback" not in stored.stderr
    assert refused or (result.code == 0 and "internal error" not in result.err), result.err


# --- how many runners and logins a pass costs ----------------------------------------------------


def test_eight_runs_on_a_machine_of_eight_take_one_login_and_at_most_eight_runners(
    tmp_path, sshd, client_key
):
    """The runners connect-ahead starts are waited for by the runs, not doubled by them: one
    login, and no more runners than runs (a run may take a runner another run freed)."""
    p = _project(tmp_path, sshd, client_key, max_parallel=8)
    for i in range(8):
        p.task(f"t{i}", "command: echo ok\n")
    data = _once(p, code=0)
    assert data["counts"] == {"succeeded": 8}
    sessions = sshd.log_text().count("Starting session")  # runners, and one marker cleanup
    assert sshd.logins() == 1 and 2 <= sessions <= 9, sessions


# --- queue kill of one run beside another on the same machine -------------------------------------

RUNAWAY = (
    'command: trap "" TERM; sleep 1000 & echo "$$ $!" > "{pids}"; echo started; wait; echo never\n'
)


def test_queue_kill_over_ssh_stops_its_run_only_and_its_runner_takes_the_next(
    tmp_path, sshd, client_key
):
    """`runaway` (TERM ignored, a child) and `bystander` run on two runners of one machine;
    `queue kill` of `runaway` stops its group (KILL after the grace), `bystander` goes on to
    its end, and `later` then runs on a runner (the killed run's runner is still usable)."""
    p = _project(tmp_path, sshd, client_key, max_parallel=2)
    pids, go, mark = tmp_path / "pids", tmp_path / "go", tmp_path / "bystander"
    p.task("runaway", "priority: 1\n" + RUNAWAY.format(pids=pids))
    p.task(
        "bystander",
        f'priority: 1\ncommand: echo $$ > "{mark}"; echo waiting; '
        f'while [ ! -f "{go}" ]; do sleep 0.05; done; echo done\n',
    )
    p.task("later", "priority: 2\ncommand: echo later $PPID\n")
    with reaped(spawn("--once", "--identity", str(p.key), "--format", "json", cwd=p.root)) as once:
        try:
            wait_until(lambda: pids.exists() and len(pids_in(pids)) == 2, timeout=30)
            wait_until(lambda: mark.exists() and mark.read_text().strip(), timeout=30)
            shell, child = pids_in(pids)
            [bystander] = pids_in(mark)
            runaway_id = next(
                r["id"]
                for r in p.run("queue", "list", "--format", "json", code=0).json()
                if r["task"] == "ops/runaway"
            )
            killed = p.run("queue", "kill", str(runaway_id), "--grace", "1s", "--reason", "r")
            assert killed.code == 0, killed.err
            assert not running(shell) and not running(child)
            assert running(bystander)
        finally:
            go.touch()
        out, err = once.communicate(timeout=60)
    runs = {r["task"]: r for r in json.loads(out)["runs"]}
    assert {t: r["status"] for t, r in runs.items()} == {
        "ops/runaway": "killed",
        "ops/bystander": "succeeded",
        "ops/later": "succeeded",
    }, err
    assert _output(p, runs["ops/bystander"]["id"]) == "waiting\ndone\n"
    assert _output(p, runs["ops/runaway"]["id"]) == "started\n"
    assert _output(p, runs["ops/later"]["id"]).startswith("later ")


# --- a daemon keeps its runners across passes, and an sshd restart ---------------------------


def _ran(p, word: str) -> list[str]:
    """The runner (the command's parent) of each run of `word` in the ledger."""
    lines = p.ledger.read_text().splitlines() if p.ledger.exists() else []
    return [line.split()[1] for line in lines if line.split()[0] == word]


def _recorder(p, word: str) -> str:
    return f'command: echo {word} $PPID >> "{p.ledger}"\n'


def test_a_daemon_runs_its_next_pass_on_the_same_login_and_runner(tmp_path, sshd, client_key):
    p = _project(tmp_path, sshd, client_key, max_parallel=1, settings="poll_interval: 1s\n")
    p.task("first", _recorder(p, "first"))
    with reaped(spawn("--identity", str(p.key), "-q", cwd=p.root)) as daemon:
        wait_until(lambda: _ran(p, "first"), timeout=30, message="first")
        p.task("second", _recorder(p, "second"))
        wait_until(lambda: _ran(p, "second"), timeout=30, message="second")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert (sshd.logins(), _ran(p, "second")) == (1, _ran(p, "first"))


def test_after_sighup_the_daemon_logs_in_afresh_and_closes_the_old_login(
    tmp_path, sshd, client_key
):
    """SIGHUP renews the kept logins (a key rotated in its vault is used by the next one):
    the next pass logs in again, and the old connection is closed, not left open."""
    p = _project(tmp_path, sshd, client_key, max_parallel=1, settings="poll_interval: 1s\n")
    p.task("first", _recorder(p, "first"))
    with reaped(spawn("--identity", str(p.key), "-q", cwd=p.root)) as daemon:
        wait_until(lambda: _ran(p, "first"), timeout=30, message="first")
        daemon.send_signal(signal.SIGHUP)
        # No pass uses the first login any more: it is closed, and its runner exits with it.
        wait_until(lambda: not _alive(_ran(p, "first")[0]), timeout=30, message="the old runner")
        p.task("second", _recorder(p, "second"))
        wait_until(lambda: _ran(p, "second"), timeout=30, message="second")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert sshd.logins() == 2
    assert _ran(p, "second") != _ran(p, "first")


def _alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_daemon_goes_on_after_an_sshd_restart_between_its_passes(tmp_path, sshd, client_key):
    """sshd restarted (its sessions, runners included, killed with it) between two passes:
    the next pass runs its run once, succeeded, nothing stuck or unknown."""
    p = _project(tmp_path, sshd, client_key, max_parallel=1, settings="poll_interval: 1s\n")
    p.task("first", _recorder(p, "first"))
    with reaped(spawn("--identity", str(p.key), "-q", cwd=p.root)) as daemon:
        wait_until(lambda: _ran(p, "first"), timeout=30, message="first")
        sshd.restart()
        p.task("second", _recorder(p, "second"))
        wait_until(lambda: _ran(p, "second"), timeout=30, message="second, after the restart")
        p.task("third", _recorder(p, "third"))
        wait_until(lambda: _ran(p, "third"), timeout=30, message="third")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    rows = p.run("queue", "list", "--format", "json", code=0).json()
    assert sorted((r["task"], r["status"], r["attempt"]) for r in rows) == [
        ("ops/first", "succeeded", 1),
        ("ops/second", "succeeded", 1),
        ("ops/third", "succeeded", 1),
    ]
    assert [len(_ran(p, w)) for w in ("first", "second", "third")] == [1, 1, 1]


# --- following a run on a runner ----------------------------------------------------------------


def test_follow_shows_the_lines_of_a_run_on_a_runner_as_they_come(tmp_path, sshd, client_key):
    """`queue show --follow` reads a running task's output file over SSH while every place
    of the machine is a busy runner (max_parallel runs at once), then prints the end. Its
    secret is in no process's argument list meanwhile, and in no marker file once recorded."""
    p = _project(tmp_path, sshd, client_key, max_parallel=3, secrets={"TOKEN": SECRET})
    go = tmp_path / "go"
    wait = f'while [ ! -f "{go}" ]; do sleep 0.05; done'
    p.task(
        "watched", f'env: {{T: {{vault: TOKEN}}}}\ncommand: echo "first $T"; {wait}; echo last\n'
    )
    for i in range(2):
        p.task(f"other{i}", f"command: {wait}\n")
    with reaped(spawn("--once", "--identity", str(p.key), "-q", cwd=p.root)) as once:
        try:
            run_id = wait_until(
                lambda: next(
                    (
                        r["id"]
                        for r in p.run("queue", "list", "--format", "json").json()
                        if r["task"] == "ops/watched" and r["status"] == "running"
                    ),
                    None,
                ),
                timeout=30,
                message="watched to run",
            )
            args = ("queue", "show", str(run_id), "--follow", "--identity", str(p.key))
            with reaped(spawn(*args, cwd=p.root)) as follower:
                out, err = follow_lines(follower)
                out.wait_for("first")  # while the command still waits for `go`
                assert _argv_holding(SECRET.encode()) == []
                go.touch()
                assert follower.wait(timeout=60) == 0, err.finish()
                lines = out.finish()
        finally:
            go.touch()
        assert once.wait(timeout=60) == 0
    assert lines[:2] == ["first ***", "last"], lines
    assert SECRET not in "\n".join(lines)
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    assert [f.name for f in markers.iterdir() if SECRET.encode() in f.read_bytes()] == []


# --- the target's login shell and its startup files -------------------------------------------


def _flaky(p, tmp_path) -> None:
    """Task `flaky`: prints its vault secret, fails its first attempt, succeeds its retry."""
    once = tmp_path / "failed-once"
    p.task(
        "flaky",
        "env: {T: {vault: TOKEN}}\nretry: {count: 1, delay: 0s}\n"
        f'command: echo "out $T"; test -f "{once}" || {{ touch "{once}"; exit 1; }}\n',
    )


@pytest.mark.parametrize(
    "shell, bash",
    [("/usr/bin/zsh", True), ("/usr/bin/mksh", True), ("/usr/bin/dash", False)],
    ids=["zsh", "mksh", "dash-without-bash"],
)
def test_a_run_and_its_retry_over_other_login_shells_with_or_without_bash(
    tmp_path, client_key, shell, bash
):
    """zsh (its ~/.zshenv turning on nounset and errexit, printing a banner) and mksh start
    runners; dash on a target without bash gets a channel per run. Either way a retry runs,
    and no recorded output is left on the target."""
    sshd = LoginShellSshd(tmp_path / "sshd", [client_key.public], shell, bash=bash)
    (sshd.root / "home" / ".zshenv").write_text("setopt nounset errexit; echo zsh-banner\n")
    sshd.start()
    try:
        p = _project(tmp_path, sshd, client_key, max_parallel=2, secrets={"TOKEN": SECRET})
        _flaky(p, tmp_path)
        p.task("other", "command: echo other $PPID; command -v bash || echo no-bash\n")
        runs = {r["task"]: r for r in _once(p, code=0)["runs"]}
        assert (runs["ops/flaky"]["status"], runs["ops/flaky"]["attempt"]) == ("succeeded", 2)
        assert _output(p, runs["ops/flaky"]["id"]) == "out ***\n"
        other = _output(p, runs["ops/other"]["id"])
        assert other.endswith("/bash\n" if bash else "no-bash\n"), other
        markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
        assert [f.name for f in markers.iterdir() if SECRET.encode() in f.read_bytes()] == []
        assert sshd.logins() == 1
    finally:
        sshd.stop()


def test_a_noclobber_bashrc_disturbs_no_runner_under_a_dash_login_shell(tmp_path, client_key):
    sshd = LoginShellSshd(
        tmp_path / "sshd", [client_key.public], "/usr/bin/dash", "set -o noclobber\n"
    ).start()
    try:
        p = _project(tmp_path, sshd, client_key, max_parallel=1, secrets={"TOKEN": SECRET})
        _flaky(p, tmp_path)
        [run] = _once(p)["runs"]
        assert (run["status"], run["attempt"]) == ("succeeded", 2), run
        assert _output(p, run["id"]) == "out ***\n"
        markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
        assert [f.name for f in markers.iterdir() if SECRET.encode() in f.read_bytes()] == []
    finally:
        sshd.stop()


# --- crash adoption with runs in flight on several runners (PostgreSQL, a worker) -------------


def test_a_pass_killed_with_runs_in_flight_on_runners_is_adopted_by_a_postgresql_worker(
    tmp_path, sshd, client_key, postgres_url
):
    """A `--once` on PostgreSQL runs three tasks on three runners of one machine and is killed
    with -9 while they wait; they end on the target (exit 0, 1, 0); a worker (leases aged)
    adopts each real exit code and output from the markers, runs nothing again, and leaves
    no output on the target."""
    p = _project(tmp_path, sshd, client_key, max_parallel=3)
    go = tmp_path / "go"
    for i in range(3):
        p.task(
            f"t{i}",
            f'command: echo t{i} >> "{p.ledger}"; while [ ! -f "{go}" ]; do sleep 0.05; done; '
            f"echo out{i}; exit {i % 2}\n",
        )
    args = ("--identity", str(p.key), "--state", postgres_url, "-q")
    with reaped(spawn("--once", *args, cwd=p.root)) as once:
        wait_until(lambda: len(p.ledger_lines()) == 3, timeout=30, message="three runs")
        once.kill()
        once.communicate(timeout=30)
    go.touch()
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    ids = [r[0] for r in store_rows(postgres_url, "SELECT id FROM runs ORDER BY id")]
    wait_until(lambda: all(exited(markers, i) for i in ids), timeout=30, message="exit lines")
    store_rows(
        postgres_url,
        "UPDATE runs SET heartbeat_at = now() - interval '1 hour', "
        "started_at = started_at - interval '1 hour' WHERE status = 'running'",
    )
    with reaped(spawn("worker", *args, cwd=p.root)) as worker:
        try:
            wait_until(
                lambda: (
                    store_rows(
                        postgres_url,
                        "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')",
                    )
                    == [(0,)]
                ),
                timeout=45,
                message="every run to be adopted",
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0 and "Traceback" not in err, err
    rows = store_rows(postgres_url, "SELECT task, status, exit_code, attempt FROM runs ORDER BY id")
    assert sorted(rows) == [
        ("ops/t0", "succeeded", 0, 1),
        ("ops/t1", "failed", 1, 1),
        ("ops/t2", "succeeded", 0, 1),
    ]
    for i, run_id in enumerate(ids):
        shown = p.run("queue", "show", str(run_id), "--state", postgres_url, "--format", "json")
        assert shown.json()["output"] == f"out{int(shown.json()['task'][-1])}\n", i
    assert sorted(p.ledger_lines()) == ["t0", "t1", "t2"]  # nothing ran twice
    assert [f.name for f in markers.glob("*.out") if f.stat().st_size] == []


# --- what a task does in its runner -------------------------------------------------------------

HOSTILE = {
    # task: (command, timeout, expected status, expected exit code, text its output holds)
    "kill-group": ("echo before; kill 0; echo after", "30s", "failed", 143, "before\n"),
    "exec": ("exec echo replaced", "30s", "succeeded", 0, "replaced\n"),
    "stdin": ("cat; read x; echo got=$x", "30s", "succeeded", 0, "got=\n"),
    "nul": ("printf 'a\\000b\\n'", "30s", "succeeded", 0, "b\n"),
    "trailer": ('echo "$RECONCILE_RUN_COOKIE 0"; printf "x 0"; exit 7', "30s", "failed", 7, "x 0"),
    "huge": (
        "head -c 200000 /dev/zero | tr '\\000' x; echo; echo the-end",
        "30s",
        "succeeded",
        0,
        "x\nthe-end\n",
    ),
    "stopped": ("echo stopping; kill -STOP $$", "2s", "failed", None, "stopping\n"),
}


def test_hostile_tasks_disturb_neither_their_runner_nor_another_runs_result(
    tmp_path, sshd, client_key
):
    """Tasks that kill their group, exec, read stdin, print NULs, a fake trailer or 200 KB,
    stop themselves (a timeout then kills them), set IFS/PATH/LC_ALL in their env, or leave a
    `setsid` daemon or a background child behind, on two runners; the runs after them on the
    same runners get their exact results."""
    p = _project(tmp_path, sshd, client_key, max_parallel=2)
    daemon_pid = tmp_path / "daemon"
    for name, (command, timeout, *_) in HOSTILE.items():
        p.task(name, f"priority: 1\ntimeout: {timeout}\ncommand: {json.dumps(command)}\n")
    p.task(
        "env",
        "priority: 1\nenv: {IFS: ',', PATH: /nonexistent, LC_ALL: C.UTF-8, n: x, t: y}\n"
        "command: /bin/echo env-ok\n",
    )
    p.task(
        "daemon",
        f'priority: 1\ncommand: setsid sleep 60 >/dev/null 2>&1 < /dev/null & echo $! > "{daemon_pid}"; '
        "(sleep 0.5; echo late) & echo early\n",
    )
    for i in range(4):
        p.task(f"canary{i}", f"priority: 2\ncommand: echo canary{i}\n")
    try:
        data = _once(p)
    finally:
        if daemon_pid.exists():
            os.kill(pids_in(daemon_pid)[0], signal.SIGKILL)
    runs = {r["task"][4:]: r for r in data["runs"]}
    outputs = {task[4:]: out for task, out in store_rows(p.state, "SELECT task, output FROM runs")}
    for name, (_, _, status, code, text) in HOSTILE.items():
        run = runs[name]
        assert (run["status"], run["exit_code"]) == (status, code), run
        assert outputs[name].endswith(text), name
    assert "timed out" in runs["stopped"]["error"]
    assert (outputs["env"], outputs["daemon"]) == ("env-ok\n", "early\n")
    for i in range(4):
        assert (runs[f"canary{i}"]["status"], outputs[f"canary{i}"]) == (
            "succeeded",
            f"canary{i}\n",
        )


# --- a PostgreSQL worker keeps its runners between runs, and an sshd restart --------------------


def test_a_worker_reuses_its_idle_runner_and_reconnects_after_an_sshd_restart(
    tmp_path, sshd, client_key, postgres_url
):
    """A worker keeps its transports (and runners) for its life: a run planned after another
    goes to the same runner on the same login; sshd restarted (the idle runner and its
    connection gone), the next planned run still runs once, succeeded."""
    p = _project(tmp_path, sshd, client_key, max_parallel=1)
    for word in ("first", "second", "third"):
        p.task(word, _recorder(p, word))
    planner = tmp_path / "planner"  # what a planner elsewhere has seen so far
    (planner / "tasks" / "ops").mkdir(parents=True)
    for folder in ("teams", "machines"):
        shutil.copytree(p.inventory / folder, planner / folder)

    def plan(word: str) -> None:
        shutil.copy(p.inventory / "tasks" / "ops" / f"{word}.yaml", planner / "tasks" / "ops")
        assert len(record_plan(planner, postgres_url)) == 1

    args = ("--identity", str(p.key), "--state", postgres_url, "-q")
    with reaped(spawn("worker", *args, cwd=p.root)) as worker:
        try:
            plan("first")
            wait_until(lambda: _ran(p, "first"), timeout=30, message="first")
            plan("second")
            wait_until(lambda: _ran(p, "second"), timeout=30, message="second")
            reused = (sshd.logins(), _ran(p, "second") == _ran(p, "first"))
            sshd.restart()
            plan("third")
            wait_until(lambda: _ran(p, "third"), timeout=30, message="third, after the restart")
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0 and "Traceback" not in err, err
    assert reused == (1, True)
    rows = store_rows(postgres_url, "SELECT task, status, attempt FROM runs ORDER BY id")
    assert rows == [("ops/first", "succeeded", 1), ("ops/second", "succeeded", 1)] + [
        ("ops/third", "succeeded", 1)
    ]
    assert [len(_ran(p, w)) for w in ("first", "second", "third")] == [1, 1, 1]
