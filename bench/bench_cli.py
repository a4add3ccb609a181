"""How fast `reconcile` starts, measured as whole processes, and `vault` against `age`.

    python bench/bench_cli.py            (startup: median of 9 runs; vault: 64 MiB, best of 3)
    python bench/bench_cli.py --quick    (3 runs, a 1 MiB file, targets not enforced)

Each row runs `python -m reconciler ...` as a fresh child process, as a user does: the
interpreter's start, every import the command makes, its work and its exit. Wall seconds with
time.perf_counter around the child; peak memory is the child's own maximum RSS (os.wait4).
A warm-up run before each row compiles the bytecode, as a user's second start finds it.
`vault decrypt`/`encrypt` of a file are compared with `age -d`/`age -e` of the same file, also
as whole processes. Targets (issue 14): `--help`, `validate`, `vault` and `diff` start in
under 0.15 s; vault decrypt and encrypt within 2x of age and under 64 MiB of memory at any
size. Exit 1 when a target is missed (never with --quick).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STARTUP_TARGET_S = 0.15
AGE_RATIO_TARGET = 2.0
VAULT_MEMORY_TARGET_MIB = 64.0


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    mib: float
    cpu: float
    peer: str = ""
    peer_seconds: float | None = None
    peer_mib: float | None = None
    peer_cpu: float | None = None
    target: str = ""
    met: bool = True


def _child(argv: list[str], cwd: Path, stdin: Path | None = None) -> tuple[float, float, float]:
    """Run `argv` once; its wall seconds, peak RSS in MiB and CPU seconds (user + system:
    what the process itself cost, less disturbed than wall time by a busy host). A failure
    stops the bench."""
    env = _plain_env()
    with (
        open(stdin or os.devnull, "rb") as source,
        tempfile.TemporaryFile() as err,
        open(os.devnull, "wb") as out,
    ):
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=source, stdout=out, stderr=err)
        # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the max of all).
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed:\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def _measure(
    argv: list[str], cwd: Path, runs: int, pick=statistics.median
) -> tuple[float, float, float]:
    """`pick` of the wall and of the CPU times over `runs` runs (one warm-up run first), and
    the peak RSS."""
    _child(argv, cwd)  # warm the page cache and .pyc files: a user's second start
    results = [_child(argv, cwd) for _ in range(runs)]
    return (
        pick(w for w, _, _ in results),
        max(m for _, m, _ in results),
        pick(c for _, _, c in results),
    )


def reconcile(*words: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *words]


def startup_rows(root: Path, runs: int) -> list[Row]:
    """`--help`, `validate` of a scaffolded inventory, `vault` (help and keygen), `diff`."""
    project = root / "project"
    subprocess.run(
        reconcile("init", str(project)), check=True, capture_output=True, env=_plain_env()
    )
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "scaffold")
    _git(project, "commit", "-q", "--allow-empty", "-m", "nothing")
    commands = {
        "--help": ["--help"],
        "validate": ["validate"],
        "vault --help": ["vault", "--help"],
        "vault keygen": ["vault", "keygen"],
        "diff --help": ["diff", "--help"],
        "diff HEAD~1": ["diff", "HEAD~1"],
    }
    rows = []
    for name, words in commands.items():
        seconds, mib, cpu = _measure(reconcile(*words), project, runs)
        target = name != "diff HEAD~1"  # a real diff reads two revisions from git: info
        rows.append(
            Row(
                f"reconcile {name}",
                seconds,
                mib,
                cpu,
                target=f"< {STARTUP_TARGET_S} s" if target else "info",
                met=not target or seconds < STARTUP_TARGET_S,
            )
        )
    return rows


def vault_rows(root: Path, mib: int, runs: int) -> list[Row]:
    """`vault encrypt`/`decrypt` of an `mib` MiB file against `age -e`/`age -d`."""
    age_bin, keygen_bin = shutil.which("age"), shutil.which("age-keygen")
    if not age_bin or not keygen_bin:
        print("skipped: vault rows (the age binary is not installed)", file=sys.stderr)
        return []
    key = root / "key.txt"
    subprocess.run([keygen_bin, "-o", str(key)], check=True, capture_output=True)
    public = next(
        line.split(": ", 1)[1] for line in key.read_text().splitlines() if "public key" in line
    )
    plain, sealed, out = root / "plain", root / "sealed.age", root / "out"
    with plain.open("wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(1 << 20))
    subprocess.run([age_bin, "-r", public, "-o", str(sealed), str(plain)], check=True)
    cases = {
        "vault decrypt": (
            reconcile("vault", "decrypt", "-i", str(key), "-o", str(out), str(sealed)),
            [age_bin, "-d", "-i", str(key), "-o", str(out), str(sealed)],
            "age -d",
        ),
        "vault encrypt": (
            reconcile("vault", "encrypt", "-r", public, "-o", str(out), str(plain)),
            [age_bin, "-e", "-r", public, "-o", str(out), str(plain)],
            "age -e",
        ),
    }
    rows = []
    for name, (ours, theirs, peer) in cases.items():
        seconds, peak, cpu = _measure(ours, root, runs, pick=min)
        peer_seconds, peer_peak, peer_cpu = _measure(theirs, root, runs, pick=min)
        ratio = seconds / peer_seconds
        rows.append(
            Row(
                f"reconcile {name} {mib} MiB",
                seconds,
                peak,
                cpu,
                peer,
                peer_seconds,
                peer_peak,
                peer_cpu,
                f"<= {AGE_RATIO_TARGET:g}x, < {VAULT_MEMORY_TARGET_MIB:g} MiB",
                ratio <= AGE_RATIO_TARGET and peak < VAULT_MEMORY_TARGET_MIB,
            )
        )
    return rows


def _git(cwd: Path, *words: str) -> None:
    env = {
        **_plain_env(),
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    subprocess.run(["git", *words], cwd=cwd, env=env, check=True, capture_output=True)


# Where the children keep their compiled bytecode (set by `main`: inside the bench's
# temporary folder, so that nothing is left in the checkout).
_PYCACHE: Path | None = None


def _plain_env() -> dict[str, str]:
    """The children's environment: no RECONCILE_* setting, this checkout on the path, and
    bytecode cached as on a user's machine (pip compiles it when it installs; the warm-up run
    writes it here). A PYTHONDONTWRITEBYTECODE in the caller's environment would have every
    start compile every module of reconciler again: 0.03-0.04 s more for `validate`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECONCILE_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPATH"] = str(REPO)
    if _PYCACHE is not None:
        env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
    return env


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, help="size of the vault file (default 64)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 runs, a 1 MiB vault file, exit 0 whatever the figures (CI's smoke run)",
    )
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 9
    mib = args.mib or (1 if args.quick else 64)
    global _PYCACHE
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        root = Path(tmp)
        _PYCACHE = root / "pycache"
        rows = startup_rows(root, runs) + vault_rows(root, mib, 1 if args.quick else 3)
    print(f"reconcile as whole processes (startup: median of {runs}; vault: best of runs)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"{'command':<32} {'seconds':>7} {'cpu s':>6} {'MiB':>6}  {'peer':<6} {'seconds':>7} "
        f"{'cpu s':>6} {'MiB':>6} {'ratio':>6}  target"
    )
    for row in rows:
        peer = (
            f"{row.peer:<6} {row.peer_seconds:>7.3f} {row.peer_cpu:>6.3f} {row.peer_mib:>6.1f} "
            f"{row.seconds / row.peer_seconds:>5.2f}x"
            if row.peer_seconds
            else f"{'':<6} {'':>7} {'':>6} {'':>6} {'':>6}"
        )
        verdict = "" if row.target == "info" else (" ok" if row.met else " MISSED")
        print(
            f"{row.name:<32} {row.seconds:>7.3f} {row.cpu:>6.3f} {row.mib:>6.1f}  {peer}  "
            f"{row.target}{verdict}"
        )
    missed = [row.name for row in rows if not row.met]
    print(f"targets missed: {', '.join(missed) if missed else 'none'}")
    # A quick run only proves the bench still works.
    return 0 if args.quick or not missed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
