"""The package tree is the architecture, and these contracts keep it so.

Tiers, lowest first: `core` (pure: no I/O, no clock, no environment), `inventory` (reading
the YAML), `adapters` (store, transport, vault, audit, notify, source), `pipeline` (the engine
and what consumes its events), `web` (the HTTP listener and its pages), `cli` (the only
wiring). A module imports its own tier or lower ones, never a higher one; nothing but
`__main__` imports the CLI; no module imports itself back through others. Imports are read from the source (every `import`, lazy ones
included), so a contract cannot be dodged by importing inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"
TIERS = ["core", "inventory", "adapters", "pipeline", "web", "cli"]
# Modules whose use means I/O, a clock, the environment or a process: never in the core.
IMPURE = {
    "os",
    "sys",
    "subprocess",
    "socket",
    "time",
    "sqlite3",
    "pathlib",
    "shutil",
    "tempfile",
    "io",
    "logging",
    "random",
    "secrets",
    "signal",
    "select",
    "http",
    "urllib.request",
    "psycopg",
    "fabric",
    "paramiko",
    "git",
    "apprise",
    "yaml",
    "jsonschema",
    "watchfiles",
    "prometheus_client",
    "rich",
}
# Calls that read the clock or the environment.
IMPURE_CALLS = {"now", "utcnow", "today", "getenv", "monotonic", "time"}


def _module_name(path: Path) -> str:
    parts = ["reconciler", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every module `name` imports (`from pkg import submodule` counts as the submodule)."""
    found: set[str] = set()
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
            found.update(submodules or {base})
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _tier(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TIERS else None


def test_the_tree_has_exactly_the_tier_packages():
    top = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert top == set(TIERS)
    assert loose == {"__init__.py", "__main__.py"}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _tier(n)))
def test_a_module_imports_only_its_own_tier_or_lower_ones(name):
    rank = TIERS.index(_tier(name))
    upward = sorted(
        other for other in GRAPH[name] if _tier(other) and TIERS.index(_tier(other)) > rank
    )
    assert not upward, f"{name} ({TIERS[rank]}) imports a higher tier: {upward}"


def test_nothing_but_main_imports_the_cli():
    outside = sorted(
        (name, other)
        for name, imported in GRAPH.items()
        for other in imported
        if _tier(other) == "cli" and _tier(name) != "cli" and name != "reconciler.__main__"
    )
    assert not outside


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _tier(n) == "core"))
def test_the_core_does_no_io_reads_no_clock_and_no_environment(name):
    impure = sorted(m for m in GRAPH[name] if m in IMPURE or m.split(".")[0] in IMPURE)
    assert not impure, f"{name} imports {impure}"
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    calls = sorted(
        {
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in IMPURE_CALLS
        }
        | {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"open", "input", "print"}
        }
    )
    assert not calls, f"{name} calls {calls}"


def test_no_module_imports_itself_back_through_others():
    edges = {
        name: {m for m in imported if m in MODULES and m != name}
        for name, imported in GRAPH.items()
    }
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in edges:
        if name not in index:
            visit(name)
    assert not cycles


def test_the_contracts_see_a_violation(tmp_path, monkeypatch):
    """The checker itself: an upward import written into a core module is caught."""
    fake = tmp_path / "core_probe.py"
    fake.write_text("from reconciler.cli import main\nimport os\n", encoding="utf-8")
    monkeypatch.setitem(MODULES, "reconciler.core.core_probe", fake)
    imported = _imports("reconciler.core.core_probe")
    assert "reconciler.cli.main" in imported and "os" in imported
