"""The redactor and the Secret type: every form of a secret is masked, short values are not."""

from __future__ import annotations

import base64
import pickle
from urllib.parse import quote

import pytest

from reconciler.redact import MASK, Redactor, Secret, reveal

SECRET = "s3cr3t/p@ss word"


@pytest.mark.parametrize("form", [
    SECRET,
    base64.b64encode(SECRET.encode()).decode(),
    base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
    SECRET.encode().hex(),
    SECRET.encode().hex().upper(),
    quote(SECRET, safe=""),
])
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
    for text in (str(secret), repr(secret), f"{secret}", f"{secret:>20}", str([secret]),
                 str({"K": secret})):
        assert SECRET not in text
    assert reveal(secret) == SECRET and reveal("plain") == "plain"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
