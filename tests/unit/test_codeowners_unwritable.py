"""core/codeowners.py's second guard (issue 19, second review): a `paths:` pattern no
CODEOWNERS line can hold (the loader refuses it) is left out of the file and named as
unwritable, never written raw as a rule plus an injected one."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.core.codeowners import _pattern, codeowners, writable
from reconciler.inventory.loader import load_inventory


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\tb", "a\x00b", "a\x85b", "a\u2028b", "a\xa0b"])
def test_a_pattern_with_a_control_character_or_a_line_break_is_not_writable(text):
    assert not writable(text)
    with pytest.raises(ValueError):
        _pattern(text)


def test_a_pattern_with_a_space_is_writable_and_escaped():
    assert writable("deploy scripts/**") and _pattern("deploy scripts/**") == "deploy\\ scripts/**"


def test_an_unwritable_pattern_is_left_out_of_the_file(tmp_path):
    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / "dev.yaml").write_text(
        "name: dev\nmembers: [{name: carol, role: admin}]\n"
    )
    inventory, problems = load_inventory(tmp_path)
    assert not [p for p in problems if p.severity == "error"], problems
    paths = (("scripts/**\n/README.md", "dev"), ("ok/**", "dev"))
    inventory = dataclasses.replace(
        inventory, settings=dataclasses.replace(inventory.settings, paths=paths)
    )
    result = codeowners(inventory, {}, prefix="")
    assert "/README.md" not in result.text and "/ok/** @carol" in result.text, result.text
    assert result.unwritable == ("scripts/**\n/README.md",)
