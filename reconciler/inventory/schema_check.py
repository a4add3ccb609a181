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


def conforms(schema: Any, instance: Any) -> bool:
    """True when `instance` is valid under `schema` (draft 2020-12, as jsonschema judges it);
    False when it is not, or when this checker cannot tell."""
    try:
        return _valid(schema, instance)
    except (_Unsure, re.error, RecursionError):
        return False


def _valid(schema: Any, value: Any) -> bool:
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, dict):
        raise _Unsure
    for keyword, argument in schema.items():
        check = _KEYWORDS.get(keyword)
        if check is not None:
            if not check(argument, value, schema):
                return False
        elif keyword not in _ANNOTATIONS and not keyword.startswith("x-"):
            raise _Unsure  # e.g. `$ref`, `format`, `patternProperties`
    return True


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "integer":
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if name == "number":
        return not isinstance(value, bool) and isinstance(value, (int, float))
    raise _Unsure


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


def _type(argument, value, schema) -> bool:
    names = argument if isinstance(argument, list) else [argument]
    return any(_is_type(value, name) for name in names)


def _properties(argument, value, schema) -> bool:
    if not isinstance(value, dict):
        return True
    return all(_valid(sub, value[key]) for key, sub in argument.items() if key in value)


def _required(argument, value, schema) -> bool:
    return not isinstance(value, dict) or all(key in value for key in argument)


def _additional_properties(argument, value, schema) -> bool:
    if not isinstance(value, dict):
        return True
    if "patternProperties" in schema:
        raise _Unsure
    known = schema.get("properties", {})
    extras = [key for key in value if key not in known]
    if isinstance(argument, dict):
        return all(_valid(argument, value[key]) for key in extras)
    return bool(argument) or not extras


def _property_names(argument, value, schema) -> bool:
    return not isinstance(value, dict) or all(_valid(argument, key) for key in value)


def _items(argument, value, schema) -> bool:
    if not isinstance(value, list):
        return True
    if "prefixItems" in schema:
        raise _Unsure
    return all(_valid(argument, item) for item in value)


def _pattern(argument, value, schema) -> bool:
    return not isinstance(value, str) or re.search(argument, value) is not None


def _min_length(argument, value, schema) -> bool:
    return not isinstance(value, str) or len(value) >= argument


def _max_length(argument, value, schema) -> bool:
    return not isinstance(value, str) or len(value) <= argument


def _minimum(argument, value, schema) -> bool:
    return not _is_number(value) or not value < argument


def _maximum(argument, value, schema) -> bool:
    return not _is_number(value) or not value > argument


def _min_items(argument, value, schema) -> bool:
    return not isinstance(value, list) or len(value) >= argument


def _max_items(argument, value, schema) -> bool:
    return not isinstance(value, list) or len(value) <= argument


def _unique_items(argument, value, schema) -> bool:
    return not (argument and isinstance(value, list)) or _unique(value)


def _enum(argument, value, schema) -> bool:
    return any(_equal(each, value) for each in argument)


def _const(argument, value, schema) -> bool:
    return _equal(argument, value)


def _all_of(argument, value, schema) -> bool:
    return all(_valid(sub, value) for sub in argument)


def _any_of(argument, value, schema) -> bool:
    return any(_valid(sub, value) for sub in argument)


def _one_of(argument, value, schema) -> bool:
    return sum(1 for sub in argument if _valid(sub, value)) == 1


def _not(argument, value, schema) -> bool:
    return not _valid(argument, value)


def _if(argument, value, schema) -> bool:
    branch = "then" if _valid(argument, value) else "else"
    return branch not in schema or _valid(schema[branch], value)


_KEYWORDS: dict[str, Callable[[Any, Any, dict], bool]] = {
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
