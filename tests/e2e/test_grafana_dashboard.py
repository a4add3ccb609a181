"""The example Grafana dashboard against Grafana's own dashboard types (`Dashboard` of the
`@grafana/schema` package), checked by the TypeScript compiler (issue 19): the dashboard
JSON is written as an object literal typed `Dashboard`, so a property Grafana's model does
not know (`templating.list[1].definition`) or a required one missing (`current: {}` without
`text` and `value`) fails the compile. Grafana's enums are compared by their values (a JSON
file holds `"absolute"`, not `ThresholdsMode.Absolute`).

`.ci/run` installs the two npm packages into `.ci/grafana/`; without
them the test is skipped, or fails under RECONCILER_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"
TOOLS = ROOT / ".ci" / "grafana" / "node_modules"

CHECK = """import type { Dashboard } from '@grafana/schema';

// Grafana's enums as the literal values a JSON file holds.
type Json<T> = T extends string
  ? `${T}`
  : T extends readonly (infer E)[]
    ? Json<E>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

const dashboard: Json<Dashboard> = %s;
export default dashboard;
"""


def tsc_of(dashboard: str, folder: Path) -> subprocess.CompletedProcess:
    """Compile `dashboard` (JSON text) typed as Grafana's `Dashboard`; no output written."""
    tsc, schema = TOOLS / ".bin" / "tsc", TOOLS / "@grafana" / "schema"
    if not (tsc.exists() and schema.exists() and shutil.which("node")):
        if os.environ.get("RECONCILER_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"{TOOLS} lacks typescript or @grafana/schema (.ci/run installs them)")
        pytest.skip("typescript and @grafana/schema are not installed in .ci/grafana")
    (folder / "check.ts").write_text(CHECK % dashboard)
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "skipLibCheck": True,
            "module": "esnext",
            "moduleResolution": "bundler",
            "target": "es2022",
            "baseUrl": ".",
            "paths": {"@grafana/schema": [str(schema)]},
            "types": [],
        },
        "files": ["check.ts"],
    }
    (folder / "tsconfig.json").write_text(json.dumps(config))
    return subprocess.run(
        [str(tsc), "-p", str(folder)], capture_output=True, text=True, timeout=300
    )


def test_the_example_dashboard_has_grafanas_dashboard_type(tmp_path):
    result = tsc_of(DASHBOARD.read_text(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_catches_what_grafana_rejects(tmp_path):
    """The check is not vacuous: the two defects of issue 19 fail it."""
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["templating"]["list"][0]["current"] = {}
    dashboard["templating"]["list"][1]["definition"] = "label_values(x, team)"
    result = tsc_of(json.dumps(dashboard, indent=2), tmp_path)
    assert result.returncode != 0
    assert "text, value" in result.stdout and "definition" in result.stdout, result.stdout
