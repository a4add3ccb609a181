"""Secrets as a type, and the one redactor applied at every sink.

`Secret` wraps a decrypted value so that printing, logging or formatting it shows `***`;
code that must hand the value to a command calls `reveal()`. The `Redactor` learns every
decrypted value (and the forms a command is likely to print it in) and replaces each
occurrence with `***` in run output, errors, logs and JSON before anything is written.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask half of every output ("on", "1", "yes")


class Secret:
    """A decrypted value that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for handing it to the command's environment."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # pickling would write the value somewhere: refuse
        raise TypeError("a Secret cannot be pickled")


def reveal(value: str | Secret) -> str:
    """The plain text of an env value, whether or not it is a secret."""
    return value.reveal() if isinstance(value, Secret) else value


def variants(value: str) -> set[str]:
    """Pure: the texts under which a secret may show up in output.

    The value, each line of a multi-line value, and its base64 (standard and URL-safe, with
    and without padding, and the part of it that the value alone decides when it sits inside
    a longer encoded string, such as `user:secret` in an HTTP Basic header), hex (both cases)
    and URL-encoded forms, and for a URL its token-like parts (`url_credentials`); all at
    least MIN_LENGTH long.
    """
    # A value stored before `vault set` refused bytes that are not UTF-8 holds them as
    # surrogates: its bytes are what output would show, its text is taken with U+FFFD.
    raw = value.encode("utf-8", "surrogateescape")
    value = raw.decode("utf-8", "replace")  # the same text for any value that is UTF-8
    forms = {value, *value.splitlines()}
    b64 = base64.b64encode(raw).decode()
    url_b64 = base64.urlsafe_b64encode(raw).decode()
    forms |= {b64, b64.rstrip("="), url_b64, url_b64.rstrip("="), raw.hex(), raw.hex().upper()}
    forms |= url_encoded(value)
    forms |= json_escaped(value)
    forms |= set(base64_cores(raw))
    forms |= url_credentials(value)
    return {f for f in (form.strip() for form in forms) if len(f) >= MIN_LENGTH}


def url_encoded(value: str) -> set[str]:
    """Pure: `value` percent-encoded as libraries do: every reserved character escaped, or `/`
    kept (Python's `quote`, a URL path), `+` for spaces (forms), escapes in either case."""
    forms = {quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="/")}
    return forms | {_LOWER_ESCAPE.sub(lambda m: m[0].lower(), form) for form in forms}


_LOWER_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def json_escaped(value: str) -> set[str]:
    """Pure: `value` inside a JSON string (a quote, a backslash or a control character turns
    into an escape), with `/` escaped too as PHP and some Java encoders write it, and with
    non-ASCII characters as `\\uXXXX` or as they are."""
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return forms | {form.replace("/", "\\/") for form in forms}


def url_credentials(value: str) -> set[str]:
    """Pure: the parts of a URL-shaped secret (an alert URL, a webhook) that libraries print
    on their own: urllib3 logs only the request path, apprise its own rewrite of the URL.
    The password, and each piece of the user info and host (apprise keeps tokens there:
    `tgram://BOT:TOKEN/CHAT`), path segment, the path, and query value that looks like a
    token (see `_token_like`), with and without percent-decoding. Empty for other values."""
    if "://" not in value:
        return set()
    try:
        parsed = urlsplit(value.strip())
        password = parsed.password
    except ValueError:
        return set()
    parts = [
        parsed.netloc,
        *re.split(r"[@:]", parsed.netloc),
        *parsed.path.split("/"),
        parsed.path.rstrip("/"),
        parsed.fragment,
        *(v for _, v in parse_qsl(parsed.query)),
    ]
    found = {password} if password else set()
    found |= {part for part in parts if _token_like(part)}
    return found | {unquote(part) for part in found}


def _token_like(part: str) -> bool:
    """Whether a URL part may be a credential: 8 characters or more, not a host name or IP
    address (dotted), and not a plain word (letters of one case, shorter than 16: `services`,
    `webhooks`). A path or a host with a port counts when one of its pieces does."""
    if "/" in part or "@" in part:
        return any(_token_like(piece) for piece in re.split(r"[/@:]", part))
    if len(part) < 8 or "." in part.strip("."):
        return False
    plain_word = part.isalpha() and (part.islower() or part.isupper()) and len(part) < 16
    return not plain_word


def base64_cores(raw: bytes) -> list[str]:
    """Pure: for each of the three byte alignments `raw` can have inside a longer string, the
    base64 characters (standard and URL-safe) whose six bits all come from `raw`. The
    characters around them mix in bits of the neighbours, so they differ with the context
    and cannot be searched for; what they reveal is less than one byte at each end."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        first, end = -(-8 * offset // 6), (8 * (offset + len(raw))) // 6
        core = encoded[first:end]
        cores += [core, core.translate(_URL_SAFE)]
    return cores


_URL_SAFE = str.maketrans("+/", "-_")
# A base64 text wrapped into lines (76 columns for `base64` and MIME, 64 for PEM, narrower
# for some tools): two lines or more of base64 characters, every line but the last at least
# 16 long (WRAP_MIN). Anchored at a line
# start and possessive, so a long line that is not base64 costs one look, not a backtrack.
_WRAPPED = re.compile(r"^(?:[A-Za-z0-9+/_-]{16,}+\r?\n)++[A-Za-z0-9+/_-]*+=*+", re.MULTILINE)
WRAP_MIN = 16  # the shortest line of a wrapped block but its last (as in _WRAPPED)
MIN_PIECE = 3  # a secret's last characters left after a cut: masked from this many on


class Redactor:
    """Replaces every known secret form with `***`. Thread-safe; values only accumulate.

    One instance per process is wired into the store writes, the logs, the views and error
    messages, so a secret learnt anywhere is masked everywhere. Two things a plain search
    would miss are handled too: a base64 form broken over lines (searched for in the
    wrapped block's joined lines), and the end of a secret at the start of output whose head
    was cut off (after the mark of `reconciler.core.output`).
    """

    def __init__(self, values: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*values)

    def add(self, *values: str) -> None:
        new = set().union(*(variants(v) for v in values)) - self._forms if values else set()
        if not new:
            return
        with self._lock:
            self._forms |= new
            # Longest first, so a value is masked whole rather than around a shorter form.
            ordered = sorted(self._forms, key=lambda f: (-len(f), f))
            self._pattern = re.compile(trie_pattern(ordered))
            self._ordered = tuple(ordered)

    def wrapped_lines(self) -> int:
        """How many lines the longest known form may span when wrapped as base64 (every line
        but the last at least WRAP_MIN long): what a stream redacted piece by piece must hold
        back to show each such form whole to the redactor."""
        longest = len(self._ordered[0]) if self._pattern is not None else 0
        return -(-longest // WRAP_MIN) + 1 if longest else 0

    def __call__(self, text: str | None) -> str | None:
        """`text` with every secret form replaced by `***` (None stays None)."""
        pattern = self._pattern
        if text is None or pattern is None:
            return text
        forms = self._ordered
        if text.startswith("[... "):
            text = _mask_cut_piece(text, forms)
        if "\n" in text:
            text = _WRAPPED.sub(lambda block: _mask_block(block.group(0), pattern), text)
        return pattern.sub(MASK, text)


def trie_pattern(words: Iterable[str]) -> str:
    """Pure: a regular expression matching any of `words`, the longest one at a position.

    Written as a trie (`ab(?:c|d)` rather than `abc|abd`): at each position of the text the
    regex engine then follows one branch per character instead of trying every word in turn,
    which keeps redaction fast with many secrets and their many encoded forms. A word that
    is a prefix of another ends in an optional group, tried longest first."""
    root: dict = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here
    return _trie_regex(root)


def _trie_regex(node: dict) -> str:
    # Follow a chain of single children as one literal; branch only where words part.
    literal = []
    while len(node) == 1 and "" not in node:
        ((char, node),) = node.items()
        literal.append(char)
    head = re.escape("".join(literal))
    if not node or list(node) == [""]:
        return head
    ends = "" in node
    branches = [
        re.escape(char) + _trie_regex(child) for char, child in sorted(node.items()) if char
    ]
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if ends:
        body = f"(?:{body})?" if len(branches) > 1 or len(body) > 1 else body + "?"
    return head + body


def _mask_block(block: str, pattern: re.Pattern[str]) -> str:
    """A wrapped base64 block with every secret form found in its joined lines masked, the
    line breaks outside those forms kept (unchanged when it holds none: the usual case)."""
    joined = block.replace("\r", "").replace("\n", "")
    if pattern.search(joined) is None:
        return block
    where = [i for i, char in enumerate(block) if char not in "\r\n"]
    pieces, done = [], 0
    for found in pattern.finditer(joined):
        start, end = where[found.start()], where[found.end() - 1] + 1
        pieces += [block[done:start], MASK]
        done = end
    return "".join(pieces) + block[done:]


def _mask_cut_piece(text: str, forms: Iterable[str]) -> str:
    """After a cut (the output mark), the body may begin with the last characters of a secret
    form, perhaps broken over lines: mask the longest such piece (MIN_PIECE or longer)."""
    from reconciler.core.output import MARK_PATTERN

    mark = MARK_PATTERN.match(text)
    if mark is None:
        return text
    head = text[mark.end() : mark.end() + 2 * max(map(len, forms), default=0) + 2]
    where = [i for i, char in enumerate(head) if char not in "\r\n"]
    joined = "".join(head[i] for i in where)
    longest = max((_ending_piece(form, joined) for form in forms), default=0)
    if longest < MIN_PIECE:
        return text
    return text[: mark.end()] + MASK + text[mark.end() + where[longest - 1] + 1 :]


def _ending_piece(form: str, text: str) -> int:
    """Pure: the length of the longest proper suffix of `form` that `text` starts with."""
    if not text:
        return 0
    at = form.find(text[0], 1)
    while at != -1:
        if text.startswith(form[at:]):
            return len(form) - at
        at = form.find(text[0], at + 1)
    return 0
