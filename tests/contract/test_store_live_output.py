"""The output of running runs (migration 9, issue 16 §1): chunks appended by the run's holder
and read by followers on any connection, trimmed and dropped by the writer; on every backend."""

from __future__ import annotations

from reconciler.adapters.store.base import OutputChunk, OutputTrim


def _chunk(seq: int, start: int, body: str, run_id: int = 7, attempt: int = 1) -> OutputChunk:
    return OutputChunk(run_id, attempt, seq, start, body)


def test_chunks_written_by_the_holder_are_read_in_order_from_another_connection(store, open_handle):
    store.append_output([_chunk(1, 0, "one\n"), _chunk(2, 4, "twö\n")])
    reader = open_handle()
    got = reader.output_since(7, 1)
    assert [(c.seq, c.start, c.body) for c in got] == [(1, 0, "one\n"), (2, 4, "twö\n")]
    assert got[-1].end == 9  # UTF-8 bytes: ö is two
    assert [c.seq for c in reader.output_since(7, 1, after_seq=1)] == [2]
    assert reader.output_since(7, 2) == [] and reader.output_since(8, 1) == []


def test_a_chunk_written_twice_is_kept_once_and_trims_drop_the_oldest(store):
    store.append_output([_chunk(1, 0, "a\n"), _chunk(2, 2, "b\n")])
    store.append_output([_chunk(2, 2, "b\n"), _chunk(3, 4, "c\n")], [OutputTrim(7, 1, 1)])
    assert [c.body for c in store.output_since(7, 1)] == ["b\n", "c\n"]


def test_drop_forgets_every_attempt_of_the_runs_named_only(store):
    store.append_output([_chunk(1, 0, "x\n"), _chunk(1, 0, "y\n", attempt=2)])
    store.append_output([_chunk(1, 0, "other\n", run_id=8)])
    store.drop_output([7])
    assert store.output_since(7, 1) == [] and store.output_since(7, 2) == []
    assert [c.body for c in store.output_since(8, 1)] == ["other\n"]


def test_output_with_nul_and_lone_surrogates_is_stored_as_utf8(store):
    store.append_output([_chunk(1, 0, "a\x00b \udcff\n")])
    [got] = store.output_since(7, 1)
    assert got.body == "a\x00b ?\n"  # as `encode("utf-8", "replace")` gives it
