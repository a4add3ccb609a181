"""Editor schemas (issue 19, item 2), checked with check-jsonschema (PyPI, in the `[test]`
extra) and `reconcile validate`.

Every `$schema` reference that the README, the docs, the demo inventory, the examples and
`reconcile init` write resolves offline, from the folder of the file it is written in, to one
of the shipped schemas; `init` writes no URL (the schemas' `$id`s are URNs, names no one
fetches). The schemas pass the 2020-12 metaschema, accept what `validate` accepts on sample
files, and reject what they can express of its rules (a duration over 3650d, a timeout of 0,
a cron field out of range, a step of 0) on sample files that `validate` rejects too.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from tests.support.cli import reconcile
from tests.support.schemas import SHIPPED, check_jsonschema

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("task", "team", "machine", "settings")
MODELINE = re.compile(r"#\s*yaml-language-server:\s*\$schema=(\S+)")
# Where a file of each kind lives in the demo inventory (README and docs paths start there).
DEMO_FOLDER = {
    "task": ROOT / "inventory" / "tasks" / "demo",
    "team": ROOT / "inventory" / "teams",
    "machine": ROOT / "inventory" / "machines",
    "settings": ROOT / "inventory",
}


def _shipped(path: Path) -> str | None:
    """The kind of the shipped schema `path` is (by content), None when it is none of them."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    return next((k for k in KINDS if (SHIPPED / f"{k}.schema.json").read_text() == text), None)


def _modelines(root: Path) -> list[tuple[Path, str]]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if match := MODELINE.search(line):
                    found.append((path, match.group(1)))
    return found


def _kind_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    if path.name in ("reconciler.yaml", "reconciler.yml"):
        return "settings"
    return {"tasks": "task", "teams": "team", "machines": "machine"}[
        next(p for p in parts if p in ("tasks", "teams", "machines"))
    ]


@pytest.mark.parametrize("folder", ["inventory", "examples"])
def test_every_modeline_of_the_repository_names_its_schema_by_a_path_that_exists(folder):
    found = _modelines(ROOT / folder)
    if folder == "inventory":
        assert len(found) >= 4, "the demo inventory names its schemas"
    for path, target in found:
        assert "://" not in target, f"{path}: {target} is not a path to a file"
        assert _shipped(path.parent / target) == _kind_of(path, ROOT / folder), f"{path}: {target}"


def test_the_readme_and_docs_schema_paths_resolve_where_they_say():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    seen = 0
    for doc in texts:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\$schema=([^\s`\"')]+)", text):
            kind = re.search(r"(\w+)\.schema\.json$", target).group(1)
            assert "://" not in target, f"{doc.name}: {target}"
            assert _shipped(DEMO_FOLDER[kind] / target) == kind, f"{doc.name}: {target}"
            seen += 1
        # VS Code's yaml.schemas mapping: paths from the workspace (repository) root.
        for target in re.findall(r"\"\./(schemas/\w+\.schema\.json)\"", text):
            assert _shipped(ROOT / target), f"{doc.name}: ./{target}"
            seen += 1
    assert seen >= 2


def test_schemas_folder_is_the_shipped_schemas():
    """schemas/ (what the README and editors name) and the package's schemas are one set of
    files: the repository's folder is a link to the package's."""
    assert os.path.realpath(ROOT / "schemas") == os.path.realpath(SHIPPED)


def test_init_writes_the_schemas_its_files_name_and_no_url(tmp_path):
    target = tmp_path / "project"
    reconcile("init", str(target), cwd=tmp_path, check_code=0)
    found = _modelines(target / "inventory")
    assert len(found) == 4
    for path, schema in found:
        assert "://" not in schema, f"{path}: {schema}"
        kind = _kind_of(path, target / "inventory")
        assert _shipped(path.parent / schema) == kind, f"{path}: {schema}"
        assert (path.parent / schema).resolve().is_relative_to(target)
        # An editor's check of the file against the schema its first line names passes.
        checked = check_jsonschema("--schemafile", str(path.parent / schema), str(path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
    for schema in (target / "schemas").glob("*.json"):
        assert json.loads(schema.read_text())["$id"].startswith("urn:"), schema


def test_the_schemas_pass_the_2020_12_metaschema():
    files = sorted(str(p) for p in SHIPPED.glob("*.schema.json"))
    assert len(files) == len(KINDS)
    for path in files:
        assert json.loads(Path(path).read_text())["$schema"].endswith("/draft/2020-12/schema")
    checked = check_jsonschema("--check-metaschema", *files)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_demo_and_example_inventories_pass_their_schemas():
    for root in (ROOT / "inventory", ROOT / "examples" / "multi-team"):
        for kind, pattern in (
            ("task", "tasks/**/*.yaml"),
            ("team", "teams/*.yaml"),
            ("machine", "machines/*.yaml"),
            ("settings", "reconciler.yaml"),
        ):
            files = sorted(str(p) for p in root.glob(pattern))
            assert files, f"{root}/{pattern}"
            schema = str(SHIPPED / f"{kind}.schema.json")
            checked = check_jsonschema("--schemafile", schema, *files)
            assert checked.returncode == 0, checked.stdout + checked.stderr


# --------------------------------------------------------------------------- samples

TEAM = "name: ops\nmembers: [{name: alice, role: admin}]\n"
MACHINE = "name: m\nteam: ops\ntransport: local\n"
TASK = "name: t\nmachines: [m]\ncommand: 'true'\n"

# (kind, what is added to a valid object of that kind): accepted by validate and the schema.
VALID = [
    ("task", "timeout: 3650d\n"),
    ("task", "timeout: 315360000\n"),
    ("task", "timeout: '315360000'\n"),
    ("task", "timeout: 3649d23h59m60s\n"),
    ("task", "timeout: 87600h\n"),
    ("task", "timeout: 1s\n"),
    ("task", "timeout: ' 5m '\n"),
    ("task", "timeout: 0001h\n"),
    ("task", "retry: {count: 1, delay: 0s, max_delay: 0}\n"),
    ("task", "schedule: '59 23 31 12 7'\n"),
    ("task", "schedule: '0 0 1 jan-DEC sun-sat'\n"),
    ("task", "schedule: '*/15 0-23/2 1,15 */3 MON-fri'\n"),
    ("task", 'schedule: "0\\t3  * * *"\n'),
    ("task", "schedule: '05 03 01 01 00'\n"),
    ("task", "schedule: '@daily'\n"),
    ("team", "defaults: {timeout: 10m}\nwindows: [{deny: '0 22 * * 5', duration: 60h}]\n"),
    ("machine", "windows: [{deny: '30 1 * * 0', duration: 1}]\n"),
    ("settings", "poll_interval: 30s\nssh_keepalive: 3650d\n"),
]
# Refused by validate, and by the schema (the rules it can express).
INVALID = [
    ("task", "timeout: 3651d\n"),
    ("task", "timeout: 315360001\n"),
    ("task", "timeout: 87601h\n"),
    ("task", "timeout: 5256001m\n"),
    ("task", "timeout: 315360001s\n"),
    ("task", "timeout: 0\n"),
    ("task", "timeout: 0d0s\n"),
    ("task", "retry: {delay: 4000d}\n"),
    ("task", "schedule: '61 * * * *'\n"),
    ("task", "schedule: '* 24 * * *'\n"),
    ("task", "schedule: '0 0 0 * *'\n"),
    ("task", "schedule: '0 0 32 * *'\n"),
    ("task", "schedule: '0 0 * 13 *'\n"),
    ("task", "schedule: '0 0 * * 8'\n"),
    ("task", "schedule: '*/0 * * * *'\n"),
    ("task", "schedule: '0 0 * * mon#2'\n"),
    ("task", "schedule: '0 0 * foo *'\n"),
    ("task", "schedule: '0 0 * * *  *'\n"),
    ("task", "schedule: '@every 5m'\n"),
    ("team", "defaults: {timeout: 0s}\n"),
    ("team", "windows: [{deny: '0 25 * * *', duration: 1h}]\n"),
    ("machine", "windows: [{deny: '0 1 * * *', duration: 3651d}]\n"),
    ("settings", "poll_interval: 0\n"),
    ("settings", "ssh_keepalive: 3651d\n"),
]


def _inventory(root: Path, kind: str, extra: str) -> Path:
    """A valid inventory (team ops, machine m, task t) with `extra` added to the object of
    `kind`; the path of that object's file."""
    texts = {
        "teams/ops.yaml": TEAM + (extra if kind == "team" else ""),
        "machines/m.yaml": MACHINE + (extra if kind == "machine" else ""),
        "tasks/ops/t.yaml": TASK + (extra if kind == "task" else ""),
        "reconciler.yaml": extra if kind == "settings" else "{}\n",
    }
    for relative, text in texts.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return (
        root
        / {
            "team": "teams/ops.yaml",
            "machine": "machines/m.yaml",
            "task": "tasks/ops/t.yaml",
            "settings": "reconciler.yaml",
        }[kind]
    )


def _judged(tmp_path: Path, samples) -> list[tuple[str, int, bool]]:
    """(sample, validate's exit code, whether the schema accepts it) for each sample."""
    verdicts, files = [], {}
    for index, (kind, extra) in enumerate(samples):
        root = tmp_path / f"s{index}"
        files[index] = (kind, _inventory(root, kind, extra))
        code = reconcile("validate", cwd=root, env={"RECONCILE_INVENTORY": str(root)}).code
        verdicts.append((f"{kind}: {extra.strip()}", code))
    refused = set()
    for kind in KINDS:
        mine = {str(path): i for i, (k, path) in files.items() if k == kind}
        if not mine:
            continue
        schema = str(SHIPPED / f"{kind}.schema.json")
        out = check_jsonschema("-o", "json", "--schemafile", schema, *mine)
        report = json.loads(out.stdout)
        assert report.get("parse_errors", []) == [], report
        refused |= {mine[e["filename"]] for e in report.get("errors", [])}
    return [(what, code, i not in refused) for i, (what, code) in enumerate(verdicts)]


def test_the_schemas_accept_what_validate_accepts(tmp_path):
    wrong = [v for v in _judged(tmp_path, VALID) if v[1:] != (0, True)]
    assert wrong == [], "(sample, validate's exit, schema accepts)"


def test_the_schemas_reject_what_they_can_express_of_validates_rules(tmp_path):
    wrong = [v for v in _judged(tmp_path, INVALID) if v[1:] != (2, False)]
    assert wrong == [], "(sample, validate's exit, schema accepts)"
