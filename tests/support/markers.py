"""What the SSH wrapper's markers on a target say (`transport.wrapper`), read by the tests."""

from __future__ import annotations

from pathlib import Path


def exited(markers: Path, run_id: int) -> bool:
    """Whether the wrapper of run `run_id` recorded its command's exit: the whole `NONCE CODE`
    line appended to `<id>.meta` under its first line."""
    try:
        lines = (markers / f"{run_id}.meta").read_text().split("\n")
    except OSError:
        return False
    return len(lines) >= 3 and len(lines[1].split()) == 2 and lines[1].split()[1].isdigit()


def any_exited(markers: Path) -> bool:
    """Whether any run under `markers` recorded its exit."""
    return any(exited(markers, int(meta.stem)) for meta in markers.glob("*.meta"))
