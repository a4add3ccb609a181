"""The audit hash chain and its checkpoints (reconciler.adapters.audit.chain, .checkpoint): any edit,
deletion or reordering is found at the first bad entry; truncation only against a signed
checkpoint. Pure, except the key file tests (tmp_path)."""

from __future__ import annotations

import dataclasses
import os
import stat
from datetime import UTC, datetime
from enum import Enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.adapters.audit import checkpoint as cp
from reconciler.adapters.audit.chain import (
    GENESIS,
    Anchor,
    AuditEntry,
    AuditRecord,
    canonical,
    link,
    storable,
    verify,
)
from reconciler.adapters.vault import age


def records(n: int) -> list[AuditRecord]:
    return [
        AuditRecord(
            f"2024-05-01T12:00:{i:02d}.000000Z",
            "alice@host:1",
            "run.finished",
            {"run": i, "status": "failed", "note": "ünïcode"},
        )
        for i in range(n)
    ]


def chain(n: int = 6) -> list[AuditEntry]:
    return link(0, GENESIS, records(n))


def test_an_intact_chain_verifies_and_reports_its_head():
    entries = chain()
    verdict = verify(entries)
    assert verdict.ok and verdict.count == 6 and verdict.head == entries[-1].hash
    assert verdict.hashes[3] == entries[2].hash
    assert verify([]).ok and verify([]).head == GENESIS


def test_linking_continues_after_a_head():
    first = chain(3)
    more = link(3, first[-1].hash, records(2))
    assert [e.seq for e in more] == [4, 5] and more[0].prev == first[-1].hash
    assert verify(first + more).ok


def test_an_edited_entry_is_named():
    entries = chain()
    entries[2] = dataclasses.replace(entries[2], detail={**entries[2].detail, "status": "ok"})
    verdict = verify(entries)
    assert (verdict.ok, verdict.bad_seq, verdict.count) == (False, 3, 2)
    assert "audit entry 3" in verdict.problem and "edited" in verdict.problem


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link():
    entries = chain()
    edited = link(2, entries[1].hash, [dataclasses.replace(records(6)[2], actor="mallory")])[0]
    entries[2] = edited
    verdict = verify(entries)
    assert verdict.bad_seq == 4 and "does not link to entry 3" in verdict.problem


def test_a_deleted_entry_is_named_by_the_gap_it_leaves():
    entries = chain()
    del entries[3]
    verdict = verify(entries)
    assert verdict.bad_seq == 5 and "entry 4 is missing" in verdict.problem


def test_reordered_entries_are_found_at_the_first_moved_one():
    entries = chain()
    entries[2], entries[3] = entries[3], entries[2]
    assert verify(entries).bad_seq == 4  # stored order: seq 4 where 3 belongs
    # the same rows renumbered into place: their links still give them away
    swapped = [dataclasses.replace(entries[2], seq=3), dataclasses.replace(entries[3], seq=4)]
    verdict = verify(entries[:2] + swapped + entries[4:])
    assert verdict.bad_seq == 3


def test_truncation_is_invisible_to_the_chain_alone():
    entries = chain()
    verdict = verify(entries[:4])
    assert verdict.ok and verdict.count == 4  # only a checkpoint can tell (see below)


def test_a_chain_kept_after_a_prune_verifies_from_its_anchor():
    entries = chain()
    anchor = Anchor(2, entries[1].hash)
    assert verify(entries[2:], anchor).ok
    assert verify(entries[2:]).bad_seq == 3


def test_canonical_json_ignores_key_order_and_round_trips():
    assert canonical({"b": 1, "a": [1, {"d": None, "c": "é"}]}) == canonical(
        {"a": [1, {"c": "é", "d": None}], "b": 1}
    )
    assert canonical({"a": "é"}) == '{"a":"é"}'.encode()


class Colour(str, Enum):
    RED = "red"


def test_storable_values_are_plain_json_every_backend_keeps():
    moment = datetime(2024, 5, 1, tzinfo=UTC)
    assert storable({"a": ("x\x00y", Colour.RED, moment, float("nan"), 1.5, True, None)}) == {
        "a": ["x\ufffdy", "red", "2024-05-01T00:00:00+00:00", "nan", 1.5, True, None]
    }
    assert storable("\udcff") == "?"


@given(
    st.integers(min_value=0, max_value=7),
    st.sampled_from(["at", "actor", "action", "detail", "prev", "hash"]),
)
def test_any_single_field_edit_is_found_at_or_right_after_the_edited_entry(index, name):
    entries = chain(8)
    original = entries[index]
    value = {"forged": True} if name == "detail" else getattr(original, name) + "0"
    entries[index] = dataclasses.replace(original, **{name: value})
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.bad_seq in (original.seq, original.seq + 1)


# --- checkpoints ------------------------------------------------------------------------------------


def test_a_checkpoint_signs_count_and_head():
    key = cp.Ed25519PrivateKey.generate()
    signed = cp.sign(key, 6, "ab" * 32, "2024-05-01T12:00:00.000000Z")
    assert cp.signature_valid(signed)
    assert signed.public_key == cp.public_text(key)
    assert cp.Checkpoint.from_json(signed.to_json()) == signed
    for forged in (
        dataclasses.replace(signed, count=5),
        dataclasses.replace(signed, head="00"),
        dataclasses.replace(signed, public_key=cp.public_text(cp.Ed25519PrivateKey.generate())),
        dataclasses.replace(signed, signature="AAAA"),
    ):
        assert not cp.signature_valid(forged)


def test_the_key_derived_from_an_identity_is_stable_and_its_own():
    identity = age.generate_x25519()
    again = age.parse_identities(identity.to_bech32())[0]
    derived = cp.derive_from_identity(identity)
    assert cp.public_text(derived) == cp.public_text(cp.derive_from_identity(again))
    assert cp.public_text(derived) != cp.public_text(cp.derive_from_identity(age.generate_x25519()))
    assert cp.derive_from_identity(object()) is None


def test_the_key_file_is_created_private_once_and_reused(tmp_path):
    path = tmp_path / ".reconciler" / "audit.key"
    assert cp.signing_key([], path, create=False) is None
    created = cp.signing_key([], path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert cp.signing_key([], path).public == created.public
    assert cp.trusted([], path) == {created.public: f"key file {path}"}


def test_an_identity_takes_precedence_over_the_key_file(tmp_path):
    identity = age.generate_x25519()
    key = cp.signing_key([identity], tmp_path / "audit.key")
    assert key.public == cp.public_text(cp.derive_from_identity(identity))
    assert not (tmp_path / "audit.key").exists()


def test_a_damaged_key_file_is_an_input_error(tmp_path):
    path = tmp_path / "audit.key"
    path.write_text("not a key")
    with pytest.raises(cp.InputError):
        cp.signing_key([], path)


def test_reading_a_checkpoint_from_an_export_file(tmp_path):
    key = cp.Ed25519PrivateKey.generate()
    entries = chain(2)
    signed = cp.sign(key, 2, entries[-1].hash, "2024-05-01T12:00:00.000000Z")
    path = tmp_path / "export.jsonl.gz"
    with cp.open_text(path, "wt") as out:
        import json

        for entry in entries:
            out.write(json.dumps(entry.to_json()) + "\n")
        out.write(json.dumps(signed.to_json()) + "\n")
    found, lines = cp.read_checkpoint(path)
    assert found == signed and [AuditEntry.from_json(d) for d in lines] == entries
    (tmp_path / "empty").write_text("")
    with pytest.raises(cp.InputError):
        cp.read_checkpoint(tmp_path / "empty")
