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
from typing import Any, Union

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, StreamEndEvent

from .diagnostics import Diagnostics, Location

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64

Scalar = Union[str, int, float, bool, None]


@dataclass(frozen=True)
class ScalarNode:
    """A scalar resolved per the YAML 1.2 core schema (quoted scalars are always strings)."""

    value: Scalar
    location: Location


@dataclass(frozen=True)
class SeqNode:
    """A YAML sequence; `location` is where it starts."""

    items: tuple["Node", ...]
    location: Location


@dataclass(frozen=True)
class MapNode:
    """A YAML mapping with string keys; each entry keeps its key's location and its value."""

    entries: dict[str, tuple[Location, "Node"]]
    location: Location

    def get(self, key: str) -> "Node | None":
        """The value node under `key`, or None when the key is absent."""
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_location(self, key: str) -> Location:
        """Where `key` itself was written (KeyError when absent)."""
        return self.entries[key][0]

    def __contains__(self, key: object) -> bool:
        return key in self.entries


Node = Union[ScalarNode, SeqNode, MapNode]


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
            diags.error(Location(name), f"file is too large ({size} bytes, the limit is 1 MiB)",
                        "split it into several smaller files")
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
            diags.error(Location(name), "file is too large (the limit is 1 MiB)",
                        "split it into several smaller files")
            return None
        text = _decode(data, name, diags)
        if text is None:
            return None
    else:
        text = data
    raw = _compose(text.removeprefix("\ufeff"), name, diags)
    return _convert(raw, name, diags) if raw is not None else None


def _decode(data: bytes, name: str, diags: Diagnostics) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        line = good.count("\n") + 1
        column = len(good) - (good.rfind("\n") + 1) + 1
        diags.error(Location(name, line, column), "file is not valid UTF-8",
                    "save the file as UTF-8")
        return None


class _TooDeep(Exception):
    """Aborts composing: nesting beyond MAX_DEPTH (recursion would not end well)."""

    def __init__(self, mark: Any):
        super().__init__("too deep")
        self.mark = mark


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's composer, reporting anchors, aliases and tags instead of honouring them.

    Only the composer is used (no constructor), so PyYAML's YAML 1.1 implicit typing never
    runs; `_resolve` applies the YAML 1.2 core schema afterwards.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.problems: list[tuple[Any, str, str | None]] = []
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            self.get_event()
            self.problems.append((event.start_mark, f"YAML aliases (*{event.anchor}) are not allowed",
                                  "write the value out in full"))
            # A null placeholder: the alias target is never expanded (no billion laughs).
            return yaml.ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
        self._check_anchor_and_tag(event)
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def _check_anchor_and_tag(self, event: Any) -> None:
        if event.anchor is not None:
            self.problems.append((event.start_mark, f"YAML anchors (&{event.anchor}) are not allowed",
                                  "write the value out in full"))
            event.anchor = None  # so PyYAML does not also complain about a duplicate anchor
        if event.tag is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            self.problems.append((event.start_mark, f"YAML tags ({tag}) are not allowed",
                                  "remove the tag; quote the value if it must stay a string"))


def _mark_location(name: str, mark: Any) -> Location:
    # PyYAML marks are 0-based; ours are 1-based.
    return Location(name, mark.line + 1, mark.column + 1) if mark is not None else Location(name)


def _compose(text: str, name: str, diags: Diagnostics) -> Any:
    loader = None
    try:
        loader = _StrictLoader(text)  # PyYAML's reader checks characters right here
        return _compose_single(loader, name, diags)
    except _TooDeep as exc:
        diags.error(_mark_location(name, exc.mark), f"nesting is deeper than {MAX_DEPTH} levels",
                    "flatten the structure")
    except yaml.MarkedYAMLError as exc:
        diags.error(_mark_location(name, exc.problem_mark or exc.context_mark), _syntax_message(exc))
    except yaml.reader.ReaderError as exc:
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        diags.error(_position_location(text, name, exc.position),
                    f"character {character!r} is not allowed in YAML", "remove it")
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of the above
        diags.error(Location(name), f"invalid YAML: {exc}")
    finally:
        if loader is not None:
            for mark, message, hint in loader.problems:
                diags.error(_mark_location(name, mark), message, hint)
            loader.dispose()
    return None


def _compose_single(loader: _StrictLoader, name: str, diags: Diagnostics) -> Any:
    loader.get_event()  # StreamStartEvent
    if loader.check_event(StreamEndEvent):
        return None
    node = loader.compose_document()
    if not loader.check_event(StreamEndEvent):
        extra = loader.peek_event()
        diags.error(_mark_location(name, extra.start_mark), "a file must hold one YAML document, found another",
                    "remove the '---' separator; put several objects in a list or in several files")
    return node


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    problem = (exc.problem or "syntax error").strip()
    context = f" ({exc.context.strip()})" if exc.context else ""
    return f"invalid YAML: {problem}{context}"


def _position_location(text: str, name: str, position: int) -> Location:
    before = text[:position]
    return Location(name, before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1)


def _convert(raw: Any, name: str, diags: Diagnostics) -> Node:
    location = _mark_location(name, raw.start_mark)
    if isinstance(raw, yaml.MappingNode):
        return _convert_mapping(raw, location, name, diags)
    if isinstance(raw, yaml.SequenceNode):
        return SeqNode(tuple(_convert(item, name, diags) for item in raw.value), location)
    # Quoted and block scalars are always strings; only plain scalars are resolved.
    value = raw.value if raw.style is not None else _resolve(raw.value)
    return ScalarNode(value, location)


def _convert_mapping(raw: yaml.MappingNode, location: Location, name: str, diags: Diagnostics) -> MapNode:
    entries: dict[str, tuple[Location, Node]] = {}
    for raw_key, raw_value in raw.value:
        key_node = _convert(raw_key, name, diags)
        key = key_node.value if isinstance(key_node, ScalarNode) else None
        if not isinstance(key, str):
            diags.error(key_node.location, f"mapping keys must be strings (got {_describe_key(key_node)})",
                        "quote the key")
            continue
        if key in entries:
            first = entries[key][0]
            diags.error(key_node.location, f"duplicate key '{key}' (first defined on line {first.line}, column {first.column})",
                        "remove one of them")
            continue
        entries[key] = (key_node.location, _convert(raw_value, name, diags))
    return MapNode(entries, location)


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


def _resolve(text: str) -> Scalar:
    """The value of a plain scalar under the YAML 1.2 core schema (see the module docstring)."""
    if text in _NULL:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    if _LEADING_ZERO.fullmatch(text):
        return text  # `022`: a file mode, kept verbatim
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
