"""Inventory folder -> `model.Inventory`, with every problem of every file reported at once.

The layout is SPEC §1: `reconciler.yaml`, `teams/*.yaml`, `machines/*.yaml`, `tasks/**/*.yaml`
and `vaults/` (never read here). Each file is read by `yamlio` (strict YAML, positions kept),
split into objects, checked against its kind's JSON Schema (`schemas/`, the same files editors
use), checked for what a schema cannot say (durations, cron, exactly-one-of rules, the task's
folder team) and turned into frozen model values. Cross-object references (a task's machines,
`after`, cycles) are checked later by `compile`, which sees the whole inventory.

Schema errors are worded from the schema itself: `x-expect` says what a value must be,
`x-hint` what to write instead, `title` names the object, and `x-loader: true` marks rules
whose message the loader words itself (so editors still show them, but users read one line).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core import durations
from reconciler.core.codeowners import writable
from reconciler.core.diagnostics import Diagnostic, Diagnostics, Location, did_you_mean
from reconciler.core.errors import raise_if_errors
from reconciler.core.frozen import build_frozen
from reconciler.core.model import (
    AlertTarget,
    Approval,
    CredentialGrants,
    FailureAction,
    Freeze,
    GitSettings,
    HttpSettings,
    Inventory,
    LocalMachineSettings,
    Machine,
    Member,
    Param,
    RetrySpec,
    Role,
    Settings,
    Strategy,
    Task,
    TaskDefaults,
    Team,
    TeamSecretRef,
    Unresolved,
    VaultRef,
    Window,
)
from reconciler.core.params import pattern_problem, value_problem
from reconciler.inventory.rollouts import read_rollout
from reconciler.inventory.schema_check import conforms
from reconciler.inventory.yamlio import MapNode, Node, ScalarNode, SeqNode, read_yaml, to_plain

if TYPE_CHECKING:
    # jsonschema is imported when an object does not conform (`_validator`): a third of
    # `validate`'s start to import, and a valid inventory never needs it (issue 14).
    from jsonschema import Draft202012Validator, ValidationError

YAML_SUFFIXES = (".yaml", ".yml")
SETTINGS_FILES = ("reconciler.yaml", "reconciler.yml")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# `user:` is allowed on a local machine: the OS user its commands run as (transport/local.py).
LOCAL_FORBIDDEN = ("host", "port", "host_key", "key", "key_file")
# Values of these fields may be secrets: errors describe their type, never echo them.
SENSITIVE_FIELD = re.compile(r"(env|key|state)([.\[].*)?|alerts\[\d+\](\.url)?")


@dataclass(frozen=True)
class Kind:
    """One kind of inventory object: its folder (= plural key) and its schema."""

    name: str  # task
    plural: str  # tasks
    recursive: bool  # tasks/** may nest; teams/ and machines/ are flat


KINDS = {
    k.plural: k
    for k in (
        Kind("team", "teams", False),
        Kind("machine", "machines", False),
        Kind("task", "tasks", True),
    )
}
SETTINGS_KIND = Kind("settings", "", False)


# --------------------------------------------------------------------------- public API


def load_inventory(root: str | Path) -> tuple[Inventory, list[Diagnostic]]:
    """Read the inventory folder `root` into an `Inventory`; also return the warnings.

    Raises `InputError` carrying every error of every file at once (the reader keeps going
    after a bad file), so a user fixes the whole inventory in one round. Paths in diagnostics
    are relative to the working directory when the inventory is under it, else absolute.
    """
    inventory, diags, _ = read_inventory(root)
    raise_if_errors(diags)
    return inventory, diags.warnings


def read_inventory(root: str | Path) -> tuple[Inventory, Diagnostics, Unresolved]:
    """Like `load_inventory`, but never raises for a problem inside the files: returns the
    inventory of the objects that are valid, every diagnostic, and what could not be built,
    so `validate` can check references and cycles in the same run (only a missing or
    unreadable inventory folder raises)."""
    diags = Diagnostics()
    root_path = Path(root)
    _check_root(root_path, diags)
    sources = _discover(root_path, diags)
    builder = _InventoryBuilder(diags)
    for source in sources:
        builder.add_file(source)
    unresolved = Unresolved(frozenset(builder.broken), frozenset(builder.unread_kinds))
    return builder.inventory(os.path.abspath(root_path)), diags, unresolved


def display_path(path: str | Path, bases: tuple[str, ...] | None = None) -> str:
    """`path` as diagnostics show it: relative to the working directory when under it.

    `bases` (from `working_directories()`) saves finding the working directory again for
    each file of an inventory: its real path costs a system call per component."""
    absolute = os.path.abspath(path)
    for base in bases if bases is not None else working_directories():
        if absolute == base:
            return "."
        prefix = base if base.endswith(os.sep) else base + os.sep
        if absolute.startswith(prefix):
            return absolute[len(prefix) :]
    return absolute


def working_directories() -> tuple[str, str]:
    """The working directory as named, and as resolved (the paths `display_path` shortens)."""
    cwd = os.getcwd()
    return cwd, os.path.realpath(cwd)


# --------------------------------------------------------------------------- finding files


@dataclass(frozen=True)
class Source:
    """One YAML file to read, with the team its folder implies (tasks/<team>/...)."""

    path: Path
    kind: Kind
    display: str
    folder_team: str | None = None


def _check_root(root: Path, diags: Diagnostics) -> None:
    shown = display_path(root)
    if not root.exists():
        diags.error(
            Location(shown),
            "inventory folder not found",
            "pass --inventory DIR (or set RECONCILE_INVENTORY), or create one with 'reconcile init'",
        )
    elif not root.is_dir():
        diags.error(Location(shown), "the inventory is not a folder", "pass --inventory DIR")
    raise_if_errors(diags)


def _discover(root: Path, diags: Diagnostics) -> list[Source]:
    """Every YAML file the loader reads, sorted; symlinks and stray files are reported."""
    real_root = os.path.realpath(root)
    bases = working_directories()  # once, not once per file (display_path)
    sources: list[Source] = []
    for entry in _entries(root, diags, bases):
        shown = display_path(entry, bases)
        if entry.name in SETTINGS_FILES:
            if _usable_file(entry, shown, diags):
                sources.append(Source(entry, SETTINGS_KIND, shown))
        elif entry.name in KINDS or entry.name == "vaults":
            if _usable_dir(entry, shown, diags):
                sources.extend(_walk(entry, KINDS.get(entry.name), (), diags, bases))
        elif entry.name.endswith(YAML_SUFFIXES) and not entry.is_symlink():
            diags.warning(
                Location(shown),
                "this file is not read",
                "YAML files belong in teams/, machines/ or tasks/, settings in reconciler.yaml",
            )
    real_folders: dict[str, str] = {}
    return [s for s in sources if _inside(s, real_root, diags, real_folders)]


def _entries(folder: Path, diags: Diagnostics, bases: tuple[str, ...] | None = None) -> list[Path]:
    # Hidden entries (.git, editor files) are never part of the inventory.
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        shown = display_path(folder, bases)
        diags.error(Location(shown), f"cannot read folder: {exc.strerror or exc}")
        return []


def _walk(
    folder: Path,
    kind: Kind | None,
    parts: tuple[str, ...],
    diags: Diagnostics,
    bases: tuple[str, ...] | None = None,
) -> Iterator[Source]:
    """Sources under `folder`; `kind` None (vaults/) only checks for symlinks."""
    for entry in _entries(folder, diags, bases):
        shown = display_path(entry, bases)
        # One lstat per entry says symlink, folder or regular file (is_symlink, is_dir and
        # _usable_file asked three times, for each of thousands of task files).
        try:
            mode = entry.lstat().st_mode
        except OSError:
            if kind is not None and entry.name.endswith(YAML_SUFFIXES):
                raise
            continue  # gone since the folder was listed: nothing to read
        if stat.S_ISLNK(mode):
            _symlink_error(entry, shown, diags)
        elif stat.S_ISDIR(mode):
            if kind is not None and kind.recursive:
                yield from _walk(entry, kind, parts + (entry.name,), diags, bases)
            elif kind is not None:
                diags.warning(
                    Location(shown),
                    f"subfolders of {kind.plural}/ are not read",
                    f"move its files into {kind.plural}/",
                )
        elif kind is not None and entry.name.endswith(YAML_SUFFIXES):
            if _regular(mode, shown, diags):
                yield Source(entry, kind, shown, parts[0] if parts else None)


def _usable_file(path: Path, shown: str, diags: Diagnostics) -> bool:
    if path.is_symlink():
        _symlink_error(path, shown, diags)
        return False
    return _regular(path.lstat().st_mode, shown, diags)


def _regular(mode: int, shown: str, diags: Diagnostics) -> bool:
    if not stat.S_ISREG(mode):
        # A FIFO or device would block or stream forever.
        diags.error(Location(shown), "not a regular file", "replace it with a plain file")
        return False
    return True


def _usable_dir(path: Path, shown: str, diags: Diagnostics) -> bool:
    if path.is_symlink():
        _symlink_error(path, shown, diags)
        return False
    if not path.is_dir():
        diags.error(Location(shown), f"'{path.name}' must be a folder")
        return False
    return True


def _symlink_error(path: Path, shown: str, diags: Diagnostics) -> None:
    # Symlinks could pull files from outside the reviewed repository into the inventory.
    diags.error(
        Location(shown),
        "symbolic links are not allowed in the inventory",
        "replace the link with the file or folder itself",
    )


def _inside(
    source: Source, real_root: str, diags: Diagnostics, real_folders: dict[str, str]
) -> bool:
    # The file's real path is its folder's, resolved once per folder, and its own name: a
    # source is never a symlink itself (the walk refused those).
    folder, name = os.path.split(os.path.abspath(source.path))
    real_folder = real_folders.get(folder)
    if real_folder is None:
        real_folder = real_folders[folder] = os.path.realpath(folder)
    real = os.path.join(real_folder, name)
    prefix = real_root if real_root.endswith(os.sep) else real_root + os.sep
    if real.startswith(prefix) and real != real_root:
        return True
    diags.error(
        Location(source.display),
        "file resolves outside the inventory folder",
        "keep every inventory file inside the inventory folder",
    )
    return False


# --------------------------------------------------------------------------- building the inventory


class _InventoryBuilder:
    """Collects model values from every file, reporting duplicates where they occur."""

    def __init__(self, diags: Diagnostics):
        self.diags = diags
        self.teams: dict[str, Team] = {}
        self.machines: dict[str, Machine] = {}
        self.tasks: dict[str, Task] = {}
        self.settings: Settings | None = None
        self.settings_location: Location | None = None
        self.first_seen: dict[tuple[str, str], Location] = {}
        self.broken: set[tuple[str, str]] = set()  # (kind, key) of objects with errors
        self.unread_kinds: set[str] = set()  # kinds with objects whose key is unknown

    def add_file(self, source: Source) -> None:
        """Read `source`, check each object in it and keep the valid ones."""
        file_diags = Diagnostics()
        node = read_yaml(source.path, file_diags, source.display)
        self.diags.extend(file_diags.items)
        if file_diags.errors:
            self.unread_kinds.add(source.kind.name)
            return  # broken YAML: schema messages on top of it would only confuse
        errors_before = len(self.diags.errors)
        objects = _split_objects(node, source, self.diags)
        if len(self.diags.errors) > errors_before:
            self.unread_kinds.add(source.kind.name)
        for obj_node in objects:
            self._add_object(_Object(obj_node, source.kind, self.diags), source)

    def _add_object(self, obj: _Object, source: Source) -> None:
        obj.validate()
        if source.kind is SETTINGS_KIND:
            self._add_settings(obj, build_settings(obj))
            return
        value = BUILDERS[source.kind.name](obj, source)
        key = _object_key(value)
        if key is None:
            self.unread_kinds.add(source.kind.name)
            return
        if not self._claim(source.kind.name, key, obj):
            return
        if not obj.failed:
            getattr(self, source.kind.plural)[key] = value
        else:
            self.broken.add((source.kind.name, key))

    def _claim(self, kind: str, key: str, obj: _Object) -> bool:
        where = obj.value_location("name")
        first = self.first_seen.get((kind, key))
        if first is None:
            self.first_seen[(kind, key)] = where
            return True
        label = "task id" if kind == "task" else kind
        self.diags.error(
            where,
            f"duplicate {label} '{key}' (first defined at {first})",
            f"rename or remove one of the two {kind}s",
        )
        return False

    def _add_settings(self, obj: _Object, settings: Settings) -> None:
        if self.settings_location is not None:
            self.diags.error(
                obj.node.location,
                "both reconciler.yaml and reconciler.yml exist",
                f"keep only one (the other is {self.settings_location.path})",
            )
        elif not obj.failed:
            self.settings, self.settings_location = settings, obj.node.location

    def inventory(self, root: str) -> Inventory:
        """The inventory of everything added, every mapping sorted by key."""
        return Inventory(
            root=root,
            teams=dict(sorted(self.teams.items())),
            machines=dict(sorted(self.machines.items())),
            tasks=dict(sorted(self.tasks.items())),
            settings=self.settings or Settings(),
        )


def _object_key(value: Team | Machine | Task) -> str | None:
    if isinstance(value, Task):
        ok = isinstance(value.name, str) and isinstance(value.team, str)
        return value.id if ok else None
    return value.name if isinstance(value.name, str) else None


def _split_objects(node: Node | None, source: Source, diags: Diagnostics) -> list[MapNode]:
    """The objects of one file: the file's mapping, or the items under the plural key."""
    kind = source.kind
    noun = kind.name if kind is SETTINGS_KIND else f"a {kind.name}"
    if node is None:
        if kind is not SETTINGS_KIND:
            diags.warning(Location(source.display), "file is empty")
        return []
    if not isinstance(node, MapNode):
        hint = (
            f"put the list under '{kind.plural}:'"
            if isinstance(node, SeqNode) and kind.plural
            else None
        )
        diags.error(node.location, f"expected {noun} mapping (got {_node_type(node)})", hint)
        return []
    if kind.plural and kind.plural in node:
        return _plural_items(node, kind, diags)
    misplaced = [p for p in KINDS if p in node and len(node.entries) == 1]
    if misplaced:
        diags.error(
            node.key_location(misplaced[0]),
            f"'{misplaced[0]}:' found in a {kind.name} file",
            f"move this file to {misplaced[0]}/",
        )
        return []
    return [node]


def _plural_items(node: MapNode, kind: Kind, diags: Diagnostics) -> list[MapNode]:
    for key in node.entries:
        if key != kind.plural:
            diags.error(
                node.key_location(key),
                f"unknown key '{key}' next to '{kind.plural}:'",
                f"a file holds one {kind.name}, or only a '{kind.plural}:' list",
            )
    items = node.get(kind.plural)
    if not isinstance(items, SeqNode):
        diags.error(
            items.location,
            f"'{kind.plural}:' must be a list of {kind.plural} (got {_node_type(items)})",
        )
        return []
    good = [item for item in items.items if isinstance(item, MapNode)]
    for item in items.items:
        if not isinstance(item, MapNode):
            diags.error(
                item.location,
                f"each entry of '{kind.plural}:' must be a {kind.name} mapping "
                f"(got {_node_type(item)})",
            )
    return good


def _node_type(node: Node) -> str:
    if isinstance(node, MapNode):
        return "a mapping"
    if isinstance(node, SeqNode):
        return "an empty list" if not node.items else "a list"
    return _type_word(node.value)


def _type_word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "a string"


# --------------------------------------------------------------------------- one object


class _Object:
    """One YAML mapping being checked and built; collects its own errors.

    Schema errors come first; the builders then add what the schema cannot express, but skip
    a value the schema already flagged (one diagnostic per problem).
    """

    def __init__(self, node: MapNode, kind: Kind, diags: Diagnostics):
        self.node = node
        self.kind = kind
        self.diags = diags
        self.failed = False
        self.flagged: set[Location] = set()
        self.reported: set[tuple[Location, str]] = set()

    @property
    def label(self) -> str:
        """`task 'web'`, or just `task` while the name is unknown."""
        name = self.text("name")
        return f"{self.kind.name} '{name}'" if name else self.kind.name

    def get(self, key: str) -> Node | None:
        return self.node.get(key)

    def text(self, key: str) -> str | None:
        return _str(self.node.get(key))

    def value_location(self, key: str) -> Location:
        value = self.node.get(key)
        return value.location if value is not None else self.node.location

    def later_key(self, *keys: str) -> Location:
        """The location of whichever of `keys` was written last (where a conflict shows)."""
        return max(self.node.key_location(k) for k in keys if k in self.node)

    def error(self, location: Location, message: str, hint: str | None = None) -> None:
        """Report a problem unless the schema already flagged this very value."""
        self.failed = True
        if location in self.flagged or (location, message) in self.reported:
            return
        self.reported.add((location, message))
        self.diags.error(location, message, hint)

    def validate(self) -> None:
        """Check the object against its kind's schema, reporting readable one-liners."""
        plain = to_plain(self.node)
        if conforms(_schema_of(self.kind.name), plain):
            return  # certainly valid: jsonschema would report nothing (schema_check.py)
        for error in _validator(self.kind.name).iter_errors(plain):
            for location, message, hint, flags in _schema_diagnostics(error, self):
                self.error(location, message, hint)
                if flags:
                    self.flagged.add(location)

    # Durations and cron strings are checked here, not by the schema (their schema
    # definitions carry `x-loader`), so each bad one gets one message with a precise hint.

    def duration(self, node: Node | None, field_name: str, minimum: int = 0) -> int | None:
        """Seconds of a duration value, or None (reported) when it cannot be read."""
        if node is None:
            return None
        value = node.value if isinstance(node, ScalarNode) else to_plain(node)
        try:
            seconds = durations.parse_duration(value)
        except durations.DurationError as exc:
            self.error(
                node.location,
                f"{field_name} must be a duration such as 30s, 5m or 1h30m "
                f"(got {_got(value, field_name)})",
                str(exc),
            )
            return None
        if seconds < minimum:
            self.error(
                node.location,
                f"{field_name} must be at least {durations.format_duration(minimum)} "
                f"(got {_got(value, field_name)})",
            )
        return seconds

    def cron(self, node: Node | None, field_name: str) -> str | None:
        """A schedule a pass can use (`schedule.cron_problem`), or None (reported) when not."""
        if node is None:
            return None
        # Imported here: `schedule` loads croniter, which an inventory without a schedule
        # or a deny window never needs (`validate` starts in under 0.15 s, issue 14).
        from reconciler.core.schedule import CRON_HINT, cron_problem

        return self._named_text(
            node,
            field_name,
            ("a cron expression", "a valid cron expression"),
            cron_problem,
            CRON_HINT,
        )

    def timezone(self, node: Node | None, field_name: str) -> str | None:
        """An IANA time zone name (`schedule.zone_problem`), or None (reported) when not."""
        if node is None:
            return None
        from reconciler.core.schedule import ZONE_HINT, zone_problem

        return self._named_text(
            node, field_name, ("a time zone name", "a known time zone"), zone_problem, ZONE_HINT
        )

    def _named_text(
        self,
        node: Node,
        field_name: str,
        words: tuple[str, str],
        problem_of: Callable[[str], tuple[str | None, str] | None],
        hint: str,
    ) -> str | None:
        """A string `problem_of` finds nothing wrong with, or None (reported): not a string
        is "must be {words[0]}", a string it refuses "is not {words[1]} (why)"."""
        text = _str(node)
        if text is None:
            value = node.value if isinstance(node, ScalarNode) else to_plain(node)
            self.error(
                node.location, f"{field_name} must be {words[0]} (got {_got(value, '')})", hint
            )
            return None
        problem = problem_of(text)
        if problem is not None:
            why, problem_hint = problem
            detail = f" ({why})" if why else ""
            self.error(
                node.location,
                f"{field_name} is not {words[1]}{detail} (got {_got(text, '')})",
                problem_hint,
            )
            return None
        return text


# --------------------------------------------------------------------------- schema errors


@cache
def load_schema(kind: str) -> dict:
    """The JSON Schema of `kind` (team, machine, task, settings) as shipped in `schemas/`."""
    text = (
        resources.files("reconciler.inventory")
        .joinpath("schemas", f"{kind}.schema.json")
        .read_text("utf-8")
    )
    return json.loads(text)


@cache
def _schema_of(kind: str) -> dict:
    """The schema one object of `kind` is checked against: `$defs/<kind>` with its
    `#/$defs/...` references inlined and its `x-loader` rules left out (the builders check and
    word those themselves, so validating them again only cost time). Both halved the loader's
    time on large inventories; the shipped schemas have no recursive references, so inlining
    ends."""
    schema = load_schema(kind)
    return _inline_refs(schema["$defs"][kind], schema["$defs"])


@cache
def _validator(kind: str) -> Draft202012Validator:
    """jsonschema's validator of `_schema_of(kind)`, for the objects that do not conform."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_schema_of(kind))


def _inline_refs(node, defs: dict):
    if isinstance(node, dict):
        if node.get("x-loader"):
            return {}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
            rest = {k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
            return (
                {**target, **rest} if not (set(target) & set(rest)) else {"allOf": [target], **rest}
            )
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


SchemaDiagnostic = tuple[Location, str, "str | None", bool]


def _schema_diagnostics(error: ValidationError, obj: _Object) -> list[SchemaDiagnostic]:
    """Readable diagnostics for one jsonschema error; the bool says "this value is flagged"."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if schema.get("x-loader"):
        return []  # the builders word this rule themselves
    path = list(error.absolute_path)
    if list(error.absolute_schema_path)[-2:-1] == ["propertyNames"]:
        return [_property_name_error(error, obj, path, schema)]
    handler = _SCHEMA_HANDLERS.get(error.validator, _value_error)
    return handler(error, obj, path, schema)


def _required_errors(
    error: ValidationError, obj: _Object, path: list, schema: dict
) -> list[SchemaDiagnostic]:
    node = _node_at(obj.node, path)
    title = schema.get("title", obj.kind.name)
    name = error.instance.get("name") if isinstance(error.instance.get("name"), str) else None
    who = f"{title} '{name}'" if name else title
    missing = [p for p in error.validator_value if p not in error.instance]
    return [(node.location, f"{who} needs '{p}'", None, False) for p in missing]


def _unknown_key_errors(
    error: ValidationError, obj: _Object, path: list, schema: dict
) -> list[SchemaDiagnostic]:
    node = _node_at(obj.node, path)
    known = schema.get("properties", {})
    title = schema.get("title", obj.kind.name)
    return [
        (node.key_location(key), f"unknown key '{key}' in {title}", did_you_mean(key, known), False)
        for key in error.instance
        if key not in known
    ]


def _unique_error(
    error: ValidationError, obj: _Object, path: list, schema: dict
) -> list[SchemaDiagnostic]:
    node = _node_at(obj.node, path)
    seen: list = []
    for index, item in enumerate(error.instance):
        if item in seen:
            where = node.items[index].location if isinstance(node, SeqNode) else node.location
            return [
                (
                    where,
                    f"{_field(path)} lists {_got(item, _field(path))} more than once",
                    "remove the repeat",
                    True,
                )
            ]
        seen.append(item)
    return []


def _enum_error(
    error: ValidationError, obj: _Object, path: list, schema: dict
) -> list[SchemaDiagnostic]:
    node = _node_at(obj.node, path)
    choices = [str(c) for c in error.validator_value]
    hint = did_you_mean(error.instance, choices) if isinstance(error.instance, str) else None
    message = f"{_field(path)} must be one of {', '.join(choices)} (got {_got(error.instance, _field(path))})"
    return [(node.location, message, hint, True)]


def _value_error(
    error: ValidationError, obj: _Object, path: list, schema: dict
) -> list[SchemaDiagnostic]:
    """type, pattern, minimum, maximum, minLength, minItems...: `X must be Y (got Z)`."""
    node = _node_at(obj.node, path)
    # x-expect describes a valid value; a length cap is worded on its own.
    expect = (
        _expect_from(error)
        if error.validator == "maxLength"
        else schema.get("x-expect") or _expect_from(error)
    )
    if expect is None:
        return [(node.location, f"{_field(path)}: {error.message}", None, True)]
    hint = schema.get("x-hint")
    if schema.get("x-kind") == "name" and error.validator == "pattern":
        hint = _name_hint(error.instance)
    field_name = _field(path) or obj.kind.name
    return [
        (
            node.location,
            f"{field_name} must be {expect} (got {_got(error.instance, field_name)})",
            hint,
            True,
        )
    ]


def _property_name_error(
    error: ValidationError, obj: _Object, path: list, schema: dict
) -> SchemaDiagnostic:
    node = _node_at(obj.node, path)
    key = error.instance
    where = node.key_location(key) if isinstance(node, MapNode) and key in node else node.location
    expect = schema.get("x-expect", "a valid name")
    return (where, f"{_field(path)} name '{key}' must be {expect}", None, True)


_SCHEMA_HANDLERS: dict[str, Callable[..., list[SchemaDiagnostic]]] = {
    "required": _required_errors,
    "additionalProperties": _unknown_key_errors,
    "uniqueItems": _unique_error,
    "enum": _enum_error,
}

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _expect_from(error: ValidationError) -> str | None:
    if error.validator == "type":
        types = (
            error.validator_value
            if isinstance(error.validator_value, list)
            else [error.validator_value]
        )
        return " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    bounds = {
        "minimum": "at least",
        "maximum": "at most",
        "minItems": "a list of at least",
        "minLength": "a string of at least",
        "maxLength": "at most",
    }
    if error.validator in bounds:
        unit = {
            "minItems": " item(s)",
            "minLength": " character(s)",
            "maxLength": " characters long",
        }.get(error.validator, "")
        return f"{bounds[error.validator]} {error.validator_value}{unit}"
    return None


def _name_hint(value: str) -> str:
    suggestion = re.sub(r"[^a-z0-9._-]+", "-", value.lower()).strip("-._")
    if suggestion and NAME_RE.fullmatch(suggestion):
        return f"use lowercase letters, digits, '.', '_' and '-', e.g. '{suggestion}'"
    return "use lowercase letters, digits, '.', '_' and '-'"


def _node_at(node: Node, path: list) -> Node:
    """The node at a jsonschema instance path (the deepest one found)."""
    for part in path:
        child = None
        if isinstance(node, MapNode) and isinstance(part, str):
            child = node.get(part)
        elif isinstance(node, SeqNode) and isinstance(part, int) and part < len(node.items):
            child = node.items[part]
        if child is None:
            return node
        node = child
    return node


def _field(path: list) -> str:
    """`retry.delay`, `windows[0].duration`, `env.PORT` for an instance path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _got(value: Any, field_name: str) -> str:
    """How a bad value is shown; possible secrets show only their type."""
    if SENSITIVE_FIELD.fullmatch(field_name) or isinstance(value, (dict, list)) or value is None:
        return _type_word(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + '..."'


# --------------------------------------------------------------------------- typed node readers


def _str(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) and isinstance(node.value, str) else None


def _int(node: Node | None) -> int | None:
    value = node.value if isinstance(node, ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value  # never through float(): 400 digits overflow it (the schema refuses them)
    # JSON Schema counts 2.0 as an integer; the model wants a real int.
    return int(value) if value.is_integer() else None


def _number(node: Node | None) -> float | None:
    value = node.value if isinstance(node, ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: the schema's maximum refuses it
        return None


def _bool(node: Node | None) -> bool | None:
    return node.value if isinstance(node, ScalarNode) and isinstance(node.value, bool) else None


def _strings(node: Node | None) -> tuple[str, ...] | None:
    if isinstance(node, ScalarNode) and isinstance(node.value, str):
        return (node.value,)
    if not isinstance(node, SeqNode):
        return None
    return tuple(
        [
            item.value
            for item in node.items
            if isinstance(item, ScalarNode) and isinstance(item.value, str)
        ]
    )


def _string_map(node: Node | None) -> dict[str, str] | None:
    if not isinstance(node, MapNode):
        return None
    return {k: v for k, v in ((k, _str(n)) for k, (_, n) in node.entries.items()) if v is not None}


def _maps(node: Node | None) -> list[MapNode]:
    return (
        [item for item in node.items if isinstance(item, MapNode)]
        if isinstance(node, SeqNode)
        else []
    )


def _enum(cls: Any, node: Node | None, default: Any = None) -> Any:
    text = _str(node)
    return cls(text) if text in _enum_values(cls) else default


@cache
def _enum_values(cls: Any) -> frozenset:
    # Once per enum, not once per task (iterating an Enum is slow).
    return frozenset(member.value for member in cls)


def _vault_ref(node: Node | None) -> VaultRef | None:
    if isinstance(node, MapNode) and _str(node.get("vault")):
        return VaultRef(_str(node.get("vault")), node.location)
    return None


# --------------------------------------------------------------------------- shared parts


def _retry(obj: _Object, node: Node | None, prefix: str) -> RetrySpec | None:
    if not isinstance(node, MapNode):
        return None
    return RetrySpec(
        count=_int(node.get("count")),
        delay=obj.duration(node.get("delay"), f"{prefix}.delay"),
        backoff=_number(node.get("backoff")),
        max_delay=obj.duration(node.get("max_delay"), f"{prefix}.max_delay"),
        failure_action=_enum(FailureAction, node.get("failure_action")),
    )


def _windows(obj: _Object, node: Node | None) -> tuple[Window, ...]:
    windows = []
    for index, item in enumerate(_maps(node)):
        deny = obj.cron(item.get("deny"), f"windows[{index}].deny")
        duration = obj.duration(item.get("duration"), f"windows[{index}].duration", minimum=1)
        zone = obj.timezone(item.get("timezone"), f"windows[{index}].timezone")
        if deny is not None and duration is not None:
            windows.append(Window(deny, duration, item.location, zone))
    return tuple(windows)


def _freeze(obj: _Object, node: Node | None) -> Freeze | None:
    """`suspend: {reason, until, allow_priority_1}` (the schema checked its shape)."""
    if not isinstance(node, MapNode):
        return None
    reason = _str(node.get("reason"))
    # The schemas' reason pattern says the same (x-loader: worded here): not blank once
    # trimmed of whitespace (str.strip's), no control character or line separator left.
    if reason is not None and not reason.strip():
        obj.error(
            node.get("reason").location,
            "suspend.reason is empty",
            'say why runs are held, e.g. reason: "INC-123 database failover"',
        )
        reason = None
    if reason is not None and any(
        unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in reason.strip()
    ):
        # One line: it is shown beside every held run, in a table cell of the PR comment.
        obj.error(
            node.get("reason").location,
            "suspend.reason must be one line (it holds a newline or a control character)",
            "write the reason on one line; put details in the incident it names",
        )
        reason = None
    until = None
    until_node = node.get("until")
    if until_node is not None:
        text = _str(until_node)
        until = _instant(text) if text is not None else None
        if until is None:
            value = until_node.value if isinstance(until_node, ScalarNode) else None
            obj.error(
                until_node.location,
                "suspend.until must be a time with its zone "
                f"(got {_node_type(until_node) if value is None else repr(value)})",
                "write it as 2026-12-24T00:00Z or 2026-12-24T01:00+01:00",
            )
    if reason is None:
        return None
    return Freeze(reason.strip(), until, bool(_bool(node.get("allow_priority_1"))), node.location)


def _approval(node: Node | None) -> Approval | None:
    """`approval: {role, count}` (the schema checked its shape: role admin or operator,
    count an integer of at least 1)."""
    if not isinstance(node, MapNode):
        return None
    role = _enum(Role, node.get("role"), None)
    count = _int(node.get("count"))
    if role not in (Role.ADMIN, Role.OPERATOR) or (count is not None and count < 1):
        return None
    return Approval(role, 1 if count is None else count, node.location)


# `suspend.until`: exactly the form the schemas' pattern takes (YYYY-MM-DDTHH:MM[:SS[.fff]],
# `T`, `t` or a space between, then Z or ±HH[:]MM), not every form Python's fromisoformat
# reads (basic, week, an hour alone, a decimal comma, offset seconds, blanks around it).
_INSTANT = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?)?"
    r"(?:(?P<utc>Z)|(?P<sign>[+-])(?P<oh>[0-9]{2}):?(?P<om>[0-9]{2}))",
    re.ASCII,
)


def _instant(text: str) -> datetime | None:
    """A time with its zone in the documented form (`_INSTANT`), in UTC; None if it is not
    one (a day the month does not have, year 0000, an offset of 24 hours or more)."""
    match = _INSTANT.fullmatch(text)
    if match is None:
        return None
    year, month, day = (int(part) for part in match["date"].split("-"))
    offset = timedelta(0)
    if match["sign"]:
        hours, minutes = int(match["oh"]), int(match["om"])
        if hours > 23 or minutes > 59:
            return None
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if match["sign"] == "-" else 1)
    try:
        moment = datetime(
            year,
            month,
            day,
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"] or 0),
            int((match["fraction"] or "0")[:6].ljust(6, "0")),
            tzinfo=timezone(offset),
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # 2030-02-30; 9999-12-31T23:59-14:00 (past Python's)
        return None


def _exactly_one(obj: _Object, first: str, second: str, hint: str) -> None:
    entries = obj.node.entries
    if first in entries and second in entries:
        obj.error(
            obj.later_key(first, second),
            f"{obj.label} has both '{first}' and '{second}'",
            f"keep only one: {hint}",
        )
    elif first not in entries and second not in entries:
        obj.error(obj.node.location, f"{obj.label} needs '{first}' or '{second}'", hint)


# --------------------------------------------------------------------------- builders


def build_task(obj: _Object, source: Source) -> Task:
    """A `Task` from a task mapping; problems go to `obj` (check `obj.failed`)."""
    # Its values by key, read once: a thousand tasks ask for 23 fields each, and most are
    # absent (a plain dict's get, not the node's and the object's methods in turn).
    values = {key: value for key, (_, value) in obj.node.entries.items()}
    get = values.get
    _exactly_one(
        obj, "machines", "selector", "machines lists targets by name, selector picks them by label"
    )
    _exactly_one(obj, "command", "script", "command for one line, script: | for several")
    if "timezone" in values and "schedule" not in values:
        obj.diags.warning(
            obj.node.key_location("timezone"),
            f"{obj.label}: timezone has no effect without a schedule",
            "add a schedule, or remove timezone",
        )
    if "rollout" in values and _str(get("strategy")) == Strategy.ONE.value:
        obj.error(
            obj.value_location("rollout"),
            f"{obj.label} has a rollout but strategy one: it runs on one machine, there is "
            "nothing to roll out in batches",
            "remove rollout, or use strategy all",
        )
    if "grace" in values and "schedule" not in values:
        obj.diags.warning(
            obj.node.key_location("grace"),
            f"{obj.label}: grace has no effect without a schedule",
            "add a schedule, or remove grace",
        )
    # Every field given: made without Task's generated __init__ (core/frozen.py says why).
    return build_frozen(
        Task,
        name=_str(get("name")),
        team=_task_team(obj, source.folder_team),
        description=_str(get("description")),
        machines=_strings(get("machines")),
        selector=_string_map(get("selector")),
        strategy=_enum(Strategy, get("strategy"), Strategy.ALL),
        command=_str(get("command")),
        script=_str(get("script")),
        priority=_int(get("priority")),
        schedule=obj.cron(get("schedule"), "schedule"),
        timezone=obj.timezone(get("timezone"), "timezone"),
        after=_strings(get("after")) or (),
        timeout=obj.duration(get("timeout"), "timeout", minimum=1),
        alert_after=obj.duration(get("alert_after"), "alert_after", minimum=1),
        grace=obj.duration(get("grace"), "grace"),
        retry=_retry(obj, get("retry"), "retry"),
        env=_env(obj, get("env")),
        check=_str(get("check")),
        idempotent=bool(_bool(get("idempotent"))),
        suspend=_freeze(obj, get("suspend")),
        approval=_approval(get("approval")),
        rollout=read_rollout(obj, get("rollout"), "rollout"),
        params=_params(obj, get("params"), get("env")),
        location=obj.node.location,
        field_locations=_task_field_locations(obj.node, values),
    )


def _task_team(obj: _Object, folder_team: str | None) -> str | None:
    """The task's team: as written, else its folder's (tasks/<team>/...)."""
    node = obj.get("team")
    if node is None:
        if folder_team is None:
            obj.error(
                obj.node.location,
                f"{obj.label} needs 'team'",
                "add team: NAME, or move the file into tasks/<team>/",
            )
        elif not NAME_RE.fullmatch(folder_team):
            obj.error(
                obj.node.location,
                f"folder tasks/{folder_team}/ is not a valid team name",
                "rename the folder after its team (lowercase letters, digits, '.', '_', '-')",
            )
        return folder_team
    team = _str(node)
    if team is not None and folder_team is not None and team != folder_team:
        obj.error(
            node.location,
            f"team '{team}' contradicts the folder tasks/{folder_team}/",
            f"move the file into tasks/{team}/, or set team: {folder_team}",
        )
    return team


# The reconciler sets RECONCILE_RUN_ID, RECONCILE_TASK, RECONCILE_MACHINE, RECONCILE_ATTEMPT and
# RECONCILE_VERSION for every run (executor.run_environment); the reaper finds an orphaned
# command by its RECONCILE_RUN_ID. A task overriding one would hide its own runs, so the
# whole prefix is reserved, including names a later version may add.
RESERVED_ENV_PREFIX = "RECONCILE_"
# Names bash keeps for itself (read-only, arrays, or set anew at every use): over SSH a task's
# environment is set by bash (the runner), where `export UID=1000` fails and the task would see
# the real uid. Refused on every transport, so a task means the same wherever it runs.
SHELL_RESERVED = frozenset(
    "UID EUID PPID GROUPS RANDOM SRANDOM SECONDS LINENO HISTCMD FUNCNAME DIRSTACK PIPESTATUS "
    "SHELLOPTS EPOCHSECONDS EPOCHREALTIME _".split()
)


def shell_reserved(name: str) -> bool:
    return name in SHELL_RESERVED or name.startswith("BASH")


def _env(obj: _Object, node: Node | None) -> tuple[tuple[str, str | VaultRef], ...]:
    if not isinstance(node, MapNode):
        return ()
    pairs = []
    for name, (_, value) in node.entries.items():
        if name.startswith(RESERVED_ENV_PREFIX):
            obj.error(
                node.key_location(name),
                f"env name '{name}' is reserved: the reconciler "
                f"sets {RESERVED_ENV_PREFIX}* names itself for every run",
                f"rename it, e.g. '{name[len(RESERVED_ENV_PREFIX) :] or 'MY_NAME'}'",
            )
            continue
        if shell_reserved(name):
            obj.error(
                node.key_location(name),
                f"env name '{name}' is reserved by the shell (bash sets it itself), so the task "
                "would not see the value given",
                f"rename it, e.g. 'MY_{name.strip('_') or 'VALUE'}'",
            )
            continue
        resolved = _str(value) if isinstance(value, ScalarNode) else _vault_ref(value)
        if resolved is not None:
            pairs.append((name, resolved))
    return tuple(pairs)


def _params(obj: _Object, node: Node | None, env: Node | None) -> tuple[Param, ...]:
    """`params:` (issue 16 §3): what `reconcile run --param` may set. The schema checked the
    shape (names, strings, a non-empty list of allowed values); here: the reserved prefix, a
    name the task's `env` already sets, a pattern that is no regular expression, and a
    default its own bounds refuse."""
    if not isinstance(node, MapNode):
        return ()
    taken = set(env.entries) if isinstance(env, MapNode) else set()
    found = []
    for name, (key_at, value) in node.entries.items():
        if name.startswith(RESERVED_ENV_PREFIX):
            obj.error(
                key_at,
                f"param name '{name}' is reserved: the reconciler sets {RESERVED_ENV_PREFIX}* "
                "names itself for every run",
                f"rename it, e.g. '{name[len(RESERVED_ENV_PREFIX) :] or 'MY_NAME'}'",
            )
            continue
        if shell_reserved(name):
            obj.error(
                key_at,
                f"param name '{name}' is reserved by the shell (bash sets it itself), so the "
                "task would not see the value given",
                f"rename it, e.g. 'MY_{name.strip('_') or 'VALUE'}'",
            )
            continue
        if name in taken:
            obj.error(
                key_at,
                f"param '{name}' is also set by env: a run could not tell which value wins",
                f"remove {name} from env and give the param a default instead",
            )
            continue
        param = _param(obj, name, value)
        if param is not None:
            found.append(param)
    return tuple(found)


def _param(obj: _Object, name: str, node: Node) -> Param | None:
    """One parameter's declaration, or None (reported, or flagged by the schema)."""
    if not isinstance(node, MapNode):
        return None
    default, pattern = _str(node.get("default")), _str(node.get("pattern"))
    allowed = _strings(node.get("allowed"))
    if pattern is not None and (why := pattern_problem(pattern)) is not None:
        obj.error(
            node.get("pattern").location,
            f"params.{name}.pattern is not a valid regular expression ({why})",
            "write a Python regular expression the whole value must match, e.g. "
            "'^[0-9]{4}-[0-9]{2}-[0-9]{2}$'",
        )
        return None
    param = Param(name, default, allowed, pattern, node.location)
    if default is not None and (why := value_problem(replace(param, default=None), default)):
        obj.error(
            node.get("default").location,
            f"params.{name}.default is refused by its own bounds: {why}",
            "make the default one of the values the param allows",
        )
        return None
    return param


def _task_field_locations(node: MapNode, values: dict[str, Node]) -> dict[str, Location]:
    # Where each value was written, so compile and lint can point at the value itself.
    locations = {key: value.location for key, value in values.items()}
    env = values.get("env")
    if isinstance(env, MapNode):
        locations.update({f"env.{k}": v.location for k, (_, v) in env.entries.items()})
    return locations


def build_machine(obj: _Object, source: Source) -> Machine:
    """A `Machine` from a machine mapping; problems go to `obj` (check `obj.failed`)."""
    get = obj.get
    transport = obj.text("transport") or "ssh"
    if transport == "ssh":
        _check_ssh_machine(obj)
    elif transport == "local":
        _check_local_machine(obj)
    if "key" in obj.node and "key_file" in obj.node:
        obj.error(
            obj.later_key("key", "key_file"),
            f"{obj.label} has both 'key' and 'key_file'",
            "keep only one",
        )
    return Machine(
        name=obj.text("name"),
        team=obj.text("team"),
        transport=transport,
        host=obj.text("host"),
        port=_int(get("port")) or 22,
        user=obj.text("user"),
        host_key=_strings(get("host_key")) or (),
        key=_vault_ref(get("key")),
        key_file=obj.text("key_file"),
        labels=_string_map(get("labels")) or {},
        max_parallel=_int(get("max_parallel")) or 1,
        windows=_windows(obj, get("windows")),
        suspend=_freeze(obj, get("suspend")),
        location=obj.node.location,
        field_locations={key: value.location for key, (_, value) in obj.node.entries.items()},
    )


def _check_ssh_machine(obj: _Object) -> None:
    if "host" not in obj.node:
        obj.error(
            obj.node.location,
            f"{obj.label} uses ssh and needs 'host'",
            "add host: ADDRESS, or set transport: local to run on the reconciler's own host",
        )
    if "host_key" not in obj.node:
        target = obj.text("host") or "HOST"
        port = _int(obj.get("port"))
        target += f":{port}" if port and port != 22 else ""
        obj.error(
            obj.node.location,
            f"{obj.label} uses ssh and needs 'host_key' (the server's key is pinned)",
            f"run 'reconcile machines keyscan {target}', check the key and paste the host_key line it prints",
        )


def _check_local_machine(obj: _Object) -> None:
    for key in LOCAL_FORBIDDEN:
        if key in obj.node:
            obj.error(
                obj.node.key_location(key),
                f"'{key}' has no meaning for a local machine",
                "remove it, or set transport: ssh",
            )


def build_team(obj: _Object, source: Source) -> Team:
    """A `Team` from a team mapping; problems go to `obj` (check `obj.failed`)."""
    get = obj.get
    defaults = get("defaults")
    return Team(
        name=obj.text("name"),
        description=obj.text("description"),
        members=_members(obj, get("members")),
        recipients=_strings(get("recipients")) or (),
        alerts=_alerts(get("alerts")),
        defaults=_defaults(obj, defaults) if isinstance(defaults, MapNode) else TaskDefaults(),
        windows=_windows(obj, get("windows")),
        suspend=_freeze(obj, get("suspend")),
        location=obj.node.location,
    )


def _members(obj: _Object, node: Node | None) -> tuple[Member, ...]:
    members, seen = [], set()
    for item in _maps(node):
        name, role = _str(item.get("name")), _enum(Role, item.get("role"))
        if name is not None and name in seen:
            obj.error(
                item.get("name").location,
                f"member '{name}' is listed twice in {obj.label}",
                "keep one entry per member",
            )
        elif name is not None and role is not None:
            members.append(Member(name, role, _str(item.get("age")), _str(item.get("ssh"))))
        seen.add(name)
    return tuple(members)


def _alerts(node: Node | None) -> tuple[AlertTarget, ...]:
    targets = []
    for item in node.items if isinstance(node, SeqNode) else ():
        if _str(item):
            targets.append(AlertTarget(_str(item)))
        elif _vault_ref(item):
            targets.append(AlertTarget(_vault_ref(item)))
        elif isinstance(item, MapNode):
            url = _str(item.get("url")) or _vault_ref(item.get("url"))
            on = _strings(item.get("on"))
            if url is not None:
                targets.append(AlertTarget(url, on))
    return tuple(targets)


def _defaults(obj: _Object, node: MapNode) -> TaskDefaults:
    return TaskDefaults(
        priority=_int(node.get("priority")),
        timeout=obj.duration(node.get("timeout"), "defaults.timeout", minimum=1),
        retry=_retry(obj, node.get("retry"), "defaults.retry"),
        timezone=obj.timezone(node.get("timezone"), "defaults.timezone"),
        alert_after=obj.duration(node.get("alert_after"), "defaults.alert_after", minimum=1),
        rollout=read_rollout(obj, node.get("rollout"), "defaults.rollout"),
    )


def build_settings(obj: _Object) -> Settings:
    """`Settings` from reconciler.yaml; problems go to `obj` (check `obj.failed`)."""
    git = obj.get("git")
    git_settings = GitSettings()
    if isinstance(git, MapNode):
        git_settings = GitSettings(
            remote=_str(git.get("remote")) or "origin",
            branch=_str(git.get("branch")) or "main",
            verify=_str(git.get("verify")) or "none",
        )
    return Settings(
        state=obj.text("state"),
        concurrency=_int(obj.get("concurrency")),
        poll_interval=obj.duration(obj.get("poll_interval"), "poll_interval", minimum=1),
        ssh_keepalive=obj.duration(obj.get("ssh_keepalive"), "ssh_keepalive", minimum=1),
        ssh_keepalive_count=_int(obj.get("ssh_keepalive_count")),
        git=git_settings,
        credentials=_credential_grants(obj.get("credentials")),
        local_machines=_local_machine_settings(obj.get("local_machines")),
        paths=_owned_paths(obj, obj.get("paths")),
        http=_http_settings(obj, obj.get("http")),
        location=obj.node.location,
    )


def _http_settings(obj: _Object, node: Node | None) -> HttpSettings:
    """`http: {token, proxy: {header, from}, hook_secret}` (shape checked by the settings
    schema; the teams named by the secrets are checked against the inventory by compile)."""
    if not isinstance(node, MapNode):
        return HttpSettings()
    proxy = node.get("proxy")
    header, trusted = None, HttpSettings.proxy_from
    if isinstance(proxy, MapNode):
        header = _str(proxy.get("header"))
        given = proxy.get("from")
        if given is not None:
            trusted = _strings(given) or ()
            for item in given.items if isinstance(given, SeqNode) else ():
                if _str(item) is not None and not _network(_str(item)):
                    obj.error(
                        item.location,
                        f"http.proxy.from: {_str(item)!r} is not an IP address or network",
                        "write the proxy's address, such as 127.0.0.1 or 10.0.0.0/24",
                    )
    return HttpSettings(
        token=_team_secret(node.get("token")),
        proxy_header=header,
        proxy_from=trusted,
        hook_secret=_team_secret(node.get("hook_secret")),
        location=node.location,
    )


def _network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _team_secret(node: Node | None) -> TeamSecretRef | None:
    if isinstance(node, MapNode) and _str(node.get("vault")) and _str(node.get("team")):
        return TeamSecretRef(_str(node.get("team")), _str(node.get("vault")), node.location)
    return None


def _owned_paths(obj: _Object, node: Node | None) -> tuple[tuple[str, str], ...]:
    """`paths: {PATTERN: team}` in file order (the shape is checked by the settings schema).
    A pattern holding a control character or whitespace other than the space is refused:
    `reconcile codeowners` writes each pattern on a line of its own, where a newline would
    end the rule and start another (a line the settings inject)."""
    if not isinstance(node, MapNode):
        return ()
    owned = []
    for pattern, (location, team) in node.entries.items():
        if not writable(pattern):
            obj.error(
                location,
                f"paths: pattern {pattern!r} holds a control character or whitespace other "
                "than the space (a CODEOWNERS line cannot hold it)",
                "write the pattern on one line; a `*` matches any character of a name",
            )
        elif isinstance(value := _str(team), str) and value:
            owned.append((pattern, value))
    return tuple(owned)


def _credential_grants(node: Node | None) -> CredentialGrants:
    """`credentials: {key_files: {PATH: [team, ...]}, agent: [team, ...]}` (shape checked by
    the settings schema; team names are checked against the inventory by compile)."""
    if not isinstance(node, MapNode):
        return CredentialGrants()
    key_files, locations = {}, {}
    files = node.get("key_files")
    if isinstance(files, MapNode):
        for path, (path_location, teams) in files.entries.items():
            key_files[path] = _strings(teams) or ()
            locations[path] = path_location
    agent = node.get("agent")
    if agent is not None:
        locations["agent"] = agent.location
    return CredentialGrants(key_files=key_files, agent=_strings(agent) or (), locations=locations)


def _local_machine_settings(node: Node | None) -> LocalMachineSettings:
    if not isinstance(node, MapNode):
        return LocalMachineSettings()
    return LocalMachineSettings(allow_shared_user=bool(_bool(node.get("allow_shared_user"))))


BUILDERS: dict[str, Callable[[_Object, Source], Any]] = {
    "team": build_team,
    "machine": build_machine,
    "task": build_task,
}
