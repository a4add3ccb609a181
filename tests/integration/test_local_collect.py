"""The local transport reads a command's output in the run's own thread and waits for its shell
with a pidfd (polling only where the platform has none), and the gate shell becomes the
command's shell without another exec: the command still sees what `sh -c` gives it."""

from __future__ import annotations

import threading
import time

import pytest

from reconciler.adapters.transport import local
from reconciler.adapters.transport.local import LocalTransport
from reconciler.core.model import Machine
from reconciler.core.output import split_mark

BOX = Machine("box", "ops", transport="local")


@pytest.fixture(params=["pidfd", "polled"])
def transport(request, tmp_path, monkeypatch):
    if request.param == "polled":  # as on a kernel without pidfd_open
        monkeypatch.setattr(local, "_pidfd", lambda pid: None)
    elif local._pidfd(1) is None:
        pytest.skip("no pidfd_open on this platform")
    return LocalTransport(tmp_path / "runs")


def test_the_command_sees_a_fresh_sh_and_not_the_gate(transport):
    done = transport.run(
        BOX, 'echo "[$0][$#][${1-none}][${opened-unset}][$IFS]"; exit 7', {"IFS": ":"}, 10, 1
    )
    assert (done.exit_code, done.output) == (7, "[/bin/sh][0][none][unset][ \t\n]\n")


def test_a_missing_command_is_127_with_the_shells_message(transport):
    done = transport.run(BOX, "no-such-command-here", {}, 10, 8)
    assert done.exit_code == 127  # dash and bash word it differently; both name it
    assert "no-such-command-here" in done.output and "not found" in done.output


def test_stdin_is_empty_and_exit_codes_and_output_come_through(transport):
    done = transport.run(BOX, "cat; printf 'a\\nb'; echo err >&2; exit 3", {}, 10, 2)
    assert (done.exit_code, done.output, done.timed_out) == (3, "a\nberr\n", False)


def test_large_output_is_cut_to_its_tail(transport):
    done = transport.run(BOX, "head -c 200000 /dev/zero | tr '\\0' b; echo END", {}, 30, 3)
    dropped, tail = split_mark(done.output)
    assert tail.endswith("bbEND\n") and len(tail) == local.OUTPUT_TAIL
    assert dropped + len(tail) == 200000 + len("END\n")


def test_a_background_child_holding_the_pipe_is_read_for_the_grace_only(transport):
    started = time.monotonic()
    done = transport.run(BOX, "(sleep 1; echo late) & echo started", {}, 20, 4)
    assert (done.exit_code, done.output) == (0, "started\n")
    assert time.monotonic() - started < local.DRAIN_GRACE + 0.9  # never waited for `late`


def test_output_arriving_within_the_grace_is_kept(transport):
    done = transport.run(BOX, "(sleep 0.1; echo late) & echo started", {}, 20, 5)
    assert (done.exit_code, done.output) == (0, "started\nlate\n")


def test_a_timeout_kills_and_keeps_what_was_printed(transport):
    started = time.monotonic()
    done = transport.run(BOX, "echo before; sleep 30", {}, 0.5, 6)
    assert (done.exit_code, done.timed_out, done.output) == (None, True, "before\n")
    assert time.monotonic() - started < 5


def test_a_run_starts_no_thread(transport):
    seen: list[int] = []
    result: list = []
    runner = threading.Thread(
        target=lambda: result.append(transport.run(BOX, "sleep 0.3", {}, 10, 7))
    )
    before = threading.active_count()
    runner.start()
    deadline = time.monotonic() + 10
    while runner.is_alive() and time.monotonic() < deadline:
        seen.append(threading.active_count())
        runner.join(0.02)
    assert result and result[0].exit_code == 0
    assert max(seen) == before + 1  # the runner itself, no reader beside it
