"""`schema_check.conforms` says "valid" only where jsonschema does (the loader then skips
jsonschema, so a wrong "valid" would drop a check): the two are compared on every object of
the examples, the scaffold and the invalid-inventory corpus, and on objects generated from
them by hypothesis."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.core.diagnostics import Diagnostics
from reconciler.inventory import loader
from reconciler.inventory.scaffold import scaffold_files
from reconciler.inventory.schema_check import conforms
from reconciler.inventory.yamlio import read_yaml, to_plain

REPO = Path(__file__).resolve().parents[2]
KINDS = ("team", "machine", "task", "settings")


def _jsonschema_valid(kind: str, instance) -> bool:
    return Draft202012Validator(loader._schema_of(kind)).is_valid(instance)


def _objects(folder: Path) -> list[tuple[str, object]]:
    """(kind, plain object) for every object the loader would check under `folder`."""
    found = []
    for path in sorted(folder.rglob("*.y*ml")):
        parts = path.relative_to(folder).parts
        kind = next(
            (k.name for k in loader.KINDS.values() if k.plural in parts[:-1]),
            "settings" if path.name in loader.SETTINGS_FILES else None,
        )
        if kind is None:
            continue
        node = read_yaml(path, Diagnostics())
        plain = to_plain(node)
        items = plain if isinstance(plain, list) else [plain]
        found += [(kind, item) for item in items]
    return found


def _corpus(tmp_path_factory) -> list[tuple[str, object]]:
    scaffolded = tmp_path_factory.mktemp("scaffold")
    for relative, text in scaffold_files().items():
        (scaffolded / relative).parent.mkdir(parents=True, exist_ok=True)
        (scaffolded / relative).write_text(text)
    folders = [REPO / "examples", REPO / "tests" / "cases", scaffolded]
    return [found for folder in folders for found in _objects(folder)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory)


def test_the_corpus_is_judged_as_jsonschema_judges_it(corpus):
    assert len(corpus) > 100
    kinds = {kind for kind, _ in corpus}
    assert kinds == set(KINDS)
    disagree = [
        (kind, obj)
        for kind, obj in corpus
        if conforms(loader._schema_of(kind), obj) != _jsonschema_valid(kind, obj)
    ]
    assert disagree == []
    # Both verdicts occur: the corpus exercises the fast path and the fallback.
    verdicts = {_jsonschema_valid(kind, obj) for kind, obj in corpus}
    assert verdicts == {True, False}


# Values of every JSON type, including the ones jsonschema tells apart from Python's view
# (True is not 1; 1.0 is an integer), nested a little.
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 100_000),
    st.sampled_from([0.0, 1.0, 2.5, -1.0, float("inf")]),
    st.text(max_size=12),
    st.sampled_from(["ops", "local", "a b", "Bad", "10s", "* * * * *", "root", "x" * 300]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["name", "a", "user", "command", "x"]), inner, max_size=3),
    ),
    max_leaves=8,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replaced(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replaced(value[head], rest, new)
    return copy


def _removed(value, path):
    head, rest = path[0], path[1:]
    if rest:
        if isinstance(value, dict):
            return {**value, head: _removed(value[head], rest)}
        copy = list(value)
        copy[head] = _removed(value[head], rest)
        return copy
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != head}
    return [v for i, v in enumerate(value) if i != head]


class _Quiet(list):
    """A list hypothesis names in a failure report without printing it whole."""

    def __repr__(self) -> str:
        return f"<{len(self)} items>"


class _QuietDict(dict):
    def __repr__(self) -> str:
        return f"<{len(self)} keys>"


@pytest.fixture(scope="module")
def valid_objects(corpus):
    return _Quiet((kind, obj) for kind, obj in corpus if _jsonschema_valid(kind, obj))


@pytest.fixture(scope="module")
def values_by_key(corpus):
    """Every value the corpus gives each key, valid or not: swapping one in keeps an object
    close to valid, so both verdicts are drawn often."""
    found: dict[str, list] = {}

    def gather(value):
        if isinstance(value, dict):
            for key, child in value.items():
                found.setdefault(key, []).append(child)
                gather(child)
        elif isinstance(value, list):
            for child in value:
                gather(child)

    for _, obj in corpus:
        gather(obj)
    return _QuietDict(found)


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_objects_are_judged_as_jsonschema_judges_them(valid_objects, values_by_key, data):
    kind, obj = data.draw(st.sampled_from(valid_objects))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(obj))))
        how = data.draw(st.sampled_from(["swap", "swap", "replace", "remove", "add", "duplicate"]))
        target = obj
        for part in path:
            target = target[part]
        if how == "swap" and path and path[-1] in values_by_key:
            obj = _replaced(obj, path, data.draw(st.sampled_from(values_by_key[path[-1]])))
        elif how == "remove" and path:
            obj = _removed(obj, path)
        elif how == "add" and isinstance(target, dict):
            key = data.draw(st.sampled_from(["name", "extra", "user", "priority", "machines"]))
            obj = _replaced(obj, path, {**target, key: data.draw(_VALUES)})
        elif how == "duplicate" and isinstance(target, list) and target:
            obj = _replaced(obj, path, [*target, target[0]])
        else:
            obj = _replaced(obj, path, data.draw(_VALUES))
    verdict = _jsonschema_valid(kind, obj)
    event(f"jsonschema says valid: {verdict}")  # --hypothesis-show-statistics
    assert conforms(loader._schema_of(kind), obj) == verdict, (kind, obj)


@pytest.mark.parametrize(
    ("schema", "instance", "valid"),
    [
        ({"type": "integer"}, True, False),  # a bool is not an integer
        ({"type": "integer"}, 1.0, True),
        ({"type": "number"}, False, False),
        ({"enum": [1]}, True, False),
        ({"enum": [1]}, 1.0, True),
        ({"const": [1, "a"]}, [1, "a"], True),
        ({"uniqueItems": True}, [1, True], True),
        ({"uniqueItems": True}, ["a", "a"], False),
        ({"pattern": "b"}, "abc", True),  # searched, not matched from the start
        ({"oneOf": [{"type": "string"}, {"minLength": 1}]}, "x", False),
        ({"if": {"type": "string"}, "then": {"minLength": 2}, "else": False}, "x", False),
        ({"if": {"type": "string"}, "then": {"minLength": 2}, "else": False}, 3, False),
        ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1}, True),
        ({"propertyNames": {"pattern": "^[a-z]+$"}}, {"A": 1}, False),
        # Keywords with a fast path of their own (set operations, the object's own keys).
        ({"required": ["a", "b"]}, {"a": 1, "b": 2, "c": 3}, True),
        ({"required": ["a", "b"]}, {"a": 1}, False),
        ({"required": ["a"]}, [], True),
        ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "b": 2}, False),
        ({"additionalProperties": {"type": "string"}}, {"a": "x", "b": 1}, False),
        ({"properties": {"a": {"type": "string"}, "b": {}}}, {"a": 1}, False),
        ({"properties": {"a": {"type": "string"}}}, {"b": 1, "c": 2}, True),
        ({"items": {"type": "string"}}, ["a", 1], False),
        ({"items": {"type": "string"}}, [], True),
        ({"allOf": [{}, True, {"type": "string"}]}, 1, False),
        ({"allOf": [{}, {}]}, 1, True),
        ({"allOf": [{}, False]}, 1, False),
        # Strings and integers with bounds are one fused check each.
        *(
            (
                {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 3},
                value,
                valid,
            )
            for value, valid in [
                ("ab", True),
                ("abc", True),
                ("a", False),
                ("abcd", False),
                ("aB", False),
                (12, False),
                (None, False),
                (["ab"], False),
            ]
        ),
        ({"type": "string", "minLength": 1, "description": "d", "x-expect": "e"}, "", False),
        ({"type": "string", "maxLength": 2}, "\u00e9\u00e9", True),
        *(
            ({"type": "integer", "minimum": 1, "maximum": 5}, value, valid)
            for value, valid in [
                (1, True),
                (5, True),
                (5.0, True),
                (0, False),
                (6, False),
                (2.5, False),
                (True, False),
                ("3", False),
                (10**400, False),
                (float("inf"), False),
                (float("nan"), False),
            ]
        ),
        ({"type": "integer", "minimum": 0.5}, 1, True),
        ({"type": "integer"}, -(10**400), True),
    ],
)
def test_keywords_mean_what_jsonschema_makes_them_mean(schema, instance, valid):
    assert conforms(schema, instance) is valid
    assert Draft202012Validator(schema).is_valid(instance) is valid


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"$ref": "#/$defs/x"}, 1),  # a reference the loader did not inline
        ({"format": "email"}, "x"),  # a keyword it does not model
        ({"patternProperties": {"a": {}}}, {}),
        ({"uniqueItems": True}, [1, 1.0]),  # float equality: jsonschema decides
        ({"type": "decimal"}, 1),
    ],
)
def test_what_it_does_not_model_is_left_to_jsonschema(schema, instance):
    assert conforms(schema, instance) is False
