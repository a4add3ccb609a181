"""Pure rules of a task's `params:` (issue 16 §3): which values an on-demand run may set and
what environment a run gets from them.

A parameter is a named environment variable a task declares: `default` is in every run's
environment (planned runs too), `allowed` lists the values `reconcile run --param` may give,
`pattern` is a regular expression the whole value must match. The loader checks the
declarations (valid names and patterns, an allowed default); `checked_values` checks what a
person asks for. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from reconciler.core.model import Param

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_VALUE = 4096  # characters: a parameter is a switch or a date, not a file


def value_problem(param: Param, value: str) -> str | None:
    """Why `value` may not be given for `param` (one line), None when it may."""
    if "\x00" in value:
        return "a value cannot hold a NUL character (it goes into the environment)"
    if len(value) > MAX_VALUE:
        return f"a value is at most {MAX_VALUE} characters (got {len(value)})"
    if param.allowed is not None and value not in param.allowed:
        return f"{value!r} is not one of the allowed values: {', '.join(param.allowed)}"
    if param.pattern is not None and not pattern_matches(param.pattern, value):
        return f"{value!r} does not match the pattern {param.pattern}"
    return None


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether the whole of `value` matches `pattern` (a pattern that does not compile
    matches nothing: the loader refuses it before it gets here)."""
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return False


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a regular expression Python reads, None when it is."""
    try:
        re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        return f"{exc.msg}{where}"
    return None


def defaults(params: Sequence[Param]) -> dict[str, str]:
    """The values every run gets when none is given: each parameter's default."""
    return {p.name: p.default for p in params if p.default is not None}


def checked_values(
    params: Sequence[Param], given: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The environment a run asked for with `given` gets (the defaults, then what was given)
    and the problems that refuse it: an undeclared name, a value outside its bounds. With
    problems, the values mean nothing."""
    declared = {p.name: p for p in params}
    problems: list[str] = []
    for name, value in given.items():
        param = declared.get(name)
        if param is None:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(
                f"--param {name}: the task declares no such parameter (its params: {known})"
            )
            continue
        problem = value_problem(param, value)
        if problem is not None:
            problems.append(f"--param {name}: {problem}")
    return {**defaults(params), **given}, problems


__all__ = ["MAX_VALUE", "NAME", "checked_values", "defaults", "pattern_problem", "value_problem"]
