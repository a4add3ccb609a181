"""The run pipeline's targets (issue 13), measured side by side in one run, printed as one table.

    python bench/pipeline.py            # full sizes (several minutes)
    python bench/pipeline.py --quick    # small sizes, under a minute: CI's smoke run

Each row: the workload, what was measured and its figure, the floor or reference it is
compared with, the ratio, the issue's target and ok/MISS. Peers (OpenSSH ControlMaster,
Fabric, pyinfra, ansible-core) are extra rows with their ratio to the asyncssh floor; they
run after every target row (ansible-core's minutes of forks would load the rows after it),
and the table shows them under their row.

a. `reconcile --once`, `echo ok` tasks over local sshd (--concurrency 16, max_parallel 4)
   against raw asyncssh (one connection per host, concurrent channels): 200 over 4 <= 1.85x,
   1,000 over 8 <= 1.6x. asyncssh, pyinfra and ansible-core come from --venv (see
   bench/bench_ssh.py); a tool that is not installed is n/a. Two more rows break each side's
   time down (medians, no target): the CPU per run of its own processes (interpreter start
   included) and of the daemons' sessions and the commands they start, which share this
   machine's cores with it.
b. `reconcile --once`, 1,000 x `true` on 10 local machines (bench/generate.py's inventory),
   against a fresh `python -c` spawning the same 1,000 `sh -c true` from 16 threads
   (interpreter start included in both): <= 3x.
c. Linearity: `reconcile --once` of 10,000 runs over 100 local machines against 5,000 (plain
   inventories: one task, one machine, one run): <= 2.2x.
d. Scale-out on a shared PostgreSQL queue: 400 x `sleep 0.2` on 8 local machines
   (max_parallel 8): `--once --concurrency 8` alone against the same pass with three
   `reconcile worker --concurrency 8` beside it (started together on the new database
   before the pass, idle when it starts), the pass's process being the clock: >= 3.5x
   sooner; and the workers started together all come up. Under it, for information, what
   free runs would give: the start-up of a no-op `--once` (median of 3, on the store the pass
   alone left) plus whole waves of the command, alone against beside (`ceiling`); the pass
   alone pays a migration on top, which the pass beside the workers does not.
e. bench/bench_workers.py: 400 x `sleep 0.05` enqueued for 1, 2 and 4 idle workers (the clock
   from the enqueue to the last end): each >= the previous in runs/s.
f. Store bookkeeping, client CPU per run (not wall) of the engine's round path (round_batch:
   a round's ends, claims and dispatch marks in one transaction, 16 runs a round, with the
   engine's audit records), SQLite and PostgreSQL: < 0.3 ms; the per-run path beside it as
   the reference. Under it, for information: the three-transaction batch path (claim_batch +
   dispatch_batch + end_batch) a drain without a journal takes, and the round a pass's drain
   mostly records (its runs end one at a time: one end and one claim a round, with spares
   asked), per round. In full mode the median of 3 fresh stores each.

In full mode the `reconcile` figures of a and b and their floors are medians of 3
interleaved runs. PostgreSQL is the server at --postgres (a fresh database per case, dropped
after); unreachable, its rows are n/a. The load average is printed with the table: a loaded
2-core host moves every figure by +-25%. Exit 1 when a tool that is installed failed (an
`error:` cell), whatever the figures: a MISS is a result, a broken bench is not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import bench_ssh, bench_store, bench_workers  # noqa: E402
from bench.generate import generate  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PEERS = (
    bench_ssh.CONTROL_MASTER,
    "fabric/run",
    "pyinfra",
    "ansible",
    "ansible+pipe",
    "reconciler",  # SshTransport in process: what the CLI adds on top of its transport
)
PEER_LABELS = {"reconciler": "SshTransport (in process)", "ansible": "ansible-core"}


class Unavailable(Exception):
    """A tool or server this row needs is not here: the row says n/a."""


@dataclass
class Row:
    """One line of the table. `value`/`reference` are figures in `unit` or why there is none;
    `check(ratio, value)` says whether the target holds (None: no target, a peer or info)."""

    workload: str
    measured: str
    value: float | str
    reference_name: str = ""
    reference: float | str = ""
    unit: str = "s"
    ratio: float | None = None
    target: str = ""
    check: Callable[[float | None, float], bool] | None = None
    load: float | None = None
    passed: bool | None = None  # a target that is not a figure (workers up): decided already

    def verdict(self) -> str:
        if self.passed is not None:
            return "ok" if self.passed else "MISS"
        if self.check is None:
            return ""
        if not isinstance(self.value, float):
            return "error" if is_error(self.value) else "n/a"
        if self.target and self.ratio is None and "x" in self.target:
            return "n/a"  # a ratio target without a reference figure
        return "ok" if self.check(self.ratio, self.value) else "MISS"


def is_error(value: float | str) -> bool:
    return isinstance(value, str) and value.startswith("error")


def _cell(value: float | str, unit: str) -> str:
    if isinstance(value, str):
        return value
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "runs/s":
        return f"{value:,.1f} runs/s"
    return f"{value:.2f} s"


def render(rows: Sequence[Row]) -> str:
    """Pure: the rows as one aligned text table."""
    head = ("workload", "measured", "value", "reference", "value", "ratio", "target", "", "load")
    body = [
        (
            row.workload,
            row.measured,
            _cell(row.value, row.unit),
            row.reference_name,
            _cell(row.reference, row.unit) if row.reference_name else "",
            f"{row.ratio:.2f}x" if row.ratio is not None else "",
            row.target,
            row.verdict(),
            f"{row.load:.1f}" if row.load is not None else "",
        )
        for row in rows
    ]
    # Long texts (n/a, error) are cut so the table stays readable; `notes` prints them whole.
    body = [tuple(_cut(c) if i in (2, 4) else c for i, c in enumerate(line)) for line in body]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    right = {2, 4, 5, 8}

    def fmt(line: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        return "  ".join(cells).rstrip()

    lines = [fmt(head), "-" * len(fmt(head))]
    previous = None
    for line in body:
        shown = ("" if line[0] == previous else line[0], *line[1:])
        previous = line[0]
        lines.append(fmt(shown))
    return "\n".join(lines)


CELL = 40


def _cut(cell: str) -> str:
    return cell if len(cell) <= CELL else cell[: CELL - 3] + "..."


def notes(rows: Sequence[Row]) -> list[str]:
    """Pure: the whole text of every cell `render` had to cut."""
    return [
        f"{row.workload} / {row.measured}: {text}"
        for row in rows
        for text in (row.value, row.reference)
        if isinstance(text, str) and len(text) > CELL
    ]


def load1() -> float:
    return os.getloadavg()[0]


def note(text: str) -> None:
    """Progress on stderr, so stdout is the table alone."""
    print(f"  {text}", file=sys.stderr, flush=True)


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"> {exc.timeout:g} s (timeout)"
    if isinstance(exc, (Unavailable, bench_ssh.NotAvailable)):
        return f"n/a ({exc})"
    text = str(exc).strip()
    return f"error: {text.splitlines()[0][:120] if text else type(exc).__name__}"


def attempt(what: str, measure: Callable[[], float]) -> float | str:
    """The figure, or why there is none (a failure is a cell of the table, not a crash)."""
    try:
        value = measure()
    except Exception as exc:  # noqa: BLE001 - reported in the table and on stderr
        value = _why(exc)
    note(f"{what}: {value}")
    return value


def median(values: list[float | str]) -> float | str:
    figures = [v for v in values if isinstance(v, float)]
    if len(figures) == len(values) and figures:
        return statistics.median(figures)
    return next(v for v in values if not isinstance(v, float))


def ratio(value: float | str, reference: float | str) -> float | None:
    if isinstance(value, float) and isinstance(reference, float) and reference > 0:
        return value / reference
    return None


def at_most(limit: float) -> Callable[[float | None, float], bool]:
    return lambda r, v: r is not None and r <= limit


def at_least(limit: float) -> Callable[[float | None, float], bool]:
    return lambda r, v: r is not None and r >= limit


# ------------------------------------------------------------------------------ helpers


def _env() -> dict[str, str]:
    """This environment without the user's RECONCILE_* settings (PYTHONPATH is kept: the
    bench measures the tree it is run from)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}


def _once(project: Path, timeout: float, *extra: str) -> tuple[float, dict[str, int]]:
    """Wall seconds of `reconcile --once` (a fresh interpreter) in `project`, and the counts
    of its runs by status; RuntimeError when it did not exit 0."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "--once", "-q", "--format", "json", *extra],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"reconcile --once exited {proc.returncode}: {proc.stderr[-400:]}")
    return wall, json.loads(proc.stdout)["counts"]


def reconcile_once(project: Path, runs: int, timeout: float, *extra: str) -> float:
    """Wall seconds of `reconcile --once` in `project`; every one of its `runs` runs must have
    succeeded."""
    wall, counts = _once(project, timeout, *extra)
    if counts != {"succeeded": runs}:
        raise RuntimeError(f"expected {runs} succeeded runs, the pass reported {counts}")
    return wall


SPAWN_FLOOR = """
import subprocess, sys
from concurrent.futures import ThreadPoolExecutor
def one(_):
    if subprocess.run(["sh", "-c", "true"]).returncode != 0:
        raise SystemExit("sh -c true failed")
with ThreadPoolExecutor(max_workers=int(sys.argv[2])) as pool:
    list(pool.map(one, range(int(sys.argv[1]))))
"""


def spawn_floor(runs: int, threads: int, timeout: float) -> float:
    """Wall seconds of a fresh `python -c` spawning `runs` x `sh -c true` from `threads`."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", SPAWN_FLOOR, str(runs), str(threads)],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ rows


def rows_ssh(quick: bool, venv: str, repeat: int) -> tuple[list[Row], Callable[[], list[Row]]]:
    """a: reconcile --once against the asyncssh floor; and the peers, as a step to take after
    every other row: ansible-core forks for minutes, and the rows measured in its wake ran
    at a load of 8 on 2 cores (row b read 3.3x there, 2.7x on its own)."""
    sizes = [(20, 1, 1.85)] if quick else [(200, 4, 1.85), (1000, 8, 1.6)]
    timeout = 120 if quick else 600
    rows: list[Row] = []
    floors: dict[str, tuple[int, int, float | str]] = {}
    with ExitStack() as stack:
        try:
            workload = stack.enter_context(
                bench_ssh.lab(max(h for _, h, _ in sizes), venv, timeout)
            )
        except Exception as exc:  # noqa: BLE001 - sshd cannot start here: the row says so
            row = Row("a. echo ok over sshd", "reconcile --once", f"n/a (sshd: {exc})"[:200])
            return [row], list
        for count, hosts, limit in sizes:
            work = workload(count, hosts)
            name = f"a. {count:,} x echo ok over {hosts} sshd"
            load = load1()
            once: list[float | str] = []
            floor: list[float | str] = []
            cpu: dict[str, list[Cpu]] = {"once": [], "floor": []}
            for _ in range(repeat):
                for tool, figures in (("once", once), ("floor", floor)):
                    what = f"{name}: {'reconcile --once' if tool == 'once' else bench_ssh.FLOOR}"
                    with _cpu(work) as used:
                        figures.append(attempt(what, lambda: _ssh(work, tool)))
                    if isinstance(figures[-1], float):
                        cpu[tool].append(used)
            value, reference = median(once), median(floor)
            floors[name] = (count, hosts, reference)
            rows.append(
                Row(
                    name,
                    "reconcile --once" + (f" (median of {repeat})" if repeat > 1 else ""),
                    value,
                    bench_ssh.FLOOR,
                    reference,
                    ratio=ratio(value, reference),
                    target=f"<= {limit}x",
                    check=at_most(limit),
                    load=load,
                )
            )
            rows += _cpu_rows(name, count, cpu, load)

    def peer_rows() -> list[Row]:
        if quick:
            return []
        peers: list[Row] = []
        with bench_ssh.lab(max(h for _, h, _ in sizes), venv, timeout) as workload:
            for name, (count, hosts, reference) in floors.items():
                work = workload(count, hosts)
                for peer in PEERS:
                    load = load1()
                    seconds = attempt(f"{name}: {peer}", lambda: _ssh(work, peer))
                    peers.append(
                        Row(
                            name,
                            f"peer: {PEER_LABELS.get(peer, peer)}",
                            seconds,
                            bench_ssh.FLOOR,
                            reference,
                            ratio=ratio(seconds, reference),
                            load=load,
                        )
                    )
        return peers

    return rows, peer_rows


def grouped(rows: Sequence[Row]) -> list[Row]:
    """Pure: rows of one workload together, in the order each workload first appears (peers,
    measured last, go under the row they are compared with)."""
    first: dict[str, int] = {}
    for index, row in enumerate(rows):
        first.setdefault(row.workload, index)
    return sorted(rows, key=lambda row: first[row.workload])


@dataclass
class Cpu:
    """CPU seconds of one measurement: the tool's own processes (children of the bench) and
    the sshd daemons' sessions with the commands they started (reaped by the daemons)."""

    client: float = 0.0
    remote: float = 0.0


def _children_cpu(pid: int | None = None) -> float:
    """CPU seconds of the reaped children of this process (or of `pid`, from /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    return _stat_cpu(pid, own=False)


def _stat_cpu(pid: int, own: bool = True) -> float:
    """CPU seconds from /proc/PID/stat: its reaped children's, and with `own` its own too
    (0 for a process that is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[13]) + int(fields[14])  # cutime, cstime
    if own:
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _sessions_cpu(daemons: list[int]) -> float:
    """CPU seconds the daemons' sessions used so far: what the daemons reaped, and what their
    live descendants used (each with what it reaped). Counting the live ones keeps a session
    of an earlier tool that ends during a measurement (ansible's and ControlMaster's
    persistent connections close up to a minute later) out of that measurement."""
    from tests.support.sshd import descendants

    return sum(_children_cpu(d) + sum(map(_stat_cpu, descendants(d))) for d in daemons)


@contextmanager
def _cpu(work: bench_ssh.Workload) -> Iterator[Cpu]:
    """Fills the yielded `Cpu` with what the block's tool used: its own processes (reaped
    children of the bench) and the daemons' sessions with the commands they started."""
    from tests.support.sshd import descendants

    daemons = [d.proc.pid for d in work.hosts if d.proc is not None]
    earlier = {pid for d in daemons for pid in descendants(d)}
    used = Cpu()
    client, remote = _children_cpu(), _sessions_cpu(daemons)
    yield used
    # The tool's sessions end when its connections close; the daemons reap them a moment
    # later (a reaped session is counted once, in its daemon).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        pid not in earlier for d in daemons for pid in descendants(d)
    ):
        time.sleep(0.05)
    used.client = _children_cpu() - client
    used.remote = _sessions_cpu(daemons) - remote


def _cpu_rows(name: str, count: int, cpu: dict[str, list[Cpu]], load: float) -> list[Row]:
    """Info rows, CPU per run in ms (medians): `reconcile --once`'s own process, and the
    daemons' sessions with their commands against the floor's. (The floor's own CPU is not
    shown: its measurement also starts a process that checks asyncssh is installed.)"""

    def per_run(tool: str, side: str) -> float | str:
        values = [getattr(c, side) * 1000 / count for c in cpu[tool]]
        return statistics.median(values) if values else "n/a"

    remote, floor = per_run("once", "remote"), per_run("floor", "remote")
    return [
        Row(
            name,
            "CPU per run: reconcile's process",
            per_run("once", "client"),
            unit="ms",
            load=load,
        ),
        Row(
            name,
            "CPU per run: sshd sessions + commands",
            remote,
            bench_ssh.FLOOR,
            floor,
            unit="ms",
            ratio=ratio(remote, floor),
            load=load,
        ),
    ]


def _ssh(work: bench_ssh.Workload, tool: str) -> float:
    name = {"once": "reconcile --once", "floor": bench_ssh.FLOOR}.get(tool, tool)
    return bench_ssh.TOOLS[name](work)


def rows_local(quick: bool, repeat: int) -> list[Row]:
    """b: 1,000 x `true` on 10 local machines against the spawn floor."""
    runs = 100 if quick else 1000
    timeout = 120 if quick else 600
    name = f"b. {runs:,} x true on 10 local machines"
    load = load1()
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        project = Path(tmp)
        generate(project, runs, 10, command="true")
        once: list[float | str] = []
        floor: list[float | str] = []
        for i in range(repeat):
            # A fresh store each time: a second pass over the same store would run nothing.
            state = f"sqlite:///state-{i}.db"
            once.append(
                attempt(
                    f"{name}: reconcile --once",
                    lambda: reconcile_once(
                        project, runs, timeout, "--concurrency", "16", "--state", state
                    ),
                )
            )
            floor.append(attempt(f"{name}: spawn floor", lambda: spawn_floor(runs, 16, timeout)))
    value, reference = median(once), median(floor)
    return [
        Row(
            name,
            "reconcile --once" + (f" (median of {repeat})" if repeat > 1 else ""),
            value,
            f"python -c: {runs:,} sh -c true, 16 threads",
            reference,
            ratio=ratio(value, reference),
            target="<= 3x",
            check=at_most(3.0),
            load=load,
        )
    ]


def rows_linear(quick: bool) -> list[Row]:
    """c: time(2N runs) against time(N runs) over 100 local machines."""
    small, large = (500, 1000) if quick else (5000, 10_000)
    timeout = 300 if quick else 1800
    name = f"c. linearity: {large:,} vs {small:,} runs, 100 machines"
    load = load1()
    figures: dict[int, float | str] = {}
    for runs in (small, large):
        with tempfile.TemporaryDirectory(prefix="bench-linear-") as tmp:
            project = Path(tmp)
            generate(project, runs, 100, command="true", plain=True)
            figures[runs] = attempt(
                f"{name}: {runs:,} runs",
                lambda: reconcile_once(project, runs, timeout, "--concurrency", "16"),
            )
    return [
        Row(
            name,
            f"reconcile --once, {large:,} runs",
            figures[large],
            f"{small:,} runs",
            figures[small],
            ratio=ratio(figures[large], figures[small]),
            target="<= 2.2x",
            check=at_most(2.2),
            load=load,
        )
    ]


def _postgres(admin_url: str) -> None:
    """Raise Unavailable when the server does not answer."""
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure to connect means no server here
        raise Unavailable(f"PostgreSQL: {str(exc).strip().splitlines()[0][:60]}") from exc


@dataclass
class ScaleOut:
    alone: float | str
    together: float | str
    up: int | None = None
    claimed: dict[int, int] | None = None
    startup: float | str = ""  # a no-op --once on the store the pass alone left (median of 3)


def noop_pass(project: Path, timeout: float, *extra: str) -> float:
    """Wall seconds of a `reconcile --once` that has nothing to do: what every pass pays
    whatever its runs (interpreter, imports, inventory, store, plan, exit)."""
    wall, counts = _once(project, timeout, *extra)
    if any(counts.values()):
        raise RuntimeError(f"a pass with nothing to do ran runs: {counts}")
    return wall


def ceiling(
    startup: float | str, runs: int, sleep: float, slots: int, drainers: int
) -> float | None:
    """Pure: how many times sooner `drainers` drainers of `slots` slots each can end `runs`
    runs of `sleep` seconds than one drainer alone, were a run to cost nothing beyond its
    command: both pay the start-up, and each runs its waves (a partial last one included)."""
    if not isinstance(startup, float):
        return None
    alone = math.ceil(runs / slots) * sleep
    together = math.ceil(runs / (slots * drainers)) * sleep
    return (startup + alone) / (startup + together)


def scale_out(runs: int, sleep: float, workers: int, admin_url: str, timeout: float) -> ScaleOut:
    """d: a --once pass alone, then beside `workers` workers started with it, each case on a
    fresh database; and how many of the workers came up."""
    result = ScaleOut("", "")
    for case in ("alone", "together"):
        with (
            tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
            bench_store.postgres_store(admin_url) as url,
        ):
            project = Path(tmp)
            bench_workers.inventory(project, runs, command=f"sleep {sleep}")
            if case == "alone":
                result.alone = attempt(
                    f"d. pass alone, {runs} x sleep {sleep}",
                    lambda: reconcile_once(
                        project, runs, timeout, "--concurrency", "8", "--state", url
                    ),
                )
                result.startup = median(
                    [
                        attempt(
                            "d. a pass with nothing to do",
                            lambda: noop_pass(
                                project, timeout, "--concurrency", "8", "--state", url
                            ),
                        )
                        for _ in range(3)
                    ]
                )
                continue
            procs: list[subprocess.Popen] = []
            logs = [project / f"worker-{i}.log" for i in range(workers)]
            pass_proc: subprocess.Popen | None = None
            try:
                # The workers run already (started together on the new database, where each
                # must come up), as long-lived workers do; the clock is the pass's, as alone.
                procs = [
                    bench_workers.start_worker(url, project, log=logs[i]) for i in range(workers)
                ]
                bench_workers.wait_until_up(url, procs)
                started = time.perf_counter()
                pass_proc = subprocess.Popen(
                    [sys.executable, "-m", "reconciler", "--once", "-q", "--format", "json"]
                    + ["--concurrency", "8", "--state", url],
                    cwd=project,
                    env=_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                try:
                    out, err = pass_proc.communicate(timeout=timeout)
                    wall: float | None = time.perf_counter() - started
                except subprocess.TimeoutExpired:
                    pass_proc.kill()
                    out, err = pass_proc.communicate()
                    wall = None
                # Whether the workers came up is judged whatever became of the pass.
                result.claimed = _claims_by_pid(url, [p.pid for p in procs])
                alive = [p.poll() is None for p in procs]
                result.up = sum(
                    1 for p, live in zip(procs, alive) if live or result.claimed.get(p.pid)
                )
                for p, live, log in zip(procs, alive, logs):
                    if not live:
                        note(f"worker {p.pid} exited {p.returncode}: {log.read_text()[-300:]}")
                result.together = _pass_result(wall, timeout, pass_proc.returncode, out, err, runs)
                note(f"d. pass beside {workers} workers: {result.together}")
            finally:
                if pass_proc is not None and pass_proc.poll() is None:
                    pass_proc.kill()
                    pass_proc.wait()
                bench_workers.stop_workers(procs)
    return result


def _pass_result(
    wall: float | None, timeout: float, code: int, out: str, err: str, runs: int
) -> float | str:
    """The pass's wall time, or why it has none (its output goes to stderr then)."""
    if wall is None:
        return f"> {timeout:g} s (timeout)"
    why = None
    if code != 0:
        why = f"error: --once beside workers exited {code}"
    else:
        counts = json.loads(out)["counts"]
        if counts != {"succeeded": runs}:
            why = f"error: the pass reported {counts}"
    if why is None:
        return wall
    note(f"{why}:\n{out[-1500:]}\n{err[-1500:]}")
    return why


def _claims_by_pid(url: str, pids: list[int]) -> dict[int, int]:
    """Runs claimed by each of `pids`: the owner a run records is `host:pid:token:...`."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        owners = conn.execute(
            "SELECT owner, count(*) FROM runs WHERE owner IS NOT NULL GROUP BY owner"
        ).fetchall()
    claimed = dict.fromkeys(pids, 0)
    for owner, count in owners:
        fields = owner.split(":")
        if len(fields) > 1 and fields[1].isdigit() and int(fields[1]) in claimed:
            claimed[int(fields[1])] += count
    return claimed


def rows_scale_out(quick: bool, admin_url: str) -> list[Row]:
    runs, sleep, workers = (40, 0.05, 1) if quick else (400, 0.2, 3)
    name = f"d. PostgreSQL, {runs} x sleep {sleep} on 8 machines"
    load = load1()
    try:
        _postgres(admin_url)
        result = scale_out(runs, sleep, workers, admin_url, 120 if quick else 600)
    except Exception as exc:  # noqa: BLE001 - reported as the row
        result = ScaleOut(_why(exc), _why(exc))
    wanted = (workers + 1) * 0.875  # 3.5x of an ideal 4x with three workers beside the pass
    up = result.up
    claimed = ", ".join(str(n) for n in (result.claimed or {}).values())
    return [
        Row(
            name,
            f"--once beside {_workers(workers)}",
            result.together,
            "--once alone",
            result.alone,
            ratio=ratio(result.alone, result.together),  # how many times sooner
            target=f">= {wanted:g}x sooner",
            check=at_least(wanted),
            load=load,
        ),
        Row(
            name,
            "estimate if runs cost nothing: start-up of a no-op --once",
            result.startup,
            ratio=ceiling(result.startup, runs, sleep, 8, workers + 1),
            load=load,
        ),
        Row(
            name,
            f"workers up (runs claimed: {claimed or '-'})",
            f"{up} of {workers}" if up is not None else "n/a",
            target="all",
            passed=None if up is None else up == workers,
            load=load,
        ),
    ]


def rows_workers(quick: bool, admin_url: str) -> list[Row]:
    """e: bench_workers' runs/s with 1, 2 (and 4) workers; each at least the previous."""
    runs = 40 if quick else 400
    counts = (1, 2) if quick else (1, 2, 4)
    name = f"e. bench_workers, {runs} x sleep 0.05"
    rows: list[Row] = []
    previous: float | str = ""
    try:
        _postgres(admin_url)
    except Unavailable as exc:
        return [Row(name, "runs/s", _why(exc), unit="runs/s", check=at_least(1.0))]
    before: int | None = None
    for workers in counts:
        load = load1()
        wall = attempt(
            f"{name}: {workers} workers", lambda: bench_workers.measure(workers, runs, 300)
        )
        rate = runs / wall if isinstance(wall, float) else wall
        rows.append(
            Row(
                name,
                _workers(workers),
                rate,
                _workers(before) if before else "",
                previous,
                unit="runs/s",
                ratio=ratio(rate, previous),
                target=">= 1x" if before else "",
                check=at_least(1.0) if before else None,
                load=load,
            )
        )
        previous, before = rate, workers
    return rows


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count > 1 else ''}"


def rows_store(quick: bool, admin_url: str) -> list[Row]:
    """f: client CPU per run of the engine's round path, the per-run path as reference; the
    three-transaction batch path under it, for information."""
    runs = 100 if quick else 1000
    repeat = 1 if quick else 3
    load = load1()
    results = bench_store.cpu_per_run_ms(runs, admin_url, repeat)
    small = bench_store.small_round_ms(runs, admin_url, repeat)
    rows = []
    median_of = f" (median of {repeat})" if repeat > 1 else ""
    workload = f"f. store CPU per run, {runs:,} runs"
    for backend, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        path = results[backend]
        note(
            f"f. {label}: round {path['round']}, batch {path['batch']}, "
            f"per-run {path['per-run']} (ms CPU per run), a round of 1 end + 1 claim "
            f"{small[backend]} (ms CPU per round)"
        )

        def against_per_run(measured: str, value: float | str, **target) -> Row:
            return Row(
                workload,
                f"{label}: {measured}",
                value,
                "per-run path",
                path["per-run"],
                unit="ms",
                ratio=ratio(value, path["per-run"]),
                load=load,
                **target,
            )

        rows += [
            against_per_run(
                f"round path{median_of}",
                path["round"],
                target=f"< {bench_store.CPU_TARGET_MS} ms",
                check=lambda r, v: v < bench_store.CPU_TARGET_MS,
            ),
            against_per_run("batch path, 3 transactions", path["batch"]),
            against_per_run("a pass's usual round, 1 end + 1 claim, per round", small[backend]),
        ]
    return rows


def _as_installed() -> None:
    """Every `reconcile` started here finds its modules compiled, as after `pip install` (which
    byte-compiles): with PYTHONDONTWRITEBYTECODE set (some sandboxes set it) an editable
    checkout recompiles ~175 modules at every start, ~0.16 s of CPU no user pays."""
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    package = Path(__file__).resolve().parent.parent / "reconciler"
    compileall.compile_dir(str(package), quiet=1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI's smoke run)")
    parser.add_argument("--venv", default="/tmp/bench-venv", help="venv of asyncssh and peers")
    parser.add_argument(
        "--postgres", default=DEFAULT_ADMIN_URL, help="the server to create databases on"
    )
    parser.add_argument("--only", help="comma-separated rows to run, of a,b,c,d,e,f (default: all)")
    args = parser.parse_args(argv)
    chosen = set((args.only or "abcdef").replace(",", ""))
    if not chosen <= set("abcdef"):
        parser.error(f"--only takes letters of a,b,c,d,e,f, got {args.only!r}")
    repeat = 1 if args.quick else 3
    _as_installed()
    started, load_before = time.perf_counter(), os.getloadavg()
    rows: list[Row] = []
    later: list[Callable[[], list[Row]]] = []

    def ssh_rows() -> list[Row]:
        measured, peers = rows_ssh(args.quick, args.venv, repeat)
        later.append(peers)
        return measured

    steps = {
        "a": ssh_rows,
        "b": lambda: rows_local(args.quick, repeat),
        "c": lambda: rows_linear(args.quick),
        "d": lambda: rows_scale_out(args.quick, args.postgres),
        "e": lambda: rows_workers(args.quick, args.postgres),
        "f": lambda: rows_store(args.quick, args.postgres),
    }
    for letter, step in steps.items():
        if letter in chosen:
            rows.extend(step())
    for step in later:
        rows.extend(step())
    rows = grouped(rows)
    load_after = os.getloadavg()
    print(
        f"issue 13 pipeline targets ({'quick' if args.quick else 'full'} sizes), "
        f"{os.cpu_count()} CPUs, load average {_loads(load_before)} at start, "
        f"{_loads(load_after)} at end; took {time.perf_counter() - started:.0f} s"
    )
    print(render(rows))
    for line in notes(rows):
        print(f"  {line}")
    verdicts = [row.verdict() for row in rows if row.check is not None or row.passed is not None]
    print(
        f"targets: {verdicts.count('ok')} ok, {verdicts.count('MISS')} MISS, "
        f"{verdicts.count('n/a')} n/a, {verdicts.count('error')} error"
        " (the load column is the 1-minute load average when the row started)"
    )
    broken = [row for row in rows if is_error(row.value) or is_error(row.reference)]
    return 1 if broken else 0


def _loads(loads: tuple[float, float, float]) -> str:
    return " ".join(f"{value:.1f}" for value in loads)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
