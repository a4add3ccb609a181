"""The editor schemas' duration and cron patterns against the loader's own rules (issue 19).

An editor must never flag what `validate` accepts, and should flag what the schema can say:
a duration part over the ten-year cap, a zero timeout, a cron field out of range, a step of
0, a character cron does not know. Checked on generated values with jsonschema (the same
draft 2020-12 validator check-jsonschema runs) against `durations.parse_duration` and
`schedule.cron_problem`. What a pattern cannot say is left to `validate`: the sum of a
duration's parts, a reversed range, an expression that never fires.
"""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.core.durations import MAX_SECONDS, DurationError, parse_duration
from reconciler.core.schedule import cron_problem
from reconciler.inventory.loader import load_schema


@cache
def _validator(kind: str, definition: str) -> Draft202012Validator:
    schema = load_schema(kind)
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})


def _schema_accepts(definition: str, value) -> bool:
    return _validator("task", definition).is_valid(value)


def test_every_schema_defines_durations_and_cron_alike():
    task = load_schema("task")["$defs"]
    for kind in ("team", "machine", "settings"):
        defs = load_schema(kind)["$defs"]
        for name in ("duration", "positiveDuration", "cron"):
            assert defs.get(name, task[name]) == task[name], (kind, name)


def _duration_ok(value, minimum: int = 0) -> bool:
    try:
        return parse_duration(value) >= minimum
    except DurationError:
        return False


_number = st.one_of(
    st.integers(0, 400),
    st.integers(0, MAX_SECONDS + 10),
    st.sampled_from([3650, 3651, 87600, 87601, 5256000, 5256001, MAX_SECONDS, MAX_SECONDS + 1]),
)
_digits = st.builds(lambda n, zeros: "0" * zeros + str(n), _number, st.integers(0, 2))
_part = st.builds(lambda d, u: d + u, _digits, st.sampled_from(["d", "h", "m", "s", "x", ""]))
_durations = st.one_of(
    _number,
    _digits,
    st.lists(_part, min_size=1, max_size=4).map("".join),
    st.builds(lambda s, pad: pad + s + pad, _part, st.sampled_from(["", " ", "\t"])),
    st.text(alphabet="0123456789dhms ", max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(_durations)
def test_a_duration_validate_accepts_passes_the_schema(value):
    if _duration_ok(value):
        assert _schema_accepts("duration", value), value
    if _duration_ok(value, minimum=1):
        assert _schema_accepts("positiveDuration", value), value


@settings(max_examples=400, deadline=None)
@given(st.one_of(_digits, _number, st.builds(lambda d, u: d + u, _digits, st.sampled_from("dhms"))))
def test_a_duration_of_one_part_passes_the_schema_exactly_when_validate_accepts_it(value):
    assert _schema_accepts("duration", value) == _duration_ok(value), value
    assert _schema_accepts("positiveDuration", value) == _duration_ok(value, 1), value


_value = st.one_of(
    st.integers(0, 70).map(str),
    st.sampled_from(["00", "07", "059", "jan", "DEC", "Mon", "sun", "abc", "L", "?", "5W", "1#2"]),
)
_element = st.one_of(
    st.just("*"),
    _value,
    st.builds(lambda a, b: f"{a}-{b}", _value, _value),
).flatmap(lambda e: st.one_of(st.just(e), st.integers(0, 70).map(lambda s: f"{e}/{s}")))
_field = st.lists(_element, min_size=1, max_size=3).map(",".join)
_cron = st.one_of(
    st.lists(_field, min_size=4, max_size=6).flatmap(
        lambda fields: st.sampled_from([" ", "  ", "\t"]).map(lambda sep: sep.join(fields))
    ),
    st.sampled_from(["@daily", "@hourly", "@every", "@Daily", " @daily", "0 3 * * * "]),
)


@settings(max_examples=500, deadline=None)
@given(_cron)
def test_the_cron_pattern_accepts_what_validate_accepts_and_rejects_bad_fields(text):
    problem = cron_problem(text)
    accepted = _schema_accepts("cron", text)
    if problem is None:
        assert accepted, text
    elif accepted:
        # The rules a pattern cannot express: validate alone refuses these.
        why = problem[0]
        assert "reversed range" in why or "never fires" in why or why == "", (text, problem)
