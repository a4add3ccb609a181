"""The redactor and the Secret type: every form of a secret is masked, short values are not."""

from __future__ import annotations

import base64
import pickle
from urllib.parse import quote

import pytest

from reconciler.core.output import TailBuffer, cap, split_mark, with_mark
from reconciler.core.redact import MASK, Redactor, Secret, reveal, trie_pattern, variants

SECRET = "s3cr3t/p@ss word"


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        SECRET.encode().hex(),
        SECRET.encode().hex().upper(),
        quote(SECRET, safe=""),
    ],
)
def test_every_encoding_of_a_secret_is_masked(form):
    redact = Redactor([SECRET])
    assert redact(f"before {form} after") == f"before {MASK} after"


def test_each_line_of_a_multiline_secret_is_masked_on_its_own():
    key = "-----BEGIN KEY-----\nAAAAbbbbCCCC\n-----END KEY-----"
    redact = Redactor([key])
    assert redact("line: AAAAbbbbCCCC") == f"line: {MASK}"
    assert redact(key) == MASK


def test_values_shorter_than_four_characters_are_not_masked():
    redact = Redactor(["abc"])
    assert redact("abc abcd") == "abc abcd"


def test_the_longest_form_wins_so_nothing_of_a_secret_remains():
    redact = Redactor(["abcd", "abcdefgh"])
    assert redact("xabcdefghx") == f"x{MASK}x"


def test_values_learnt_later_are_masked_too_and_none_passes_through():
    redact = Redactor()
    assert redact("token-1234") == "token-1234"
    redact.add("token-1234")
    assert redact("token-1234") == MASK
    assert redact(None) is None


def test_secret_never_prints_its_value():
    secret = Secret(SECRET)
    for text in (
        str(secret),
        repr(secret),
        f"{secret}",
        f"{secret:>20}",
        str([secret]),
        str({"K": secret}),
    ):
        assert SECRET not in text
    assert reveal(secret) == SECRET and reveal("plain") == "plain"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


# --- encoded inside longer text, wrapped, or cut (issue 11 item 10) ---------------------------


@pytest.mark.parametrize("prefix", ["", "u:", "us:", "use:", "user:"])
def test_base64_of_a_secret_inside_a_longer_value_is_masked_at_every_alignment(prefix):
    redact = Redactor([SECRET])
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode((prefix + SECRET + "\n").encode()).decode()
        masked = redact(text)
        assert MASK in masked and len(masked) < len(text) - len(SECRET)


def test_a_base64_secret_broken_over_wrapped_lines_is_masked():
    long = "p" * 30 + SECRET * 4
    encoded = base64.b64encode(("user:" + long).encode()).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    masked = Redactor([long])(f"begin\n{wrapped}end\n")
    assert masked.startswith("begin\n") and masked.endswith("\nend\n") and MASK in masked
    assert base64.b64encode(SECRET.encode()).decode()[:8] not in masked.replace("\n", "")


def test_wrapped_base64_without_a_secret_keeps_its_lines():
    encoded = base64.b64encode(bytes(range(256)) * 2).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    assert Redactor([SECRET])(wrapped) == wrapped


@pytest.mark.parametrize("kept", [3, 5, len(SECRET) - 1])
def test_the_end_of_a_secret_right_after_a_cut_mark_is_masked(kept):
    text = with_mark(1000, SECRET[-kept:] + " rest of the output\n")
    assert Redactor([SECRET])(text) == with_mark(1000, MASK + " rest of the output\n")


def test_a_cut_piece_shorter_than_min_piece_or_without_a_mark_is_left():
    redact = Redactor([SECRET])
    assert redact(with_mark(10, SECRET[-2:] + " x")) == with_mark(10, SECRET[-2:] + " x")
    assert redact(SECRET[-6:] + " x") == SECRET[-6:] + " x"


def test_the_trie_pattern_finds_what_a_plain_alternation_finds():
    import random
    import re

    rng = random.Random(7)
    for _ in range(500):
        words = {
            "".join(rng.choice("ab.c*") for _ in range(rng.randint(1, 6)))
            for _ in range(rng.randint(1, 8))
        }
        ordered = sorted(words, key=lambda f: (-len(f), f))
        plain = re.compile("|".join(re.escape(w) for w in ordered))
        text = "".join(rng.choice("ab.c*x") for _ in range(40))
        assert re.sub(trie_pattern(ordered), "#", text) == plain.sub("#", text)


def test_the_cap_keeps_the_tail_and_adds_what_it_drops_to_an_earlier_mark():
    text = with_mark(500, "é" * 100)
    capped = cap(text, 120)
    dropped, body = split_mark(capped)
    assert len(capped.encode()) <= 120 and set(body) == {"é"}
    assert dropped == 500 + 2 * (100 - len(body))
    assert cap("short", 120) == "short" and cap(with_mark(3, "x"), 120) == with_mark(3, "x")


def test_a_tail_buffer_marks_what_it_dropped_and_never_splits_a_character():
    buffer = TailBuffer(10)
    for _ in range(50):
        buffer.add("€".encode())
    dropped, body = split_mark(buffer.text())
    assert set(body) == {"€"} and dropped + len(body.encode()) == 150


def test_the_token_parts_of_a_url_secret_are_masked_where_a_library_prints_them_alone():
    url = "tgram://123456789:ABCdefGHIjklMNOpq/987654321/?key=Qk9vXw2Lm5Zr8Tn3"
    redact = Redactor([url, "https://user:hunter22@hooks.example.com/services/T0KEN1234/x"])
    assert (
        redact('"POST /bot123456789:ABCdefGHIjklMNOpq/sendMessage" 200')
        == '"POST /bot***/sendMessage" 200'
    )
    assert redact("chat 987654321 key=Qk9vXw2Lm5Zr8Tn3") == "chat *** key=***"
    assert redact("POST /services/T0KEN1234/x; auth hunter22") == "POST ***; auth ***"
    # plain words, host names and addresses stay readable
    assert redact("services at hooks.example.com") == "services at hooks.example.com"


def test_wrapped_lines_bounds_the_lines_a_wrapped_form_of_the_longest_secret_spans():
    assert Redactor().wrapped_lines() == 0
    value = "s" * 60
    longest = max(len(form) for form in variants(value))
    assert Redactor([value]).wrapped_lines() == -(-longest // 16) + 1
