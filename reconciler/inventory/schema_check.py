"""Whether an object surely conforms to a shipped JSON Schema, without importing jsonschema.

Importing jsonschema (attrs, referencing, every metaschema read from disk) costs about 0.06 s
of CPU, a third of `reconcile validate`'s start (issue 14: it starts in under 0.15 s), and it
is needed only to say what is wrong with an object. The loader asks `conforms` first and
hands an object to jsonschema only when the answer is no, so every check is still made and
every error is still worded from jsonschema's report.

`conforms` answers True only when it is certain. It implements the draft 2020-12 keywords
the shipped schemas use, with jsonschema's meaning: a bool is neither an integer nor a
number, 1.0 is an integer, `pattern` searches, `enum` and `const` compare as JSON does (1 is
1.0, never true). A keyword it does not know, a `$ref` left in the schema or a list whose
uniqueness it does not model makes it answer False, and jsonschema decides.
tests/unit/test_schema_check.py holds the two to the same verdict on the invalid-inventory
corpus, the examples and generated objects.

A schema is compiled once into nested checks (closures), each keyword's argument read and
its pattern compiled up front: every object of an inventory is checked against the same few
schemas, and walking the schema's dictionaries for each one was most of the loader's time.
The checks run keywords in the schema's order and raise `_Unsure` where the interpreter of
the schema would, so a compiled schema answers exactly as reading it each time did.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Keywords that never make a value invalid.
_ANNOTATIONS = frozenset(
    {
        "$comment",
        "$defs",
        "$id",
        "$schema",
        "default",
        "deprecated",
        "description",
        "examples",
        "readOnly",
        "title",
        "writeOnly",
        "then",  # applied by `if`
        "else",
    }
)


class _Unsure(Exception):
    """A schema or a value this checker does not model: jsonschema must decide."""


Check = Callable[[Any], bool]

# Compiled schemas by id, with the schema itself (an id is reused once its object is gone).
_compiled: dict[int, tuple[Any, Check]] = {}
_MAX_COMPILED = 256  # the loader uses four; tests build many small ones


def conforms(schema: Any, instance: Any) -> bool:
    """True when `instance` is valid under `schema` (draft 2020-12, as jsonschema judges it);
    False when it is not, or when this checker cannot tell."""
    try:
        entry = _compiled.get(id(schema))
        if entry is None or entry[0] is not schema:
            if len(_compiled) >= _MAX_COMPILED:
                _compiled.clear()
            entry = _compiled[id(schema)] = (schema, _compile(schema))
        return entry[1](instance)
    except (_Unsure, re.error, RecursionError):
        return False


def _compile(schema: Any) -> Check:
    """The check of `schema`: its keywords in order, the first that fails answers False."""
    if schema is True:
        return _always
    if schema is False:
        return _never
    if not isinstance(schema, dict):
        return _unsure
    fused = _string_check(schema) or _integer_check(schema)
    if fused is not None:
        return fused
    checks: list[Check] = []
    for keyword, argument in schema.items():
        build = _KEYWORDS.get(keyword)
        if build is not None:
            check = build(argument, schema)
            if check is not _always:  # e.g. an allOf of rules the loader words itself
                checks.append(check)
        elif keyword not in _ANNOTATIONS and not keyword.startswith("x-"):
            checks.append(_unsure)  # e.g. `$ref`, `format`, `patternProperties`
            break  # reached only when every keyword before it holds: then it raises
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    sequence = tuple(checks)

    def every(value: Any) -> bool:
        for check in sequence:
            if not check(value):
                return False
        return True

    return every


# Names and commands (`type: string` with a pattern or lengths) and priorities and counts
# (`type: integer` with bounds) are most of the values checked. Every other keyword of such a
# schema holds for any value of another type, so the schema is the type test and then its
# bounds: one check instead of one per keyword. Other schemas, or arguments of another
# form than these (a pattern that does not compile, a bound that is not a number), are
# compiled keyword by keyword as usual.
_STRING_KEYWORDS = frozenset({"type", "pattern", "minLength", "maxLength"})
_INTEGER_KEYWORDS = frozenset({"type", "minimum", "maximum"})


def _constraints(schema: dict, allowed: frozenset[str]) -> dict | None:
    """The keywords of `schema` that constrain (annotations left out), if all are `allowed`."""
    found = {
        keyword: argument
        for keyword, argument in schema.items()
        if keyword not in _ANNOTATIONS and not keyword.startswith("x-")
    }
    return found if found.keys() <= allowed else None


def _string_check(schema: dict) -> Check | None:
    found = _constraints(schema, _STRING_KEYWORDS)
    if found is None or found.get("type") != "string":
        return None
    lengths = (found.get("minLength", 0), found.get("maxLength"))
    if not all(bound is None or (type(bound) is int) for bound in lengths):
        return None
    shortest, longest = lengths
    search = None
    if "pattern" in found:
        try:
            search = re.compile(found["pattern"]).search
        except (re.error, TypeError):
            return None

    def string(value: Any) -> bool:
        return (
            isinstance(value, str)
            and len(value) >= shortest
            and (longest is None or len(value) <= longest)
            and (search is None or search(value) is not None)
        )

    return string


def _integer_check(schema: dict) -> Check | None:
    found = _constraints(schema, _INTEGER_KEYWORDS)
    if found is None or found.get("type") != "integer":
        return None
    bounds = (found.get("minimum"), found.get("maximum"))
    if not all(bound is None or type(bound) in (int, float) for bound in bounds):
        return None
    lowest, highest = bounds

    def integer(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            return False
        return (lowest is None or not value < lowest) and (highest is None or not value > highest)

    return integer


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def _unsure(value: Any) -> bool:
    raise _Unsure


def _type_check(name: Any) -> Check:
    if name == "string":
        return lambda value: isinstance(value, str)
    if name == "object":
        return lambda value: isinstance(value, dict)
    if name == "array":
        return lambda value: isinstance(value, list)
    if name == "boolean":
        return lambda value: isinstance(value, bool)
    if name == "null":
        return lambda value: value is None
    if name == "integer":
        return lambda value: (
            not isinstance(value, bool)
            and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
        )
    if name == "number":
        return _is_number
    return _unsure


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _equal(one: Any, two: Any) -> bool:
    """JSON equality: 1 equals 1.0, a bool equals only the same bool."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return one == two
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(_equal(a, b) for a, b in zip(one, two))
    if isinstance(one, dict) and isinstance(two, dict):
        return one.keys() == two.keys() and all(_equal(one[k], two[k]) for k in one)
    if isinstance(one, bool) or isinstance(two, bool):
        return False  # `one is two` already matched the same bool
    return one == two


def _unique(items: list) -> bool:
    keys = set()
    for item in items:
        if isinstance(item, str):
            key = ("s", item)
        elif isinstance(item, bool):
            key = ("b", item)
        elif isinstance(item, int):
            key = ("n", item)
        elif item is None:
            key = ("0", None)
        else:
            raise _Unsure  # floats (1 == 1.0, nan), lists, mappings: jsonschema decides
        if key in keys:
            return False
        keys.add(key)
    return True


# Each builder takes a keyword's argument and its schema and returns the keyword's check.


def _type(argument, schema) -> Check:
    names = argument if isinstance(argument, list) else [argument]
    checks = tuple(_type_check(name) for name in names)
    if len(checks) == 1:
        return checks[0]
    return lambda value: any(check(value) for check in checks)


def _properties(argument, schema) -> Check:
    subs = {key: _compile(sub) for key, sub in argument.items()}

    def properties(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        # The object's own keys: a task writes 5 of its schema's 23 properties. Checks are
        # pure and a failing or unsure one both answer "not sure to conform", so which one
        # is asked first never changes the answer.
        for key, item in value.items():
            check = subs.get(key)
            if check is not None and not check(item):
                return False
        return True

    return properties


def _required(argument, schema) -> Check:
    keys = frozenset(argument)
    return lambda value: not isinstance(value, dict) or value.keys() >= keys


def _additional_properties(argument, schema) -> Check:
    if "patternProperties" in schema:
        return lambda value: not isinstance(value, dict) or _unsure(value)
    known = frozenset(schema.get("properties", {}))
    if isinstance(argument, dict):
        check = _compile(argument)
        return lambda value: (
            not isinstance(value, dict)
            or all(check(value[key]) for key in value if key not in known)
        )
    if argument:
        return _always
    return lambda value: not isinstance(value, dict) or known.issuperset(value)


def _property_names(argument, schema) -> Check:
    check = _compile(argument)
    return lambda value: not isinstance(value, dict) or all(check(key) for key in value)


def _items(argument, schema) -> Check:
    if "prefixItems" in schema:
        return lambda value: not isinstance(value, list) or _unsure(value)
    check = _compile(argument)

    def items(value: Any) -> bool:
        if isinstance(value, list):
            for item in value:
                if not check(item):
                    return False
        return True

    return items


def _pattern(argument, schema) -> Check:
    try:
        search = re.compile(argument).search
    except (re.error, TypeError):
        # Raised when a string reaches it, as `re.search` would (conforms: False).
        return lambda value: not isinstance(value, str) or re.search(argument, value) is not None
    return lambda value: not isinstance(value, str) or search(value) is not None


def _min_length(argument, schema) -> Check:
    return lambda value: not isinstance(value, str) or len(value) >= argument


def _max_length(argument, schema) -> Check:
    return lambda value: not isinstance(value, str) or len(value) <= argument


def _minimum(argument, schema) -> Check:
    return lambda value: not _is_number(value) or not value < argument


def _maximum(argument, schema) -> Check:
    return lambda value: not _is_number(value) or not value > argument


def _min_items(argument, schema) -> Check:
    return lambda value: not isinstance(value, list) or len(value) >= argument


def _max_items(argument, schema) -> Check:
    return lambda value: not isinstance(value, list) or len(value) <= argument


def _unique_items(argument, schema) -> Check:
    return lambda value: not (argument and isinstance(value, list)) or _unique(value)


def _enum(argument, schema) -> Check:
    return lambda value: any(_equal(each, value) for each in argument)


def _const(argument, schema) -> Check:
    return lambda value: _equal(argument, value)


def _all_of(argument, schema) -> Check:
    # An empty subschema (a rule the loader words itself, left out by `_schema_of`) holds
    # for every value: nothing to ask.
    checks = tuple(check for check in map(_compile, argument) if check is not _always)
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _any_of(argument, schema) -> Check:
    checks = tuple(_compile(sub) for sub in argument)
    return lambda value: any(check(value) for check in checks)


def _one_of(argument, schema) -> Check:
    checks = tuple(_compile(sub) for sub in argument)
    return lambda value: sum(1 for check in checks if check(value)) == 1


def _not(argument, schema) -> Check:
    check = _compile(argument)
    return lambda value: not check(value)


def _if(argument, schema) -> Check:
    condition = _compile(argument)
    then = _compile(schema["then"]) if "then" in schema else _always
    otherwise = _compile(schema["else"]) if "else" in schema else _always
    return lambda value: then(value) if condition(value) else otherwise(value)


_KEYWORDS: dict[str, Callable[[Any, dict], Check]] = {
    "type": _type,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional_properties,
    "propertyNames": _property_names,
    "items": _items,
    "pattern": _pattern,
    "minLength": _min_length,
    "maxLength": _max_length,
    "minimum": _minimum,
    "maximum": _maximum,
    "minItems": _min_items,
    "maxItems": _max_items,
    "uniqueItems": _unique_items,
    "enum": _enum,
    "const": _const,
    "allOf": _all_of,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "not": _not,
    "if": _if,
}
