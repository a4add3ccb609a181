"""Strict YAML: 1.2 core scalars, positions kept, and every surprising construct refused."""

import dataclasses
import math

import pytest

from reconciler.core.diagnostics import Diagnostics, Location
from reconciler.inventory import yamlio
from reconciler.inventory.yamlio import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_INT_DIGITS,
    MapNode,
    ScalarNode,
    SeqNode,
    parse_yaml,
    read_yaml,
    resolve_plain,
    to_plain,
)


def parse(text, name="f.yaml"):
    diags = Diagnostics()
    return parse_yaml(text, name, diags), [str(d) for d in diags]


def scalar(text):
    node, problems = parse(f"v: {text}\n")
    assert problems == []
    return node.get("v").value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("null", None),
        ("Null", None),
        ("NULL", None),
        ("~", None),
        ("", None),
        ("0", 0),
        ("7", 7),
        ("-3", -3),
        ("+3", 3),
        ("0o17", 15),
        ("0x1F", 31),
        ("1.5", 1.5),
        ("-0.5", -0.5),
        ("1e3", 1000.0),
        ("1.5E-2", 0.015),
        (".5", 0.5),
    ],
)
def test_plain_scalars_follow_the_yaml_1_2_core_schema(text, value):
    result = scalar(text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    "text",
    [
        "NO",
        "no",
        "yes",
        "Yes",
        "on",
        "off",
        "y",
        "n",
        "1:30",
        "1_000",
        "2001-12-14",
        "0b101",
        "=",
        "<<",
        "0o8",
    ],
)
def test_yaml_1_1_scalars_stay_strings(text):
    assert scalar(text) == text


@pytest.mark.parametrize("text", ["022", "0755", "-01", "00"])
def test_integers_with_a_leading_zero_stay_strings(text):
    assert scalar(text) == text


def test_special_floats_resolve_per_yaml_1_2_for_the_resolver():
    assert resolve_plain(".inf") == math.inf
    assert resolve_plain("-.Inf") == -math.inf
    assert math.isnan(resolve_plain(".NaN"))


@pytest.mark.parametrize("text", ['"5"', "'true'", '"null"', "'022'"])
def test_quoted_scalars_are_always_strings(text):
    assert scalar(text) == text[1:-1]


def test_block_scalars_are_strings():
    node, _ = parse("s: |\n  12\n")
    assert node.get("s").value == "12\n"


def test_on_is_a_plain_string_key():
    node, _ = parse("on: [failed]\n")
    assert to_plain(node) == {"on": ["failed"]}


def test_nodes_keep_one_based_positions():
    node, _ = parse("name: web\nlist:\n  - a\n  - {k: v}\n")
    assert isinstance(node, MapNode) and node.location == Location("f.yaml", 1, 1)
    assert node.key_location("list") == Location("f.yaml", 2, 1)
    assert node.get("name") == ScalarNode("web", Location("f.yaml", 1, 7))
    items = node.get("list")
    assert isinstance(items, SeqNode) and items.location == Location("f.yaml", 3, 3)
    assert items.items[0].location == Location("f.yaml", 3, 5)
    assert items.items[1].get("k").location == Location("f.yaml", 4, 9)
    assert "name" in node and "missing" not in node and node.get("missing") is None


def test_composed_nodes_are_the_frozen_dataclasses_the_constructors_make():
    # The composer fills nodes and locations in directly (yamlio._new_location...), not
    # through the dataclasses' __init__: they must stay equal, hashable and read-only.
    node, _ = parse("a: [1, {b: x}]\n")
    where = Location("f.yaml", 1, 1)
    built = MapNode(
        {
            "a": (
                where,
                SeqNode(
                    (
                        ScalarNode(1, Location("f.yaml", 1, 5)),
                        MapNode(
                            {
                                "b": (
                                    Location("f.yaml", 1, 9),
                                    ScalarNode("x", Location("f.yaml", 1, 12)),
                                )
                            },
                            Location("f.yaml", 1, 8),
                        ),
                    ),
                    Location("f.yaml", 1, 4),
                ),
            )
        },
        where,
    )
    assert node == built and repr(node) == repr(built)
    assert node.location == where and hash(node.location) == hash(where)
    assert node.location < Location("f.yaml", 1, 2)  # ordered as Location is
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.location.line = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.get("a").items[0].value = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "7",
        "10",
        "022",
        "00",
        "9" * 1000,
        "9" * 1001,
        "1" + "0" * 1000,
        "1\u0663",  # digits of other scripts: isdigit() says yes, the patterns no
        "1\u00b2",
        "\uff11",
    ],
)
def test_unsigned_decimals_resolve_as_the_integer_patterns_say(text):
    # resolve_plain reads ASCII digits without trying each pattern: the same value.
    expected = text
    if yamlio._DECIMAL.fullmatch(text) and not yamlio._LEADING_ZERO.fullmatch(text):
        expected = int(text) if len(text) <= MAX_INT_DIGITS else yamlio.OversizedInt(text)
    result = resolve_plain(text)
    assert result == expected and type(result) is type(expected)


def test_to_plain_gives_python_data():
    node, _ = parse("a: [1, x, {b: null}]\nc: {}\n")
    assert to_plain(node) == {"a": [1, "x", {"b": None}], "c": {}}
    assert to_plain(None) is None


def test_duplicate_key_is_reported_at_the_second_key_naming_the_first():
    node, problems = parse("a: 1\nb: 2\n  \na: 3\n")
    assert problems == [
        "f.yaml:4:1: duplicate key 'a' (first defined on line 1, column 1) (hint: remove one of them)"
    ]
    assert to_plain(node) == {"a": 1, "b": 2}


def test_nested_duplicate_key_is_reported():
    _, problems = parse("a:\n  x: 1\n  x: 2\n")
    assert problems[0].startswith(
        "f.yaml:3:3: duplicate key 'x' (first defined on line 2, column 3)"
    )


@pytest.mark.parametrize(
    ("text", "where", "shown"),
    [
        ("v: !!str 5\n", "1:4", "!!str"),
        ("v: !foo {}\n", "1:4", "!foo"),
        ("v: ! x\n", "1:4", "!"),
        ("- !!binary aGk=\n", "1:3", "!!binary"),
    ],
)
def test_explicit_tags_are_refused(text, where, shown):
    _, problems = parse(text)
    assert problems == [
        f"f.yaml:{where}: YAML tags ({shown}) are not allowed "
        "(hint: remove the tag; quote the value if it must stay a string)"
    ]


def test_anchors_and_aliases_are_refused_without_expanding_them():
    node, problems = parse("a: &x [1]\nb: *x\n")
    assert problems == [
        "f.yaml:1:4: YAML anchors (&x) are not allowed (hint: write the value out in full)",
        "f.yaml:2:4: YAML aliases (*x) are not allowed (hint: write the value out in full)",
    ]
    assert to_plain(node)["b"] is None


def test_billion_laughs_is_refused_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    _, problems = parse("\n".join(lines) + "\n")
    assert any("anchors" in p for p in problems) and any("aliases" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "where", "got"),
    [
        ("1: a\n", "1:1", "int 1"),
        ("null: a\n", "1:1", "null"),
        ("true: a\n", "1:1", "bool True"),
        ("? [x]\n: a\n", "1:3", "a list"),
        ("1.5: a\n", "1:1", "float 1.5"),
    ],
)
def test_non_string_keys_are_refused(text, where, got):
    _, problems = parse(text)
    assert problems == [
        f"f.yaml:{where}: mapping keys must be strings (got {got}) (hint: quote the key)"
    ]


def test_quoted_number_key_is_a_string():
    node, problems = parse('"1": a\n')
    assert problems == [] and to_plain(node) == {"1": "a"}


def test_several_documents_are_refused_at_the_second():
    _, problems = parse("a: 1\n---\nb: 2\n")
    assert problems[0].startswith("f.yaml:2:1: a file must hold one YAML document, found another")


def test_leading_document_marker_is_fine():
    node, problems = parse("---\na: 1\n")
    assert problems == [] and to_plain(node) == {"a": 1}


def test_nesting_up_to_the_limit_is_accepted():
    node, problems = parse("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert problems == [] and isinstance(node, SeqNode)


def test_nesting_deeper_than_the_limit_is_refused():
    _, problems = parse("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert problems == [
        f"f.yaml:1:{MAX_DEPTH + 1}: nesting is deeper than 64 levels (hint: flatten the structure)"
    ]


def test_very_deep_nesting_does_not_crash():
    _, problems = parse("a:\n" + "".join("  " * i + "- \n" for i in range(1, 2000)))
    assert problems and "deeper than 64" in problems[0]
    _, problems = parse("[" * 100_000)
    assert len(problems) == 1


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (
            "a: [\n",
            "2:1",
            "invalid YAML: expected the node content, but found '<stream end>' (while parsing a flow node)",
        ),
        ("a: b: c\n", "1:5", "invalid YAML: mapping values are not allowed here"),
        ("a:\n  - x\n  y: 1\n", "3:3", "invalid YAML: expected <block end>, but found '?'"),
        ('a: "x\n', "2:1", "invalid YAML: found unexpected end of stream"),
        ("\ta: 1\n", "1:1", "invalid YAML: found character '\\t' that cannot start any token"),
    ],
)
def test_syntax_errors_are_located(text, where, problem):
    _, problems = parse(text)
    assert len(problems) == 1 and problems[0].startswith(f"f.yaml:{where}: {problem}")


def test_non_printable_character_is_located():
    _, problems = parse("a: ok\nb: x\x07\n")
    assert problems == ["f.yaml:2:5: character '\\x07' is not allowed in YAML (hint: remove it)"]


def test_invalid_utf8_is_located():
    _, problems = parse(b"a: ok\nb: caf\xe9\n")
    assert problems == ["f.yaml:2:7: file is not valid UTF-8 (hint: save the file as UTF-8)"]


def test_utf8_bom_and_non_ascii_are_fine():
    node, problems = parse("\ufeffa: café\n".encode())
    assert problems == [] and to_plain(node) == {"a": "café"}


@pytest.mark.parametrize("text", ["", "# just a comment\n", "\n\n"])
def test_empty_input_is_none_without_problems(text):
    assert parse(text) == (None, [])


def test_read_yaml_reads_a_file_and_shows_the_display_path(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\na: 2\n")
    diags = Diagnostics()
    node = read_yaml(path, diags, "shown/x.yaml")
    assert to_plain(node) == {"a": 1}
    assert str(diags.errors[0]).startswith("shown/x.yaml:2:1: duplicate key 'a'")


def test_read_yaml_refuses_an_oversize_file_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: [" + b"1," * (MAX_FILE_BYTES // 2) + b"]")  # would also be a syntax error
    diags = Diagnostics()
    assert read_yaml(path, diags) is None
    assert [d.message for d in diags] == [
        f"file is too large ({path.stat().st_size} bytes, the limit is 1 MiB)"
    ]


def test_read_yaml_accepts_a_file_of_exactly_the_limit(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * (MAX_FILE_BYTES - 6) + b"\n")
    assert path.stat().st_size == MAX_FILE_BYTES
    diags = Diagnostics()
    assert to_plain(read_yaml(path, diags)) == {"a": 1} and not diags


def test_read_yaml_reports_an_unreadable_file(tmp_path):
    diags = Diagnostics()
    assert read_yaml(tmp_path / "missing.yaml", diags) is None
    assert diags.errors[0].message.startswith("cannot read file")


def test_parse_yaml_refuses_oversize_bytes():
    diags = Diagnostics()
    assert parse_yaml(b"#" * (MAX_FILE_BYTES + 1), "f.yaml", diags) is None
    assert "too large" in diags.errors[0].message


@pytest.mark.parametrize(
    "text, where", [('v: "a\\0b"\n', "1:4"), ("v: .nan\n", "1:4"), ("v: [-.inf]\n", "1:5")]
)
def test_nul_characters_and_non_finite_numbers_are_refused(text, where):
    diags = Diagnostics()
    parse_yaml(text, "f.yaml", diags)
    assert [str(d).split(": ")[0] for d in diags.errors] == [f"f.yaml:{where}"]
