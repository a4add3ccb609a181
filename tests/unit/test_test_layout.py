"""Tests share helpers only through `tests/support` (issue 14 item 5).

A test module that imports another test module runs that module's import-time code, ties two
suites together and hides the shared helper where nobody looks for it; copies drift apart. So
every Python file under tests/ may import, of the tests package, only `tests.support...` and
a `conftest` (which holds fixtures, not tests). Imports by bare sibling name (`from
plan_fixtures import ...`, resolved through pytest's sys.path insertion) and relative imports
count as imports of test modules too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

# Imports not switched yet, each for a stated reason; an entry goes once its import is gone
# (test_every_allowed_import_is_still_needed fails on a stale entry).
ALLOWED_FOR_NOW: set[tuple[str, str]] = set()


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def names_of_files_under_tests() -> set[str]:
    """Bare names a file under tests/ could be imported by when its folder is on sys.path."""
    return {p.stem for p in python_files()} - {"__init__"}


def is_shared(module: str) -> bool:
    """Whether `module` (dotted) is one a test file may import from the tests package."""
    parts = module.split(".")
    return parts[:2] == ["tests", "support"] or parts[-1] == "conftest"


def imports_of_test_modules(source: str, bare_names: set[str]) -> list[str]:
    """The modules of the tests package, other than shared ones, that `source` imports
    (anywhere in the file, also inside functions), in order."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: always inside the tests package
                found.append("." * node.level + (node.module or ""))
                continue
            modules = [node.module or ""]
            if node.module == "tests":  # `from tests import unit`
                modules = [f"tests.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if (top == "tests" or top in bare_names) and not is_shared(module):
                found.append(module)
    return found


def offending_imports() -> set[tuple[str, str]]:
    bare = names_of_files_under_tests()
    return {
        (path.relative_to(ROOT).as_posix(), module)
        for path in python_files()
        for module in imports_of_test_modules(path.read_text(), bare)
    }


def test_no_test_module_imports_another_test_module():
    offending = sorted(offending_imports() - ALLOWED_FOR_NOW)
    assert offending == [], (
        "move what is shared into a module of tests/support and import it from there:\n"
        + "\n".join(f"  {path} imports {module}" for path, module in offending)
    )


def test_every_allowed_import_is_still_needed():
    assert sorted(ALLOWED_FOR_NOW - offending_imports()) == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from tests.unit.test_diff import CASES\n", ["tests.unit.test_diff"]),
        ("import tests.e2e.test_vault\n", ["tests.e2e.test_vault"]),
        (
            "def f():\n    from tests.integration.test_audit import P\n",
            ["tests.integration.test_audit"],
        ),
        ("from tests import unit\n", ["tests.unit"]),
        ("from plan_helpers import NOW\n", ["plan_helpers"]),
        ("from .test_store import add\n", [".test_store"]),
        ("from tests.support.cli import reconcile\nfrom tests.e2e.conftest import P\n", []),
        ("import os\nfrom reconciler.core.plan import Plan\n", []),
    ],
)
def test_the_check_sees_every_form_of_import(source, expected):
    assert imports_of_test_modules(source, {"plan_helpers"}) == expected
