"""What the SSH wrapper's markers on a target say (`transport.wrapper`), read by the tests."""

from __future__ import annotations

from pathlib import Path


def exited(markers: Path, run_id: int) -> bool:
    """Whether the wrapper of run `run_id` recorded its command's exit: a whole `NONCE CODE`
    line appended to `<id>.meta` with the nonce of its first line (an earlier invocation of
    the run id may have left its own exit line under it)."""
    try:
        lines = (markers / f"{run_id}.meta").read_text().split("\n")
    except OSError:
        return False
    whole = lines[:-1]  # the last piece has no newline: not (yet) a line
    if not whole:
        return False
    nonce = whole[0].split()[:1]
    return any(
        len(words := line.split()) == 2 and words[:1] == nonce and words[1].isdigit()
        for line in whole[1:]
    )


def any_exited(markers: Path) -> bool:
    """Whether any run under `markers` recorded its exit."""
    return any(exited(markers, int(meta.stem)) for meta in markers.glob("*.meta"))
