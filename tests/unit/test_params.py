"""A task's `params:` (issue 16 §3): the loader's checks of the declarations, the version
they change, and the pure check of the values an on-demand run asks for."""

from pathlib import Path
from textwrap import dedent

import pytest

from reconciler.core.compile import compile_inventory
from reconciler.core.errors import InputError
from reconciler.core.model import Param
from reconciler.core.params import checked_values, defaults, value_problem
from reconciler.inventory.loader import load_inventory

TASK = "name: web\nmachines: [box]\ncommand: echo hi\n"


def load(tmp_path: Path, task: str):
    root = tmp_path / "inventory"
    for name, text in {
        "teams/ops.yaml": "name: ops\n",
        "machines/box.yaml": "name: box\nteam: ops\ntransport: local\n",
        "tasks/ops/web.yaml": task,
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(dedent(task if name.startswith("tasks") else text))
    return load_inventory(root)


def errors(tmp_path: Path, task: str) -> list[str]:
    with pytest.raises(InputError) as caught:
        load(tmp_path, task)
    return [str(d).split("inventory/", 1)[-1] for d in caught.value.diagnostics.errors]


def test_the_issues_example_loads_with_its_bounds(tmp_path):
    inventory, _ = load(
        tmp_path,
        TASK
        + "params:\n  MODE: {default: fast, allowed: [fast, full]}\n"
        + "  TARGET_DATE: {pattern: '^\\d{4}-\\d{2}-\\d{2}$'}\n",
    )
    params = inventory.tasks["ops/web"].params
    assert params == (
        Param("MODE", "fast", ("fast", "full"), None),
        Param("TARGET_DATE", None, None, r"^\d{4}-\d{2}-\d{2}$"),
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            "  MODE: {default: slow, allowed: [fast, full]}\n",
            "tasks/ops/web.yaml:5:19: params.MODE.default is refused by its own bounds: "
            "'slow' is not one of the allowed values: fast, full",
        ),
        (
            "  DAY: {default: today, pattern: '^[0-9]+$'}\n",
            "tasks/ops/web.yaml:5:18: params.DAY.default is refused by its own bounds: "
            "'today' does not match the pattern ^[0-9]+$",
        ),
        (
            "  DAY: {pattern: '^[0-9+$'}\n",
            "tasks/ops/web.yaml:5:18: params.DAY.pattern is not a valid regular expression "
            "(unterminated character set at position 1)",
        ),
        (
            "  RECONCILE_MODE: {default: a}\n",
            "tasks/ops/web.yaml:5:3: param name 'RECONCILE_MODE' is reserved: the reconciler "
            "sets RECONCILE_* names itself for every run",
        ),
        (
            "  my-mode: {}\n",
            "tasks/ops/web.yaml:5:3: params name 'my-mode' must be letters, digits and '_', "
            "not starting with a digit",
        ),
        (
            "  MODE: {allowed: []}\n",
            "tasks/ops/web.yaml:5:19: params.MODE.allowed must be a non-empty list of strings, "
            "each once (got an empty list)",
        ),
        (
            "  MODE: {allowed: [1, 2]}\n",
            "tasks/ops/web.yaml:5:20: params.MODE.allowed[0] must be a string (quote numbers)",
        ),
        (
            "  MODE: {defualt: fast}\n",
            "tasks/ops/web.yaml:5:10: unknown key 'defualt' in parameter (hint: did you mean "
            "'default'?)",
        ),
        (
            "  MODE: fast\n",
            "tasks/ops/web.yaml:5:9: params.MODE must be a mapping of default, allowed and "
            'pattern (got "fast")',
        ),
    ],
)
def test_a_bad_declaration_is_refused_where_it_is_written(tmp_path, params, expected):
    found = errors(tmp_path, TASK + "params:\n" + params)
    assert any(line.startswith(expected) for line in found), found


def test_a_param_that_env_also_sets_is_refused(tmp_path):
    found = errors(tmp_path, TASK + "env: {MODE: fast}\nparams:\n  MODE: {default: full}\n")
    assert found[0].startswith(
        "tasks/ops/web.yaml:6:3: param 'MODE' is also set by env: a run could not tell "
        "which value wins"
    ), found


def test_defaults_change_the_version_and_bounds_do_not(tmp_path):
    def version(params: str) -> str:
        inventory, _ = load(tmp_path, TASK + params)
        return compile_inventory(inventory).tasks["ops/web"].versions["box"]

    plain = version("")
    assert version("params:\n  DAY: {pattern: '^[0-9]+$'}\n") == plain
    fast = version("params:\n  MODE: {default: fast, allowed: [fast, full]}\n")
    assert fast != plain
    assert version("params:\n  MODE: {default: fast, allowed: [fast, full, x]}\n") == fast
    assert version("params:\n  MODE: {default: full, allowed: [fast, full]}\n") != fast


MODE = Param("MODE", "fast", ("fast", "full"))
DAY = Param("TARGET_DATE", None, None, r"^\d{4}-\d{2}-\d{2}$")


def test_values_fill_in_defaults_and_keep_what_was_given():
    assert checked_values((MODE, DAY), {}) == ({"MODE": "fast"}, [])
    values, problems = checked_values((MODE, DAY), {"TARGET_DATE": "2026-12-06", "MODE": "full"})
    assert (values, problems) == ({"MODE": "full", "TARGET_DATE": "2026-12-06"}, [])
    assert defaults((MODE, DAY)) == {"MODE": "fast"}


def test_values_outside_the_bounds_or_undeclared_say_why():
    _, problems = checked_values((MODE, DAY), {"MODE": "slow", "OTHER": "1", "TARGET_DATE": "x"})
    assert problems == [
        "--param MODE: 'slow' is not one of the allowed values: fast, full",
        "--param OTHER: the task declares no such parameter (its params: MODE, TARGET_DATE)",
        r"--param TARGET_DATE: 'x' does not match the pattern ^\d{4}-\d{2}-\d{2}$",
    ]


def test_the_whole_value_must_match_the_pattern():
    loose = Param("DAY", pattern=r"\d{4}-\d{2}-\d{2}")
    assert value_problem(loose, "2026-12-06") is None
    assert value_problem(loose, "2026-12-06; rm -rf /") is not None
    assert value_problem(DAY, "2026-12-06\n") is not None
    assert value_problem(Param("ANY"), "a\x00b") is not None
