"""A throwaway PostgreSQL cluster of the test's own, to crash and restart at will.

`Cluster.create()` runs `initdb` (as the `postgres` OS user: the server refuses to run as
root) into a fresh directory and starts it on a free 127.0.0.1 port with trust auth and no
fsync (nothing here must survive a power cut, and it keeps the test fast). `restart()` is
`pg_ctl restart -m immediate`: every backend is killed without a checkpoint, the way a crash
and a supervisor's restart look to clients, and crash recovery runs at start. Waits are
pg_ctl's own `-w` (it polls the server's readiness), never sleeps. `destroy()` stops it and
removes the directory. Skipped (failed in CI) without the server binaries or the user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.integration import missing
from tests.support.sshd import free_port

OS_USER = "postgres"


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


class Cluster:
    """One PostgreSQL server in a temporary directory, owned by the `postgres` OS user."""

    def __init__(self, bin_dir: str, root: Path, port: int):
        self.bin, self.root, self.port = bin_dir, root, port
        self.data, self.log = root / "data", root / "server.log"

    @classmethod
    def create(cls) -> Cluster:
        bin_dir = _bin_dir()
        if bin_dir is None:
            missing("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
        try:
            user = pwd.getpwnam(OS_USER)
        except KeyError:
            missing(f"there is no '{OS_USER}' OS user to run a throwaway cluster as")
        if os.geteuid() != 0:
            missing("a throwaway cluster is created as root, then run as 'postgres'")
        root = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
        os.chown(root, user.pw_uid, user.pw_gid)
        cluster = cls(bin_dir, root, free_port())
        cluster._as_postgres(
            "initdb",
            "-D",
            str(cluster.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        cluster._as_postgres(
            "pg_ctl",
            "-D",
            str(cluster.data),
            "-l",
            str(cluster.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {cluster.port} -c listen_addresses=127.0.0.1 "
            f"-k {root} -c fsync=off -c full_page_writes=off",
            "start",
        )
        return cluster

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def restart(self) -> None:
        """Kill every backend at once (`-m immediate`) and start again; returns once the
        server accepts connections (after crash recovery)."""
        self._as_postgres(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-m",
            "immediate",
            "-w",
            "-t",
            "60",
            "restart",
        )

    def stop(self) -> None:
        """Kill every backend at once (`-m immediate`) and leave the server down: from here on
        a connection is refused."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        try:
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except AssertionError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)

    def _as_postgres(self, tool: str, *args: str) -> None:
        proc = subprocess.run(
            [os.path.join(self.bin, tool), *args],
            user=OS_USER,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, (
            f"{tool} {' '.join(args)}: exit {proc.returncode}\n"
            f"{proc.stdout}{proc.stderr}\n{self.log_text()}"
        )

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


__all__ = ["Cluster"]
