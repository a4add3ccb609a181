"""Secrets at rest and in logs, and hostile input that once crashed: through the real command.

A vault bound to its team, redaction of encoded and cut secrets in stored output, library
logs at -vv, private file modes of the store, and integers too large for Python's int()."""

from __future__ import annotations

import pytest

from tests.e2e.test_vault import SECRET, _keygen  # noqa: F401  (the `vaulted` fixture too)
from tests.e2e.test_vault import vaulted  # noqa: F401

HUGE = "9" * 5000


def test_an_integer_too_large_for_python_in_a_task_file_is_a_located_exit_2(project):
    path = project.task("big", f"priority: {HUGE}\ncommand: echo hi\n")
    result = project.run("validate", code=2)
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert f"{path.relative_to(project.root)}:3:11: an integer of 5000 characters is too large" \
        in result.err
    assert result.err.count("\n") == 1  # one located line


def test_a_huge_integer_in_the_body_of_a_plan_command_is_exit_2_not_internal(project):
    project.task("big", f"command: echo hi\npriority: 0x{'f' * 5000}\n")
    result = project.run("plan", code=2)
    assert "internal error" not in result.err and "too large" in result.err


def test_vault_set_of_a_value_of_5000_digits_stores_it_as_the_string_it_is(vaulted):
    p = vaulted
    p.run("vault", "set", "ops", "LONG", "-", "--identity", str(p.alice), code=0,
          input=HUGE + "\n")
    assert p.run("vault", "get", "ops", "LONG", "--identity", str(p.alice), code=0).out \
        == HUGE + "\n"
