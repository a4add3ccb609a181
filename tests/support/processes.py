"""Reading the process table (/proc) of this host, which is also the target of the SSH
tests: whether a process still runs."""

from __future__ import annotations

from pathlib import Path


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a killed process whose parent died
    waits as a zombie until init reaps it: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids_in(path: Path) -> list[int]:
    """The process ids a task wrote to `path` (space separated)."""
    return [int(word) for word in path.read_text().split()]


__all__ = ["pids_in", "running"]
