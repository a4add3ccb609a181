"""SSH throughput: trivial `echo ok` tasks over local sshd hosts, side by side, one table.

    python bench/bench_ssh.py                 # 200 tasks over 4 hosts, then 1,000 over 8
    python bench/bench_ssh.py --quick         # 20 over 1, then 40 over 2 (a smoke run)
    python bench/bench_ssh.py --only reconciler,asyncssh

Every tool runs the same commands against the same real OpenSSH daemons on 127.0.0.1 (the
fixture of the integration tests). Concurrency is the engine's: 16 commands at once in all,
at most 4 per host (`--concurrency 16`, `max_parallel: 4`), for every tool that has knobs.

- reconciler       SshTransport.run from a thread pool, as the engine calls it (in process)
- reconcile --once the CLI over an inventory of the same tasks (when `ssh` is wired)
- asyncssh floor   one connection per host, concurrent channels (in process)
- fabric/run       Fabric's own run() on one reused connection per host, one command at a
                   time per connection (in process)
- fabric/conn      Fabric with a new connection per command (in process)
- ControlMaster    OpenSSH `ssh` processes multiplexed over one master connection (a control
                   socket) per host, 4 at a time per host
- ansible          a playbook of the same commands, ansible-core defaults (forks 16)
- ansible+pipe     the same with pipelining (ControlPersist is ansible's default)
- pyinfra          a deploy of the same commands (--parallel 16)

asyncssh, ansible-core and pyinfra come from a separate venv (`--venv`, default
/tmp/bench-venv: `python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install asyncssh
ansible-core pyinfra`), so the project's own dependencies stay untouched; a tool that is not
installed is reported as n/a. Each tool gets at most `--timeout` seconds per workload.
Times are wall seconds including connecting; CLI tools include their interpreter's start.
Exit 1 when a tool that is installed failed (an `error:` cell): a broken bench shows.

Measured 2026-12-06 on the 2-core dev machine while other work ran (load average 8-14, so
+-25%; the floor itself moved 0.72-1.04 s), `reconciler` and `reconcile --once`, x floor,
before/after the one-channel fixes (no half-close, wrapper without wc/tail for short output),
same tree otherwise, two interleaved rounds:
    200 over 4:   reconciler 1.74, 2.15 -> 1.76, 2.04   reconcile --once 4.33, 6.06 -> 3.18, 5.09
    1,000 over 8: reconciler 1.63, 1.75 -> 1.40, 1.88   reconcile --once 3.52, 3.52 -> 2.58, 3.55
`reconcile --once` is far from the transport's cost: a cProfile of 200 over 4 (CLI of d6ca060) spent ~1.5 s
importing, ~1 s in 1,614 SQLite writes (0.7 s of them 402 audit appends), ~0.5 s loading
the inventory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.adapters.transport.ssh import SshTransport  # noqa: E402
from reconciler.core.redact import Secret  # noqa: E402
from tests.support.sshd import KeyPair, Sshd, generate_key  # noqa: E402

CONCURRENCY = 16
PER_HOST = 4
FLOOR = "asyncssh floor"
CONTROL_MASTER = "ControlMaster"


class NotAvailable(Exception):
    """The tool cannot run here (not installed, not wired): reported as n/a."""


@dataclass
class Workload:
    """`count` commands spread round-robin over `hosts` daemons."""

    count: int
    hosts: list[Sshd]
    key: KeyPair
    key_file: Path
    tmp: Path
    venv_python: Path
    timeout: float

    @property
    def per_host(self) -> int:
        return self.count // len(self.hosts)

    def label(self) -> str:
        return f"{self.count:,} over {len(self.hosts)}"


# ---------------------------------------------------------------------------- tools


def reconciler_transport(w: Workload) -> float:
    """SshTransport from a thread pool with the engine's limits (16 in all, 4 per host)."""
    transport = SshTransport(
        lambda machine: Secret(w.key.private), markers_dir=str(w.tmp / "markers")
    )
    machines = [d.machine(f"h{i}", max_parallel=PER_HOST) for i, d in enumerate(w.hosts)]
    slots = {m.name: threading.Semaphore(PER_HOST) for m in machines}

    def one(i: int) -> str:
        machine = machines[i % len(machines)]
        with slots[machine.name]:
            return transport.run(machine, "echo ok", {"RECONCILE_ATTEMPT": "1"}, 60, i).output

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            outputs = list(pool.map(one, range(w.count)))
    finally:
        transport.close()
    wall = time.perf_counter() - started
    assert outputs == ["ok\n"] * w.count, outputs[:3]
    return wall


def reconcile_once(w: Workload) -> float:
    """`reconcile --once --concurrency 16` over an inventory of the same tasks."""
    # A fresh project (and so a fresh store) per call: a second pass over the same store
    # would find every task done and run nothing.
    project = Path(tempfile.mkdtemp(prefix=f"project-{w.count}-", dir=w.tmp))
    inventory = project / "inventory"
    for folder in ("teams", "machines", "tasks/bench"):
        (inventory / folder).mkdir(parents=True, exist_ok=True)
    (inventory / "teams" / "bench.yaml").write_text("name: bench\n")
    # A key file on the reconciler's host is usable only where the settings grant it.
    (inventory / "reconciler.yaml").write_text(
        f"credentials: {{key_files: {{{json.dumps(str(w.key_file))}: [bench]}}}}\n"
    )
    for i, daemon in enumerate(w.hosts):
        (inventory / "machines" / f"h{i}.yaml").write_text(
            f"name: h{i}\nteam: bench\nhost: 127.0.0.1\nport: {daemon.port}\n"
            f"host_key: {daemon.host_key}\nkey_file: {w.key_file}\nmax_parallel: {PER_HOST}\n"
        )
    for i in range(w.count):
        (inventory / "tasks" / "bench" / f"t{i}.yaml").write_text(
            f"name: t{i}\nmachines: [h{i % len(w.hosts)}]\ncommand: echo ok\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "--once",
            "-q",
            "--format",
            "json",
            "--concurrency",
            str(CONCURRENCY),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=w.timeout,
    )
    wall = time.perf_counter() - started
    if "transport is not available" in proc.stdout + proc.stderr:
        raise NotAvailable("ssh transport not wired into the CLI yet")
    if proc.returncode != 0:
        raise RuntimeError(f"reconcile --once exited {proc.returncode}: {proc.stderr[-500:]}")
    counts = json.loads(proc.stdout)["counts"]
    assert counts == {"succeeded": w.count}, counts
    return wall


ASYNCSSH = """
import asyncio, json, sys, time
import asyncssh
job = json.loads(sys.stdin.read())
async def main():
    key = asyncssh.import_private_key(job["key"])
    started = time.perf_counter()
    conns = await asyncio.gather(*[asyncssh.connect(
        "127.0.0.1", port=p, username=job["user"], client_keys=[key], known_hosts=None,
        agent_path=None) for p in job["ports"]])
    slots = [asyncio.Semaphore(job["per_host"]) for _ in conns]
    async def one(i):
        async with slots[i % len(conns)]:
            done = await conns[i % len(conns)].run("echo ok", check=True)
            assert done.stdout == "ok\\n"
    await asyncio.gather(*[one(i) for i in range(job["count"])])
    wall = time.perf_counter() - started
    for conn in conns:
        conn.close()
    print(wall)
asyncio.run(main())
"""


def asyncssh_floor(w: Workload) -> float:
    """Raw asyncssh: one connection per host, concurrent channels (4 per host)."""
    job = {
        "key": w.key.private,
        "user": w.hosts[0].machine().user,
        "count": w.count,
        "per_host": PER_HOST,
        "ports": [d.port for d in w.hosts],
    }
    out = _venv(w, ["-c", ASYNCSSH], "asyncssh", stdin=json.dumps(job))
    return float(out.strip().splitlines()[-1])


def fabric_reused(w: Workload) -> float:
    """Fabric's own `run()` on one reused connection per host (the usual way to use it), one
    command at a time per connection: concurrent `run()`s on one Fabric connection fail here
    (paramiko reports `unimplemented` and exit -1)."""
    import fabric
    import paramiko

    key = paramiko.Ed25519Key.from_private_key(io.StringIO(w.key.private))
    user = w.hosts[0].machine().user
    conns = [
        fabric.Connection(
            "127.0.0.1",
            user=user,
            port=d.port,
            connect_kwargs={"pkey": key, "allow_agent": False, "look_for_keys": False},
        )
        for d in w.hosts
    ]
    slots = [threading.Lock() for _ in w.hosts]

    def one(i: int) -> str:
        host = i % len(w.hosts)
        with slots[host]:
            return conns[host].run("echo ok", hide=True).stdout

    started = time.perf_counter()
    try:
        for conn in conns:
            conn.open()
            conn.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            outputs = list(pool.map(one, range(w.count)))
    finally:
        for conn in conns:
            conn.close()
    wall = time.perf_counter() - started
    assert outputs == ["ok\n"] * w.count
    return wall


def fabric_per_command(w: Workload) -> float:
    """Fabric's `Connection(...).run()` with a new connection for every command."""
    import fabric
    import paramiko

    key = paramiko.Ed25519Key.from_private_key(io.StringIO(w.key.private))
    user = w.hosts[0].machine().user
    slots = [threading.Semaphore(PER_HOST) for _ in w.hosts]

    def one(i: int) -> str:
        host = i % len(w.hosts)
        with slots[host]:
            with fabric.Connection(
                "127.0.0.1",
                user=user,
                port=w.hosts[host].port,
                connect_kwargs={"pkey": key, "allow_agent": False, "look_for_keys": False},
            ) as conn:
                return conn.run("echo ok", hide=True).stdout

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        outputs = list(pool.map(one, range(w.count)))
    wall = time.perf_counter() - started
    assert outputs == ["ok\n"] * w.count
    return wall


def control_master(w: Workload) -> float:
    """OpenSSH's own client multiplexing: one master connection per host (`ControlMaster`,
    a control socket per host), then every command a fresh `ssh -S socket` process that
    opens a channel on it, 4 at a time per host. The masters' start is timed too."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise NotAvailable("no OpenSSH client (ssh) on PATH")
    folder = Path(tempfile.mkdtemp(prefix="cm-", dir=w.tmp))
    # Control sockets must fit in sun_path (108 bytes): short names in a short directory.
    sockets = Path(tempfile.mkdtemp(prefix="bench-cm-"))
    known = folder / "known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{d.port} {d.host_key}\n" for d in w.hosts))
    user = w.hosts[0].machine().user
    common = [
        "-F",
        "/dev/null",
        "-i",
        str(w.key_file),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "LogLevel=ERROR",
        "-l",
        user,
    ]

    def target(host: int) -> list[str]:
        return ["-S", str(sockets / f"h{host}"), "-p", str(w.hosts[host].port), "127.0.0.1"]

    slots = [threading.Semaphore(PER_HOST) for _ in w.hosts]

    def one(i: int) -> str:
        host = i % len(w.hosts)
        with slots[host]:
            proc = subprocess.run(
                [ssh, *common, "-o", "ControlMaster=no", *target(host), "echo ok"],
                capture_output=True,
                text=True,
                timeout=w.timeout,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"ssh exited {proc.returncode}: {proc.stderr[-300:]}")
        return proc.stdout

    started = time.perf_counter()
    masters: list[int] = []
    try:
        for host in range(len(w.hosts)):
            # -f: ssh forks into the background once authenticated, so the socket is ready.
            subprocess.run(
                [ssh, *common, "-M", "-N", "-f", "-o", "ControlPersist=yes", *target(host)],
                check=True,
                capture_output=True,
                timeout=w.timeout,
            )
            masters.append(host)
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            outputs = list(pool.map(one, range(w.count)))
        wall = time.perf_counter() - started
    finally:
        for host in masters:
            subprocess.run(
                [ssh, *common, "-O", "exit", *target(host)], capture_output=True, timeout=30
            )
        shutil.rmtree(sockets, ignore_errors=True)
    assert outputs == ["ok\n"] * w.count, outputs[:3]
    return wall


def ansible(pipelining: bool) -> Callable[[Workload], float]:
    def run(w: Workload) -> float:
        """ansible-playbook: one play over the hosts, `count / hosts` command tasks."""
        folder = w.tmp / f"ansible-{w.count}-{int(pipelining)}"
        folder.mkdir()
        user = w.hosts[0].machine().user
        (folder / "hosts.ini").write_text(
            "[bench]\n"
            + "".join(
                f"h{i} ansible_host=127.0.0.1 ansible_port={d.port} ansible_user={user} "
                f"ansible_ssh_private_key_file={w.key_file}\n"
                for i, d in enumerate(w.hosts)
            )
            + "[bench:vars]\nansible_python_interpreter=/usr/bin/python3\n"
        )
        (folder / "play.yml").write_text(
            "- hosts: bench\n  gather_facts: false\n  tasks:\n"
            + "    - command: echo ok\n" * w.per_host
        )
        env = {
            **os.environ,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_FORKS": str(CONCURRENCY),
            "ANSIBLE_HOME": str(folder / "home"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(folder / "cp"),
            "ANSIBLE_LOCAL_TEMP": str(folder / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "True" if pipelining else "False",
        }
        started = time.perf_counter()
        out = _venv(
            w,
            ["-i", "hosts.ini", "play.yml"],
            "ansible",
            cwd=folder,
            env=env,
            tool=_venv_bin(w, "ansible-playbook"),
        )
        wall = time.perf_counter() - started
        assert f"ok={w.per_host}" in out and "failed=0" in out, out[-800:]
        return wall

    return run


def pyinfra(w: Workload) -> float:
    """pyinfra: a deploy of `count / hosts` shell operations per host, --parallel 16."""
    folder = w.tmp / f"pyinfra-{w.count}"
    folder.mkdir()
    user = w.hosts[0].machine().user
    hosts = [
        (
            f"h{i}",
            {
                "ssh_hostname": "127.0.0.1",
                "ssh_port": d.port,
                "ssh_user": user,
                "ssh_key": str(w.key_file),
                "ssh_strict_host_key_checking": "off",
                "ssh_known_hosts_file": "/dev/null",
            },
        )
        for i, d in enumerate(w.hosts)
    ]
    (folder / "inventory.py").write_text(f"bench = {hosts!r}\n")
    (folder / "deploy.py").write_text(
        textwrap.dedent(f"""
        from pyinfra.operations import server
        for i in range({w.per_host}):
            server.shell(name=f"echo {{i}}", commands=["echo ok"])
        """)
    )
    started = time.perf_counter()
    _venv(
        w,
        ["inventory.py", "deploy.py", "-y", "--parallel", str(CONCURRENCY)],
        "pyinfra",
        cwd=folder,
        tool=_venv_bin(w, "pyinfra"),
    )
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- plumbing


def _venv_bin(w: Workload, name: str) -> Path:
    return w.venv_python.parent / name


def _venv(
    w: Workload,
    args: list[str],
    module: str,
    *,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict | None = None,
    tool: Path | None = None,
) -> str:
    """Run a tool of the comparison venv; NotAvailable when it is not installed there."""
    if not w.venv_python.exists():
        raise NotAvailable(f"no venv at {w.venv_python.parent.parent}")
    if tool is None:
        check = subprocess.run([str(w.venv_python), "-c", f"import {module}"], capture_output=True)
        if check.returncode != 0:
            raise NotAvailable(f"{module} not installed in the venv")
        command = [str(w.venv_python), *args]
    else:
        if not tool.exists():
            raise NotAvailable(f"{tool.name} not installed in the venv")
        command = [str(tool), *args]
    proc = subprocess.run(
        command, input=stdin, cwd=cwd, env=env, capture_output=True, text=True, timeout=w.timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{command[0]} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-800:]}"
        )
    return proc.stdout


TOOLS: dict[str, Callable[[Workload], float]] = {
    "reconciler": reconciler_transport,
    "reconcile --once": reconcile_once,
    FLOOR: asyncssh_floor,
    "fabric/run": fabric_reused,
    "fabric/conn": fabric_per_command,
    CONTROL_MASTER: control_master,
    "ansible": ansible(False),
    "ansible+pipe": ansible(True),
    "pyinfra": pyinfra,
}


def measure(tool: Callable[[Workload], float], w: Workload) -> float | str:
    """Seconds, or why there is no number."""
    try:
        return tool(w)
    except NotAvailable as exc:
        return f"n/a ({exc})"
    except subprocess.TimeoutExpired:
        return f"> {w.timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - a broken tool is a row of the table, not a crash
        return f"error: {str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__}"


def table(results: dict[str, dict[str, float | str]], labels: list[str]) -> str:
    """Pure: wall time, runs/s and the ratio to the asyncssh floor, per tool and workload."""
    counts = {label: int(label.split()[0].replace(",", "")) for label in labels}
    head = f"{'tool':<18}" + "".join(
        f"{label + ': s':>17}{'runs/s':>9}{'x floor':>9}" for label in labels
    )
    lines = [head, "-" * len(head)]
    for tool, row in results.items():
        cells = []
        for label in labels:
            value, floor = row.get(label), results.get(FLOOR, {}).get(label)
            if isinstance(value, float):
                ratio = f"{value / floor:.2f}" if isinstance(floor, float) else "-"
                cells.append(f"{value:>17.2f}{counts[label] / value:>9.0f}{ratio:>9}")
            else:
                cells.append(f"{str(value)[:33]:>35}")
        lines.append(f"{tool:<18}" + "".join(cells))
    return "\n".join(lines)


@contextmanager
def lab(hosts: int, venv: str, timeout: float) -> Iterator[Callable[[int, int], Workload]]:
    """Start `hosts` sshd daemons on 127.0.0.1 with one client key; yields `workload(count,
    hosts)`, the workload of `count` commands over the first `hosts` daemons. Everything is
    stopped and removed afterwards."""
    key = generate_key()
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        key_file = root / "id_bench"
        key_file.write_text(key.private)
        key_file.chmod(0o600)
        daemons = []
        for i in range(hosts):
            daemon = Sshd(root / f"sshd{i}", [key.public]).start()
            stack.callback(daemon.stop)
            daemons.append(daemon)

        def workload(count: int, used: int) -> Workload:
            return Workload(
                count,
                daemons[:used],
                key,
                key_file,
                root,
                Path(venv) / "bin" / "python",
                timeout,
            )

        yield workload


def failed(value: float | str) -> bool:
    """A cell that says an installed tool broke (not n/a, not a timeout)."""
    return str(value).startswith("error:")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 over 1, then 40 over 2")
    parser.add_argument("--only", help="comma-separated tool names (default: all)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per tool and size")
    parser.add_argument("--venv", default="/tmp/bench-venv", help="venv of the other tools")
    args = parser.parse_args()
    sizes = [(20, 1), (40, 2)] if args.quick else [(200, 4), (1000, 8)]
    names = args.only.split(",") if args.only else list(TOOLS)
    unknown = set(names) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(sorted(unknown))}; known: {', '.join(TOOLS)}")
    if args.only and FLOOR not in names:
        names.append(FLOOR)  # the ratios need it
    results: dict[str, dict[str, float | str]] = {name: {} for name in names}
    labels = []
    with lab(max(h for _, h in sizes), args.venv, args.timeout) as workload:
        for count, hosts in sizes:
            work = workload(count, hosts)
            labels.append(work.label())
            for name in names:
                results[name][work.label()] = measure(TOOLS[name], work)
                print(
                    f"  {name:<18} {work.label():<12} {results[name][work.label()]}",
                    file=sys.stderr,
                    flush=True,
                )
    print(table(results, labels))
    return 1 if any(failed(v) for row in results.values() for v in row.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
