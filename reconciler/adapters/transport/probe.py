"""How loaded a machine is: its load average and memory, read from /proc.

One small command over the machine's pooled connection (ssh) or two file reads (local). Used
by `reconcile machines`, and meant for `strategy: one` (the least loaded reachable target).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROBE_COMMAND = "cat /proc/loadavg && grep -E '^(MemTotal|MemAvailable):' /proc/meminfo"


@dataclass(frozen=True)
class Load:
    """Load averages (1, 5, 15 min) and memory in KiB, as /proc reports them."""

    load1: float
    load5: float
    load15: float
    mem_total_kib: int | None = None
    mem_available_kib: int | None = None

    @property
    def mem_used_fraction(self) -> float | None:
        if not self.mem_total_kib or self.mem_available_kib is None:
            return None
        return 1 - self.mem_available_kib / self.mem_total_kib


def parse_probe(text: str) -> Load:
    """Pure: `/proc/loadavg` followed by `MemTotal:`/`MemAvailable:` lines, as a `Load`.
    Raises ValueError when the load average line is missing."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("no /proc/loadavg line")
    load = [float(x) for x in lines[0].split()[:3]]
    memory = {}
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        if rest.split() and rest.split()[0].isdigit():
            memory[name.strip()] = int(rest.split()[0])
    return Load(load[0], load[1], load[2], memory.get("MemTotal"), memory.get("MemAvailable"))


def local_probe(proc: str | Path = "/proc") -> Load:
    """The reconciler's own host, read directly; raises OSError or ValueError."""
    root = Path(proc)
    meminfo = [
        line
        for line in (root / "meminfo").read_text().splitlines()
        if line.startswith(("MemTotal:", "MemAvailable:"))
    ]
    return parse_probe("\n".join([(root / "loadavg").read_text().strip(), *meminfo]))
