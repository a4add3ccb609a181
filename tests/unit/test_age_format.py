"""Round trips and error paths of the age implementation (the vectors only test decryption)."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters.vault import age
from reconciler.adapters.vault.age import armor, b64, bech32, header, stream

CHUNK = 64 * 1024
# Known answers from the age specification (c2sp.org/age).
SPEC_X25519_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_X25519_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
SPEC_PQ_IDENTITY = "AGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR"


def _openssh_private(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def _openssh_public(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key():
    return ed25519.Ed25519PrivateKey.generate()


def _pair(kind: str, rsa_key, ed_key):
    """(recipient, identities) for each recipient type."""
    if kind == "x25519":
        identity = age.generate_x25519()
        return age.parse_recipient(identity.recipient().to_bech32()), [identity]
    if kind == "hybrid":
        identity = age.parse_identities(SPEC_PQ_IDENTITY)[0]
        return age.parse_recipient(identity.recipient().to_bech32()), [identity]
    if kind == "scrypt":
        return (
            age.scrypt_recipient("correct horse", work_factor=10),
            [age.scrypt_identity("correct horse")],
        )
    if kind == "ssh-ed25519":
        return (
            age.parse_recipient(_openssh_public(ed_key) + " me@host"),
            age.parse_identities(_openssh_private(ed_key)),
        )
    if kind == "ssh-rsa":
        return (
            age.parse_recipient(_openssh_public(rsa_key)),
            age.parse_identities(_openssh_private(rsa_key)),
        )
    raise AssertionError(kind)


KINDS = ["x25519", "hybrid", "scrypt", "ssh-ed25519", "ssh-rsa"]
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7]


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_every_recipient_type_round_trips(kind, armored, rsa_key, ed_key):
    recipient, identities = _pair(kind, rsa_key, ed_key)
    plaintext = os.urandom(1000)
    data = age.encrypt(plaintext, [recipient], armor=armored)
    assert age.is_armored(data) == armored
    assert age.decrypt(data, identities) == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_chunk_boundaries_round_trip_and_have_the_expected_layout(size):
    identity = age.generate_x25519()
    plaintext = os.urandom(size)
    data = age.encrypt(plaintext, [identity.recipient()])
    assert age.decrypt(data, [identity]) == plaintext
    chunks = max(1, -(-size // CHUNK))  # an empty payload is one empty final chunk
    parsed = header.parse(io.BytesIO(data))
    head = len(parsed.mac_input) + 1 + 43 + 1
    assert len(data) == head + stream.NONCE_SIZE + size + 16 * chunks


def test_several_recipients_each_open_the_file(rsa_key, ed_key):
    pairs = [_pair(kind, rsa_key, ed_key) for kind in ("x25519", "ssh-ed25519", "ssh-rsa")]
    second = age.generate_x25519()
    data = age.encrypt(b"shared secret", [p[0] for p in pairs] + [second.recipient()])
    assert len(header.parse(io.BytesIO(data)).stanzas) == 4
    for _, identities in pairs + [(None, [second])]:
        assert age.decrypt(data, identities) == b"shared secret"
    # All identities at once, in any order, also work.
    everyone = [i for _, ids in pairs for i in ids][::-1]
    assert age.decrypt(data, everyone) == b"shared secret"


@pytest.mark.parametrize("size", [0, 5, CHUNK, CHUNK + 1, 3 * CHUNK])
@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_streaming_api_matches_the_in_memory_one(size, armored):
    identity = age.generate_x25519()
    plaintext = os.urandom(size)
    sink = io.BytesIO()
    age.encrypt_stream(io.BytesIO(plaintext), sink, [identity.recipient()], armor=armored)
    data = sink.getvalue()
    assert age.decrypt(data, [identity]) == plaintext
    out = io.BytesIO()
    age.decrypt_stream(io.BytesIO(data), out, [identity])
    assert out.getvalue() == plaintext
    if armored:  # the streaming armor writer produces the same text as the one-shot one
        assert data == armor.armor(armor.dearmor(data))


def test_stream_reader_copes_with_short_reads():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self._data = memoryview(data)

        def readable(self):
            return True

        def read(self, n=-1):
            piece = bytes(self._data[: max(1, min(n, 1000))])
            self._data = self._data[len(piece) :]
            return piece

    identity = age.generate_x25519()
    plaintext = os.urandom(2 * CHUNK + 3)
    for armored in (False, True):
        data = age.encrypt(plaintext, [identity.recipient()], armor=armored)
        out = io.BytesIO()
        age.decrypt_stream(Trickle(b"\n \n" + data if armored else data), out, [identity])
        assert out.getvalue() == plaintext
        sink = io.BytesIO()
        age.encrypt_stream(Trickle(plaintext), sink, [identity.recipient()], armor=armored)
        assert age.decrypt(sink.getvalue(), [identity]) == plaintext


def test_armor_layout_is_strict_pem_with_64_columns():
    identity = age.generate_x25519()
    text = age.encrypt(os.urandom(3000), [identity.recipient()], armor=True)
    lines = text.split(b"\n")
    assert lines[0] == armor.BEGIN and lines[-2] == armor.END and lines[-1] == b""
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
    # Whitespace around the block and CRLF line ends are accepted on input.
    crlf = b"\r\n \t\r\n" + text.replace(b"\n", b"\r\n") + b"\n\t \n"
    assert age.decrypt(crlf, [identity]) == age.decrypt(text, [identity])


def test_spec_known_answers():
    identity = age.parse_identities(SPEC_X25519_IDENTITY)[0]
    assert identity.recipient().to_bech32() == SPEC_X25519_RECIPIENT
    assert identity.to_bech32() == SPEC_X25519_IDENTITY
    pq = age.parse_identities(SPEC_PQ_IDENTITY)[0]
    assert pq.to_bech32() == SPEC_PQ_IDENTITY
    recipient = pq.recipient().to_bech32()
    assert recipient.startswith("age1pq1x34nzsvr0rxjsgdn8zgyhfe8j7ceq5r9rdelk")
    assert recipient.endswith("saeq0d3fzv49zc0k") and len(recipient) == 1959


def test_identity_file_with_comments_and_several_keys():
    first, second = age.generate_x25519(), age.generate_x25519()
    text = (
        f"# created: today\n# public key: {first.recipient().to_bech32()}\n"
        f"{first.to_bech32()}\n\n   {second.to_bech32()}  \r\n{SPEC_PQ_IDENTITY}\n"
    )
    identities = age.parse_identities(text)
    assert [type(i).__name__ for i in identities] == [
        "X25519Identity",
        "X25519Identity",
        "HybridIdentity",
    ]
    data = age.encrypt(b"x", [second.recipient()])
    assert age.decrypt(data, identities) == b"x"


def test_reprs_never_show_secret_keys(ed_key):
    identity = age.generate_x25519()
    secret = identity.to_bech32()
    assert secret not in repr(identity) and secret not in str(identity)
    assert "correct" not in repr(age.scrypt_identity("correct horse"))
    stanza = identity.recipient().wrap(b"k" * 16)[0]
    assert base64.b64encode(stanza.body).decode()[:10] not in repr(stanza)


# --- encryption refusals ----------------------------------------------------------------------


def test_scrypt_must_be_alone_and_pq_is_not_mixed_with_classic():
    classic = age.generate_x25519().recipient()
    pq = age.parse_identities(SPEC_PQ_IDENTITY)[0].recipient()
    with pytest.raises(age.AgeError, match="only recipient") as exc:
        age.encrypt(b"x", [age.scrypt_recipient("pw", 10), classic])
    assert exc.value.stage == "header"
    with pytest.raises(age.AgeError, match="post-quantum"):
        age.encrypt(b"x", [pq, classic])
    with pytest.raises(age.AgeError, match="no recipients"):
        age.encrypt(b"x", [])
    with pytest.raises(age.AgeError):
        age.scrypt_recipient("", 10)


# --- decryption failures ----------------------------------------------------------------------


def _stage(data, identities) -> str:
    with pytest.raises(age.AgeError) as exc:
        age.decrypt(data, identities)
    return exc.value.stage


def test_wrong_key_and_wrong_passphrase_are_no_match():
    identity = age.generate_x25519()
    data = age.encrypt(b"x", [identity.recipient()])
    assert _stage(data, [age.generate_x25519()]) == "no_match"
    assert _stage(data, []) == "no_match"
    assert _stage(data, [age.scrypt_identity("pw")]) == "no_match"
    locked = age.encrypt(b"x", [age.scrypt_recipient("pw", 10)])
    assert _stage(locked, [age.scrypt_identity("other")]) == "no_match"
    assert _stage(locked, [identity]) == "no_match"  # a key cannot open a passphrase file
    assert age.decrypt(locked, [identity, age.scrypt_identity("pw")]) == b"x"


def test_scrypt_work_factor_above_the_cap_is_refused_before_running_scrypt():
    data = age.encrypt(b"x", [age.scrypt_recipient("pw", work_factor=12)])
    with pytest.raises(age.AgeError, match="above the limit") as exc:
        age.decrypt(data, [age.scrypt_identity("pw", max_work_factor=11)])
    assert exc.value.stage == "header"
    assert age.decrypt(data, [age.scrypt_identity("pw", max_work_factor=12)]) == b"x"


def test_tampering_is_caught_at_the_right_stage():
    identity = age.generate_x25519()
    data = bytearray(age.encrypt(os.urandom(CHUNK + 10), [identity.recipient()]))
    head = len(header.parse(io.BytesIO(bytes(data))).mac_input) + 1 + 43 + 1

    mac_flipped = bytearray(data)
    mac_flipped[head - 3] ^= 1  # a character of the MAC line: still base64
    assert _stage(bytes(mac_flipped), [identity]) in ("hmac", "header")

    nonce_flipped = bytearray(data)
    nonce_flipped[head] ^= 1  # the payload nonce changes the payload key
    assert _stage(bytes(nonce_flipped), [identity]) == "payload"

    for cut in (head, head + 16, head + 100, len(data) - 1):
        assert _stage(bytes(data[:cut]), [identity]) in ("header", "payload")
    assert _stage(bytes(data) + b"\x00", [identity]) == "payload"
    assert _stage(bytes(data[: head - 5]), [identity]) == "header"


def test_decrypt_is_all_or_nothing_but_the_stream_releases_verified_chunks():
    identity = age.generate_x25519()
    plaintext = os.urandom(2 * CHUNK + 5)
    data = age.encrypt(plaintext, [identity.recipient()])
    truncated = data[:-20]  # the final chunk is damaged
    with pytest.raises(age.AgeError) as exc:
        age.decrypt(truncated, [identity])
    assert exc.value.stage == "payload"
    out = io.BytesIO()
    with pytest.raises(age.AgeError):
        age.decrypt_stream(io.BytesIO(truncated), out, [identity])
    assert out.getvalue() == plaintext[: 2 * CHUNK]  # earlier chunks were already written


def test_mac_is_checked_before_the_payload():
    identity = age.generate_x25519()
    data = age.encrypt(b"secret", [identity.recipient()])
    parsed = header.parse(io.BytesIO(data))
    other_key = os.urandom(16)
    forged = header.serialize(parsed.stanzas, other_key) + data[len(parsed.mac_input) + 45 :]
    assert _stage(forged, [identity]) == "hmac"


def test_header_serialization_wraps_bodies_and_ends_in_a_short_line():
    for size in (0, 47, 48, 49, 96):
        stanza = age.Stanza("test", ("a", "b+/="), os.urandom(size))
        text = header.mac_input([stanza])
        body_lines = text.split(b"\n")[2:-1]
        assert all(len(line) == 64 for line in body_lines[:-1]) and len(body_lines[-1]) < 64
        reparsed = header.parse(io.BytesIO(header.serialize([stanza], b"k" * 16)))
        assert reparsed.stanzas == (stanza,)


@pytest.mark.parametrize(
    "text, message",
    [
        (b"", "empty"),
        (b"age-encryption.org/v2\n", "version"),
        (b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n", "no recipient"),
        (b"age-encryption.org/v1\n-> X25519  x\n\n", "argument"),
        (b"age-encryption.org/v1\n-> X25519 x\n" + b"A" * 65 + b"\n", "body"),
        (b"age-encryption.org/v1\n-> X25519 x\nAAA=\n", "body"),
        (b"age-encryption.org/v1\n-> X25519 x\n\n--- " + b"A" * 42 + b"B\n", "canonical"),
        (b"age-encryption.org/v1\n-> X25519 x\n\n", "truncated"),
        (b"age-encryption.org/v1\n-> X25519 x\n\n???\n", "malformed header line"),
        (b"age-encryption.org/v1\n-> X25519 x\n\n-> " + b"y" * 70000 + b"\n", "too long"),
    ],
)
def test_header_parse_errors(text, message):
    with pytest.raises(age.AgeError, match=message) as exc:
        header.parse(io.BytesIO(text))
    assert exc.value.stage == "header"


_B, _E = b"-----BEGIN AGE ENCRYPTED FILE-----\n", b"-----END AGE ENCRYPTED FILE-----\n"


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"  \n",
        _B + b"AAAA\n",
        _B + b"\n" + _E,
        _B + b"A" * 65 + b"\n" + _E,
        _B + b"AAAA\n" + _E + b"junk\n",
        b"junk\n" + _B + b"AAAA\n" + _E,
        _B + b"AAAA \n" + _E,
        _B + b"AAB=\n" + _E,
        _B + b"AB==\n" + _E,  # non-zero unused bits: not canonical
    ],
)
def test_armor_errors(text):
    with pytest.raises(age.AgeError) as exc:
        armor.dearmor(text)
    assert exc.value.stage == "armor"


def test_canonical_base64_helpers():
    assert b64.decode("AAAA", "x") == b"\x00\x00\x00"
    for bad in ("AAB", "AA==", "A", "AA A", "AA\r"):
        with pytest.raises(age.AgeError):
            b64.decode(bad, "x")
    assert b64.decode("AA", "x") == b"\x00"
    with pytest.raises(age.AgeError, match="expected 32 bytes"):
        b64.decode_exact("AA", 32, "share")


# --- key text ---------------------------------------------------------------------------------


def test_bech32_round_trip_and_errors():
    data = os.urandom(32)
    text = bech32.encode("age", data)
    assert bech32.decode(text) == ("age", data)
    assert bech32.decode(text.upper()) == ("age", data)
    long = bech32.encode("age1pq", os.urandom(1216))  # no 90-character limit
    assert bech32.decode(long)[0] == "age1pq"
    flipped = text[:-1] + ("q" if text[-1] != "q" else "p")
    bad_cases = {
        "checksum": flipped,
        "mixed case": text[:5].upper() + text[5:],
        "alphabet": text[:6] + "b" + text[7:],  # 'b' is not a Bech32 character
        "separator": "agexxxxxxx",
        "out of range": text[:6] + "é" + text[7:],
    }
    for name, bad in bad_cases.items():
        with pytest.raises(age.AgeError, match="Bech32") as exc:
            bech32.decode(bad)
        assert exc.value.stage == "header", name
    # A lone data character is 5 bits: padding that is not zero cannot be decoded.
    values = [31]
    polymod = bech32._polymod(bech32._hrp_expand("age") + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    nonzero_padding = "age1" + "".join(bech32._CHARSET[v] for v in values + checksum)
    with pytest.raises(age.AgeError, match="padding"):
        bech32.decode(nonzero_padding)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("age1", "Bech32"),
        ("age1yubikey1qqqqqqqqqqqqqqqqqq", "plugin"),
        ("AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX", "unknown"),
        ("ssh-ed25519", "not an SSH public key"),
        ("ssh-ed25519 AAAAnotbase64!", "malformed"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "not an SSH public key"),
        (bech32.encode("age", b"short"), "wrong key length"),
        (bech32.encode("age1pq", b"short"), "wrong key length"),
    ],
)
def test_parse_recipient_errors(text, message):
    with pytest.raises(age.AgeError, match=message) as exc:
        age.parse_recipient(text)
    assert exc.value.stage == "header"


def test_parse_recipient_checks_ssh_key_types(ed_key, rsa_key):
    ed_line = _openssh_public(ed_key)
    rsa_line = _openssh_public(rsa_key)
    with pytest.raises(age.AgeError):  # the declared type must match the key inside
        age.parse_recipient("ssh-rsa " + ed_line.split()[1])
    with pytest.raises(age.AgeError):
        age.parse_recipient("ssh-ed25519 " + rsa_line.split()[1])
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(age.AgeError, match="2048"):
        age.parse_recipient(_openssh_public(small))


def test_parse_identities_errors_name_the_line_without_echoing_it(ed_key):
    secret = age.generate_x25519().to_bech32()
    broken = secret[:-1] + ("Q" if secret[-1] != "Q" else "P")
    with pytest.raises(age.AgeError) as exc:
        age.parse_identities(f"# comment\n{secret}\n{broken}\n")
    assert "line 3" in str(exc.value) and broken not in str(exc.value)
    for text, message in [
        ("", "no identities"),
        ("# only a comment\n", "no identities"),
        ("hello", "not an age identity"),
        (age.generate_x25519().recipient().to_bech32(), "public key"),
        ("AGE-PLUGIN-YUBIKEY-1QQQQQQ", "plugin"),
        ("-----BEGIN AGE ENCRYPTED FILE-----\n", "encrypted age file"),
    ]:
        with pytest.raises(age.AgeError, match=message):
            age.parse_identities(text)


def test_ssh_private_keys_encrypted_or_unsupported_are_refused(ed_key):
    encrypted = ed_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(age.AgeError, match="passphrase-protected"):
        age.parse_identities(encrypted)
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(age.AgeError, match="only ed25519 and rsa"):
        age.parse_identities(_openssh_private(ecdsa))
    with pytest.raises(age.AgeError, match="malformed"):
        age.parse_identities(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        )
    # PKCS#8 PEM keys (ssh-keygen -m PEM / openssl) work too.
    pem = ed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    identity = age.parse_identities(pem)[0]
    data = age.encrypt(b"x", [age.parse_recipient(_openssh_public(ed_key))])
    assert age.decrypt(data, [identity]) == b"x"


def test_ssh_stanzas_carry_the_key_tag(ed_key):
    recipient = age.parse_recipient(_openssh_public(ed_key))
    (stanza,) = recipient.wrap(b"k" * 16)
    wire = base64.b64decode(_openssh_public(ed_key).split()[1])
    assert stanza.type == "ssh-ed25519"
    assert stanza.args[0] == b64.encode_str(hashlib.sha256(wire).digest()[:4])
    other = ed25519.Ed25519PrivateKey.generate()
    data = age.encrypt(b"x", [recipient])
    assert _stage(data, age.parse_identities(_openssh_private(other))) == "no_match"


def test_unknown_stanzas_are_ignored_and_malformed_known_ones_rejected():
    identity = age.generate_x25519()
    file_key = os.urandom(16)
    mine = identity.recipient().wrap(file_key)[0]
    grease = age.Stanza("example.com/grease", ("!#$%",), os.urandom(70))
    nonce = os.urandom(16)
    payload = stream.seal(stream.payload_key(file_key, nonce), b"hello")

    def build(*stanzas):
        return header.serialize(stanzas, file_key) + nonce + payload

    assert age.decrypt(build(grease, mine, grease), [identity]) == b"hello"
    bad_share = age.Stanza("X25519", ("AAAA",), mine.body)
    assert _stage(build(bad_share, mine), [identity]) == "header"
    low_order = age.Stanza("X25519", (b64.encode_str(bytes(32)),), mine.body)
    assert _stage(build(low_order), [identity]) == "header"
    assert _stage(build(age.Stanza("x25519", mine.args, mine.body)), [identity]) == "no_match"


# --- the fast armor decoder agrees with the line-by-line one ----------------------------------


_MUTATION_BYTES = st.sampled_from([b" ", b"\n", b"\r", b"\t", b"=", b"A", b"*", b"-", b"\r\n"])


def _slow_dearmor(data: bytes) -> bytes | None:
    try:
        return b"".join(armor.iter_dearmor(io.BytesIO(data).read))
    except age.AgeError:
        return None


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(min_size=0, max_size=200),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace"]),
            st.integers(0, 10_000),
            _MUTATION_BYTES,
        ),
        max_size=3,
    ),
)
def test_fast_dearmor_never_accepts_what_the_strict_decoder_rejects(payload, edits):
    text = bytearray(armor.armor(payload) if payload else armor.BEGIN + b"\n" + armor.END + b"\n")
    for kind, where, piece in edits:
        where %= len(text) + 1
        if kind == "insert":
            text[where:where] = piece
        elif kind == "delete":
            del text[where : where + 1]
        else:
            text[where : where + len(piece)] = piece
    data = bytes(text)
    fast = armor._dearmor_regular(data)
    slow = _slow_dearmor(data)
    if fast is not None:
        assert slow == fast
    if slow is not None:
        assert armor.dearmor(data) == slow
    else:
        with pytest.raises(age.AgeError):
            armor.dearmor(data)
