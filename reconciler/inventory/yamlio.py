"""Strict YAML reading into a node tree that remembers where every key and value was written.

Inventory files are small, hand-written and reviewed in pull requests, so the reader refuses
everything that makes YAML surprising: YAML 1.1 retyping (`NO`, `on`, `1:30`, `2001-12-14`),
duplicate keys (PyYAML silently keeps the last), tags, anchors and aliases (billion laughs),
non-string keys, several documents in one file, and oversized or absurdly nested input.
Every problem becomes a located `Diagnostic`; no exception escapes to the caller.

Scalars follow the YAML 1.2 core schema, with one deliberate deviation: a decimal integer
with a leading zero (`022`) stays the string "022", because in practice it is a file mode
and reading it as 22 (or as octal 18, as YAML 1.1 would) is always wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from reconciler.core.diagnostics import Diagnostics, Location

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_INT_DIGITS = 1000  # no count, priority or duration needs more; Python's int() stops at 4,300


class OversizedInt(str):
    """A plain scalar that reads as an integer too long to be one (more than MAX_INT_DIGITS
    digits): kept as its text so nothing converts it (Python refuses int() past 4,300 digits),
    and reported by the parser with its location. Not equal to the same text as a `str`, so
    a writer knows to quote such a string."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OversizedInt) and str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__


Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class ScalarNode:
    """A scalar resolved per the YAML 1.2 core schema (quoted scalars are always strings)."""

    value: Scalar
    location: Location


@dataclass(frozen=True, slots=True)
class SeqNode:
    """A YAML sequence; `location` is where it starts."""

    items: tuple[Node, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class MapNode:
    """A YAML mapping with string keys; each entry keeps its key's location and its value."""

    entries: dict[str, tuple[Location, Node]]
    location: Location

    def get(self, key: str) -> Node | None:
        """The value node under `key`, or None when the key is absent."""
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_location(self, key: str) -> Location:
        """Where `key` itself was written (KeyError when absent)."""
        return self.entries[key][0]

    def __contains__(self, key: object) -> bool:
        return key in self.entries


Node = ScalarNode | SeqNode | MapNode

# Composing makes a Location and a ScalarNode for each of the ~9,000 scalars of a 1,000-task
# inventory. The generated __init__ of a frozen dataclass sets every field through
# object.__setattr__ (0.41 µs for a Location, 0.25 µs this way); the composer sets their
# slots directly instead: the same objects (equal, hashed, shown and read-only alike;
# tests/unit/test_yamlio.py holds them to that).
_new_instance = object.__new__
# The slots' own setters (on the class, `Location.line` is the slot's descriptor).
_set_path, _set_line, _set_column = (
    Location.path.__set__,
    Location.line.__set__,
    Location.column.__set__,
)
_set_value, _set_scalar_location = ScalarNode.value.__set__, ScalarNode.location.__set__


def _new_location(path: str, line: int, column: int) -> Location:
    location = _new_instance(Location)
    _set_path(location, path)
    _set_line(location, line)
    _set_column(location, column)
    return location


def _new_scalar_node(value: Scalar, location: Location) -> ScalarNode:
    node = _new_instance(ScalarNode)
    _set_value(node, value)
    _set_scalar_location(node, location)
    return node


def to_plain(node: Node | None) -> Any:
    """Plain Python data (dict, list, str, int, float, bool, None) for `node`, e.g. for jsonschema."""
    if isinstance(node, MapNode):
        return {key: to_plain(value) for key, (_, value) in node.entries.items()}
    if isinstance(node, SeqNode):
        return [to_plain(item) for item in node.items]
    return node.value if node is not None else None


def read_yaml(path: str | Path, diags: Diagnostics, display: str | None = None) -> Node | None:
    """The node tree of the YAML file at `path`, or None when it is empty or unusable.

    `display` is the path shown in diagnostics (default: `path` as given). The size is checked
    before anything is read, so a huge file costs nothing; unreadable files, invalid UTF-8 and
    every YAML problem are reported to `diags` instead of raised.
    """
    name = display or str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            diags.error(
                Location(name),
                f"file is too large ({size} bytes, the limit is 1 MiB)",
                "split it into several smaller files",
            )
            return None
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        diags.error(Location(name), f"cannot read file: {exc.strerror or exc}")
        return None
    return parse_yaml(data, name, diags)


def parse_yaml(data: bytes | str, name: str, diags: Diagnostics) -> Node | None:
    """The node tree of YAML `data` (bytes must be UTF-8), reporting problems against `name`."""
    if isinstance(data, bytes):
        if len(data) > MAX_FILE_BYTES:
            diags.error(
                Location(name),
                "file is too large (the limit is 1 MiB)",
                "split it into several smaller files",
            )
            return None
        text = _decode(data, name, diags)
        if text is None:
            return None
    else:
        text = data
    return _compose(text.removeprefix("\ufeff"), name, diags)


def _decode(data: bytes, name: str, diags: Diagnostics) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        line = good.count("\n") + 1
        column = len(good) - (good.rfind("\n") + 1) + 1
        diags.error(
            Location(name, line, column), "file is not valid UTF-8", "save the file as UTF-8"
        )
        return None


class _TooDeep(Exception):
    """Aborts composing: nesting beyond MAX_DEPTH (recursion would not end well)."""

    def __init__(self, mark: Any):
        super().__init__("too deep")
        self.mark = mark


# libyaml's parser when PyYAML was built with it (10x faster on large inventories), else
# PyYAML's own. Only the parser is used: our composer below builds the tree from its events,
# so PyYAML's YAML 1.1 implicit typing never runs and `resolve_plain` applies YAML 1.2 afterwards.
_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Composer:
    """Builds our node tree straight from parser events, reporting anchors, aliases, tags,
    duplicate and non-string keys instead of honouring them, and refusing nesting deeper
    than MAX_DEPTH. (Going through PyYAML's node objects first cost a third of the time.)

    A plain or quoted scalar without anchor or tag is most of every inventory: the
    collections build it themselves (`_scalar`), and only other events go through `_build`."""

    def __init__(self, parser: Any, name: str):
        self.parser = parser
        self.name = name
        self.problems: list[tuple[Location, str, str | None]] = []

    def node(self, depth: int = 0) -> Node:
        return self._build(self.parser.get_event(), depth)

    def _scalar(self, event: Any) -> ScalarNode:
        """The node of a ScalarEvent without anchor or tag."""
        mark = event.start_mark  # PyYAML marks are 0-based; ours are 1-based
        location = _new_location(self.name, mark.line + 1, mark.column + 1)
        # Quoted and block scalars are always strings; only plain scalars are resolved.
        # (libyaml reports a plain scalar's style as '', PyYAML's parser as None.)
        value = event.value if event.style else resolve_plain(event.value)
        # Only a double-quoted scalar's escapes can write a lone surrogate.
        if type(value) is not str or "\0" in value or (event.style == '"' and not value.isascii()):
            self._check_value(value, location)
        return _new_scalar_node(value, location)

    def _build(self, event: Any, depth: int) -> Node:
        """The node that starts with `event` (read further events for a collection). The
        collections read each next event once and test whether it ends them, rather than
        asking the parser first: half the calls into it, for every node of every file."""
        if type(event) is ScalarEvent and event.anchor is None and event.tag is None:
            return self._scalar(event)
        mark = event.start_mark
        location = _new_location(self.name, mark.line + 1, mark.column + 1)
        if isinstance(event, AliasEvent):
            self.problems.append(
                (
                    location,
                    f"YAML aliases (*{event.anchor}) are not allowed",
                    "write the value out in full",
                )
            )
            return ScalarNode(None, location)  # the alias target is never expanded
        self._check_anchor_and_tag(event, location)
        if isinstance(event, ScalarEvent):
            value = event.value if event.style else resolve_plain(event.value)
            self._check_value(value, location)
            return ScalarNode(value, location)
        if depth >= MAX_DEPTH:
            raise _TooDeep(event.start_mark)
        if isinstance(event, SequenceStartEvent):
            return self._sequence(location, depth)
        return self._mapping(location, depth)

    def _sequence(self, location: Location, depth: int) -> SeqNode:
        items = []
        get_event = self.parser.get_event
        while (kind := type(event := get_event())) is not SequenceEndEvent:
            if kind is ScalarEvent and event.anchor is None and event.tag is None:
                items.append(self._scalar(event))
            else:
                items.append(self._build(event, depth + 1))
        return SeqNode(tuple(items), location)

    def _mapping(self, location: Location, depth: int) -> MapNode:
        entries: dict[str, tuple[Location, Node]] = {}
        get_event = self.parser.get_event
        while (kind := type(event := get_event())) is not MappingEndEvent:
            if kind is ScalarEvent and event.anchor is None and event.tag is None:
                key_node = self._scalar(event)
            else:
                key_node = self._build(event, depth + 1)
            event = get_event()
            if type(event) is ScalarEvent and event.anchor is None and event.tag is None:
                value = self._scalar(event)
            else:
                value = self._build(event, depth + 1)
            key = key_node.value if type(key_node) is ScalarNode else None
            if type(key) is str and key not in entries:  # the common case first
                entries[key] = (key_node.location, value)
            elif not isinstance(key, str):
                self.problems.append(
                    (
                        key_node.location,
                        f"mapping keys must be strings (got {_describe_key(key_node)})",
                        "quote the key",
                    )
                )
            elif key in entries:
                first = entries[key][0]
                self.problems.append(
                    (
                        key_node.location,
                        f"duplicate key '{key}' (first defined "
                        f"on line {first.line}, column {first.column})",
                        "remove one of them",
                    )
                )
            else:
                entries[key] = (key_node.location, value)  # a str subclass (OversizedInt)
        return MapNode(entries, location)

    def _check_value(self, value: Scalar, location: Location) -> None:
        # A NUL cannot reach a command line or an environment, and .nan/.inf are never a
        # priority, a count or a backoff: refuse both here, where the position is known.
        if isinstance(value, str) and "\0" in value:
            self.problems.append(
                (location, "NUL characters are not allowed", "remove the \\0 escape")
            )
        elif isinstance(value, str) and _SURROGATE.search(value):
            # Half of a UTF-16 pair is no character: UTF-8 cannot encode it (for a version
            # hash, a command line or a store), so it is refused here, not failing there.
            # (libyaml refuses the escape; PyYAML's parser, which rereads a broken file,
            # keeps it, and keeps each half of a pair apart.)
            self.problems.append(
                (
                    location,
                    "lone surrogate escapes (half of a UTF-16 pair) are not allowed",
                    "write the character itself, or its \\U escape (\\U0001F600, not \\ud83d\\ude00)",
                )
            )
        elif isinstance(value, OversizedInt):
            self.problems.append(
                (
                    location,
                    f"an integer of {len(value)} characters is too "
                    f"large (at most {MAX_INT_DIGITS} digits)",
                    "quote it to keep it a string",
                )
            )
        elif isinstance(value, float) and not math.isfinite(value):
            self.problems.append(
                (
                    location,
                    f"'{value}' is not allowed here: numbers must be finite",
                    "write a number, or quote it to keep it a string",
                )
            )

    def _check_anchor_and_tag(self, event: Any, location: Location) -> None:
        if event.anchor is not None:
            self.problems.append(
                (
                    location,
                    f"YAML anchors (&{event.anchor}) are not allowed",
                    "write the value out in full",
                )
            )
        if event.tag is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            self.problems.append(
                (
                    location,
                    f"YAML tags ({tag}) are not allowed",
                    "remove the tag; quote the value if it must stay a string",
                )
            )


def _mark_location(name: str, mark: Any) -> Location:
    # PyYAML marks are 0-based; ours are 1-based.
    return Location(name, mark.line + 1, mark.column + 1) if mark is not None else Location(name)


def _compose(text: str, name: str, diags: Diagnostics, parser_class: Any = _Parser) -> Any:
    parser = None
    composer = None
    try:
        parser = parser_class(text)  # PyYAML's reader checks characters right here
        composer = _Composer(parser, name)
        return _compose_single(composer, name, diags)
    except (yaml.MarkedYAMLError, yaml.reader.ReaderError) as exc:
        if parser_class is yaml.SafeLoader:
            _report_syntax(exc, text, name, diags)
            return None
        # A broken file: read it again with PyYAML's own parser, whose messages are clearer
        # (and the same on every machine). Only broken files pay for the second read.
        composer = None
        return _compose(text, name, diags, yaml.SafeLoader)
    except _TooDeep as exc:
        diags.error(
            _mark_location(name, exc.mark),
            f"nesting is deeper than {MAX_DEPTH} levels",
            "flatten the structure",
        )
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of the above
        diags.error(Location(name), f"invalid YAML: {exc}")
    finally:
        if composer is not None:
            for location, message, hint in composer.problems:
                diags.error(location, message, hint)
        if parser is not None:
            parser.dispose()
    return None


def _report_syntax(exc: yaml.YAMLError, text: str, name: str, diags: Diagnostics) -> None:
    if isinstance(exc, yaml.MarkedYAMLError):
        diags.error(
            _mark_location(name, exc.problem_mark or exc.context_mark), _syntax_message(exc)
        )
    else:
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        diags.error(
            _position_location(text, name, exc.position),
            f"character {character!r} is not allowed in YAML",
            "remove it",
        )


def _compose_single(composer: _Composer, name: str, diags: Diagnostics) -> Any:
    parser = composer.parser
    parser.get_event()  # StreamStartEvent
    if parser.check_event(StreamEndEvent):
        return None
    parser.get_event()  # DocumentStartEvent
    node = composer.node()
    parser.get_event()  # DocumentEndEvent
    if not parser.check_event(StreamEndEvent):
        extra = parser.peek_event()
        diags.error(
            _mark_location(name, extra.start_mark),
            "a file must hold one YAML document, found another",
            "remove the '---' separator; put several objects in a list or in several files",
        )
    return node


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    problem = (exc.problem or "syntax error").strip()
    context = f" ({exc.context.strip()})" if exc.context else ""
    return f"invalid YAML: {problem}{context}"


def _position_location(text: str, name: str, position: int) -> Location:
    before = text[:position]
    return Location(name, before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1)


def _describe_key(node: Node) -> str:
    if isinstance(node, MapNode):
        return "a mapping"
    if isinstance(node, SeqNode):
        return "a list"
    return "null" if node.value is None else f"{type(node.value).__name__} {node.value!r}"


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1023-core-schema).
_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_DECIMAL = re.compile(r"[-+]?[0-9]+")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")
_OCTAL = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
# The first characters of every integer, float, infinity and NaN form above ("" is null).
_NUMBER_START = frozenset("0123456789+-.")


def resolve_plain(text: str) -> Scalar:
    """The value of a plain scalar under the YAML 1.2 core schema (see the module docstring)."""
    if text in _NULL:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    if text[0] not in _NUMBER_START:
        return text  # names, commands, keys: no number of any form starts this way
    if text.isdigit() and text.isascii():
        # Unsigned decimal digits (ports, priorities, counts): what the patterns below
        # decide for them, without trying each pattern.
        if text[0] == "0" and len(text) > 1:
            return text  # `022`: a file mode, kept verbatim
        return OversizedInt(text) if len(text) > MAX_INT_DIGITS else int(text)
    if _LEADING_ZERO.fullmatch(text):
        return text  # `022`: a file mode, kept verbatim
    integer = _DECIMAL.fullmatch(text) or _OCTAL.fullmatch(text) or _HEX.fullmatch(text)
    if integer and len(text.lstrip("+-0xo")) > MAX_INT_DIGITS:
        return OversizedInt(text)
    if _DECIMAL.fullmatch(text):
        return int(text)
    if _OCTAL.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text
