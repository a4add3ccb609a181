"""The C2SP/CCTV age conformance vectors (tests/vectors/age, with their LICENSE), one test per
vector file.

Each vector names the first stage that must fail (or `success`) and, for success and payload
failures, the SHA-256 of the plaintext a streaming decryptor releases before it stops. The
test drains `decrypt_chunks` so partially released plaintext can be hashed, and maps the
AgeError stage onto the vector's group. Where a vector passes a stage, the round trips of the
vector README are checked too: the parsed header re-serializes to the same bytes, and a
successful plaintext re-seals to the same payload under the same file key and nonce.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from pathlib import Path

import pytest

from reconciler.adapters.vault import age
from reconciler.adapters.vault.age import armor, b64, header, stream

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "age"
NOT_VECTORS = {"FORMAT.md", "LICENSE"}
KNOWN_KEYS = {
    "expect",
    "payload",
    "file key",
    "identity",
    "passphrase",
    "armored",
    "comment",
    "compressed",
}
GROUPS = {
    "armor": "armor failure",
    "header": "header failure",
    "no_match": "no match",
    "hmac": "HMAC failure",
    "payload": "payload failure",
}


def _vector_files() -> list[Path]:
    if not VECTORS.is_dir():
        return []
    return sorted(p for p in VECTORS.iterdir() if p.is_file() and p.name not in NOT_VECTORS)


def _load(path: Path) -> tuple[dict[str, list[str]], bytes]:
    raw = path.read_bytes()
    head, sep, body = raw.partition(b"\n\n")
    assert sep, f"{path.name}: no blank line after the vector header"
    meta: dict[str, list[str]] = {}
    for line in head.decode("ascii").split("\n"):
        key, _, value = line.partition(": ")
        meta.setdefault(key, []).append(value)
    compressed = meta.get("compressed")
    if compressed is not None:
        assert compressed == ["zlib"], f"{path.name}: unknown compression {compressed}"
        body = zlib.decompress(body)
    return meta, body


# Without the folder there is one placeholder case that skips (or fails under CI).
FILES = _vector_files() or [pytest.param(None, id="vectors-missing")]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_vector(path: Path | None):
    if path is None:
        reason = f"age test vectors not found at {VECTORS}"
        if os.environ.get("RECONCILER_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason + " (RECONCILER_REQUIRE_INTEGRATION=1: they may not be skipped)")
        pytest.skip(reason)
    meta, body = _load(path)
    unknown = set(meta) - KNOWN_KEYS
    if unknown:
        pytest.skip(f"unknown vector keys {sorted(unknown)}")
    (expect,) = meta["expect"]
    assert expect in {"success", *GROUPS.values()}, f"unknown expect value {expect!r}"
    comment = meta.get("comment", [""])[0]
    secrets = meta.get("identity", []) + meta.get("passphrase", [])

    identities = age.parse_identities("\n".join(meta["identity"])) if "identity" in meta else []
    identities += [age.scrypt_identity(p, max_work_factor=22) for p in meta.get("passphrase", [])]
    armored = meta.get("armored") == ["yes"]

    released = bytearray()
    try:
        for chunk in age.decrypt_chunks(body, identities, armored=armored):
            released += chunk
        got = "success"
    except age.AgeError as exc:
        got = GROUPS[exc.stage]
        message = str(exc)
        assert not any(secret in message for secret in secrets), "key material in the error"
        comment = f"{comment} (error: {message})"
    assert got == expect, f"{path.name}: {comment}"
    if "payload" in meta:
        assert hashlib.sha256(released).hexdigest() == meta["payload"][0], (
            f"{path.name}: released plaintext differs ({len(released)} bytes)"
        )

    # The all-or-nothing API (armor detected by itself) agrees, and releases nothing on error.
    try:
        whole = age.decrypt(body, identities)
    except age.AgeError as exc:
        assert GROUPS[exc.stage] == expect, f"decrypt(): {exc}"
    else:
        assert expect == "success" and whole == released

    # Round trips (README of the vectors): only for files that got past the stage in question.
    if armored and expect != "armor failure":
        binary = armor.dearmor(body)
        if binary:
            rearmored = armor.armor(binary)
            normalised = body.replace(b"\r\n", b"\n").strip()
            assert rearmored.strip() == normalised
    else:
        binary = body
    if expect not in ("armor failure", "header failure"):
        source = io.BytesIO(binary)
        parsed = header.parse(source)
        file_key = bytes.fromhex(meta["file key"][0])
        assert header.mac_input(parsed.stanzas) == parsed.mac_input
        serialized = parsed.mac_input + b" " + b64.encode(parsed.mac) + b"\n"
        assert binary.startswith(serialized)
        if expect == "success":
            nonce = source.read(stream.NONCE_SIZE)
            payload = binary[len(serialized) + stream.NONCE_SIZE :]
            assert stream.seal(stream.payload_key(file_key, nonce), released) == payload
