"""The offsets a follower of a run's output works with (issue 16 §1): what of a kept tail it
has not shown yet, and the SSH wrapper's answer to a read of a running task's output."""

from __future__ import annotations

from reconciler.adapters.transport.wrapper import parse_read
from reconciler.core.output import cap, stream_length, unseen, with_mark


def test_unseen_is_the_rest_after_the_bytes_shown():
    assert unseen("one\ntwo\n", 0) == "one\ntwo\n"
    assert unseen("one\ntwo\n", 4) == "two\n"
    assert unseen("one\ntwo\n", 8) == ""


def test_unseen_counts_bytes_of_utf8_and_the_dropped_head():
    text = with_mark(10, "é\nz\n")  # 10 bytes dropped, then 5 bytes kept
    assert stream_length(text) == 15
    assert unseen(text, 13) == "z\n"
    assert unseen(text, 11) == "\nz\n"  # a cut inside é moves to the next character


def test_unseen_marks_what_was_dropped_before_the_reader_saw_it():
    text = with_mark(20, "tail\n")
    assert unseen(text, 3) == with_mark(17, "tail\n")
    assert unseen(text, 0) == text
    kept = cap("x" * 100 + "tail\n", 60)  # cut by the 64 KiB rule, here 60 bytes
    assert unseen(kept, 0) == kept and unseen(kept, 0).endswith("tail\n")


def test_parse_read_gives_the_offset_and_the_bytes():
    assert parse_read(b"12\nabc\n") == (12, b"abc\n")
    assert parse_read(b"0\n") == (0, b"")
    assert parse_read(b"") is None
    assert parse_read(b"none\n") is None
