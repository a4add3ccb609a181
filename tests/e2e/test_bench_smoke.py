"""Every benchmark in bench/ still runs: its quick form, as a subprocess, must print its table
and exit 0. The figures are not asserted (a busy CI host says little about speed); what this
catches is a benchmark that rotted (an API it calls changed) without anyone noticing.

bench/pipeline.py (issue 13's targets in one table) runs the quick sizes of bench_workers.py
and of bench_store_batches.py's measurement through their functions, so those two have no
smoke run of their own (COVERED); bench_ssh.py's smoke run leaves out `reconcile --once`,
which pipeline.py runs.

Each quick form talks only to 127.0.0.1 (sshd fixtures, the local PostgreSQL test server).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import clean_environment
from tests.support.integration import missing, require_binary
from tests.support.postgres import server_problem
from tests.support.sshd import require_sshd

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
# A quick form takes 0.3-7 s on an idle 2-core host, pipeline.py's 15-30 s; the bound only
# stops a hung bench.
TIMEOUT_S = 120


def _require_postgres() -> None:
    problem = server_problem()
    if problem is not None:
        missing(problem)


def _require_age() -> None:
    require_binary("age")
    require_binary("age-keygen")


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Bench:
    """How to smoke-run one benchmark: what it needs, and a line its table always prints."""

    requires: Callable[[], None]
    table_marker: str
    forbidden: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # after --quick
    rows: tuple[str, ...] = ()  # each must start a line of the output


def _require_sshd_and_postgres() -> None:
    require_sshd()
    _require_postgres()


BENCHES = {
    "run.py": Bench(_nothing, "store bookkeeping"),
    "bench_store.py": Bench(
        _require_postgres, "per-run bookkeeping, worst backend", forbidden=("skipped:",)
    ),
    "bench_age.py": Bench(_require_age, "worst targeted ratio"),
    "bench_ssh.py": Bench(
        require_sshd,
        "ControlMaster",
        forbidden=("error:",),
        # ansible and pyinfra come from a venv CI does not have (n/a there); locally they
        # would add 10 s for figures nobody reads here.
        args=("--only", "reconciler,fabric/run,fabric/conn,ControlMaster"),
    ),
    "bench_redact.py": Bench(_nothing, "worst with 20 secrets"),
    "console.py": Bench(_nothing, "web console, 2,000 runs", rows=("overview", "runs, first page")),
    "bench_cli.py": Bench(_require_age, "targets missed:", forbidden=("skipped:",)),
    "pipeline.py": Bench(
        _require_sshd_and_postgres,
        "targets: ",
        forbidden=("error:",),
        rows=tuple(f"{letter}. " for letter in "abcdef"),  # every target of issue 13
    ),
}
# Benchmarks whose quick form pipeline.py runs through their functions: a smoke run of their
# own would measure the same thing twice in CI.
COVERED = {
    "bench_workers.py": "pipeline.py row e runs bench_workers.measure at its quick sizes",
    "bench_store_batches.py": "pipeline.py row f measures the same batch and per-run paths",
}
# Helpers the benchmarks import, not benchmarks themselves.
LIBRARIES = {"__init__.py", "generate.py"}


def _scripts() -> list[str]:
    """The benchmarks in bench/ to smoke-run (a new one must get an entry in BENCHES)."""
    return sorted({path.name for path in BENCH.glob("*.py")} - LIBRARIES - set(COVERED))


def test_every_benchmark_in_bench_has_a_smoke_run():
    unknown = set(_scripts()) - set(BENCHES)
    assert unknown == set(), "give each benchmark a --quick form and an entry in BENCHES"
    gone = set(COVERED) - {path.name for path in BENCH.glob("*.py")}
    assert gone == set(), "COVERED names a benchmark that is no longer in bench/"


def test_benchmarks_name_no_host_but_loopback():
    """Benchmarks reach only 127.0.0.1: every address or host name in their source is it."""
    hosts = re.compile(
        r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\blocalhost\b|://(?:[\w.-]+@)?(?!127\.0\.0\.1)[\w.-]+[:/]"
    )
    found = {
        f"{path.name}: {match.group(0)}"
        for path in BENCH.glob("*.py")
        for match in hosts.finditer(path.read_text())
        if match.group(0) != "127.0.0.1"
    }
    assert found == set()


@pytest.mark.parametrize("script", _scripts())
def test_quick_benchmark_prints_its_table_and_exits_0(script):
    bench = BENCHES.get(script)
    assert bench is not None, f"{script}: add an entry to BENCHES"
    bench.requires()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *bench.args],
        cwd=BENCH.parent,
        env=clean_environment(None),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    took = time.monotonic() - started
    report = (
        f"{script} --quick: exit {proc.returncode} in {took:.1f} s\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    assert proc.returncode == 0, report
    assert bench.table_marker in proc.stdout, report
    assert "Traceback" not in proc.stderr, report
    for word in bench.forbidden:
        assert word not in proc.stdout, report
    lines = proc.stdout.splitlines()
    for row in bench.rows:
        assert any(line.startswith(row) for line in lines), report


def test_pipeline_table_says_ok_only_where_a_target_holds():
    """pipeline.py's verdicts, pure: a ratio over the target is MISS, a missing figure n/a or
    error (never ok), and a cut cell is printed whole under the table."""
    from bench.pipeline import Row, at_least, at_most, notes, render

    rows = [
        Row("a. w", "fast", 1.5, "floor", 1.0, ratio=1.5, target="<= 1.85x", check=at_most(1.85)),
        Row("a. w", "slow", 2.0, "floor", 1.0, ratio=2.0, target="<= 1.85x", check=at_most(1.85)),
        Row("d. w", "sooner", 4.0, "alone", 14.0, ratio=3.5, target=">= 3.5x", check=at_least(3.5)),
        Row("b. w", "gone", "n/a (no venv)", "floor", 1.0, target="<= 3x", check=at_most(3)),
        Row("b. w", "no floor", 1.0, "floor", "n/a (no venv)", target="<= 3x", check=at_most(3)),
        Row("c. w", "broke", "error: " + "x" * 60, "floor", 1.0, target="<= 3x", check=at_most(3)),
        Row("d. w", "workers up", "2 of 3", target="all", passed=False),
    ]
    assert [row.verdict() for row in rows] == ["ok", "MISS", "ok", "n/a", "n/a", "error", "MISS"]
    table = render(rows)
    assert len(table.splitlines()) == len(rows) + 2
    assert notes(rows) == ["c. w / broke: error: " + "x" * 60]


def test_pipeline_peers_measured_last_are_shown_under_their_row():
    """pipeline.py measures row a's peers after rows b-f (ansible-core's forks would load
    them); the table still shows each peer under the row whose floor it is compared with."""
    from bench.pipeline import Row, grouped, render

    measured = [
        Row("a. 200", "reconcile --once", 0.6),
        Row("a. 1,000", "reconcile --once", 2.0),
        Row("b. local", "reconcile --once", 1.3),
        Row("a. 200", "peer: fabric/run", 1.2),
        Row("a. 1,000", "peer: fabric/run", 3.5),
    ]
    shown = grouped(measured)
    assert [(row.workload, row.measured) for row in shown] == [
        ("a. 200", "reconcile --once"),
        ("a. 200", "peer: fabric/run"),
        ("a. 1,000", "reconcile --once"),
        ("a. 1,000", "peer: fabric/run"),
        ("b. local", "reconcile --once"),
    ]
    workloads = [line.split("  ")[0] for line in render(shown).splitlines()[2:]]
    assert workloads == ["a. 200", "", "a. 1,000", "", "b. local"]


def test_pipeline_scale_out_estimate_counts_whole_waves_and_the_start_up():
    """Row d's estimate, pure: 400 runs over 8 slots are 50 waves alone and 13 over 32 slots
    (the last one half full), so even free runs end at most 50/13 times sooner, and less
    the longer every pass takes to start and end."""
    from bench.pipeline import ceiling

    assert ceiling(0.0, 400, 0.2, 8, 4) == pytest.approx(50 / 13)
    assert ceiling(0.4, 400, 0.2, 8, 4) == pytest.approx(10.4 / 3.0)
    assert ceiling("n/a: no server", 400, 0.2, 8, 4) is None
