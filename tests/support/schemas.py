"""The shipped JSON Schemas and check-jsonschema (PyPI, in the `[test]` extra), for the tests
that hold the schemas to what `reconcile validate` accepts and rejects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.integration import require_binary

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "reconciler" / "inventory" / "schemas"


def check_jsonschema(*args: str) -> subprocess.CompletedProcess:
    tool = require_binary("check-jsonschema", str(Path(sys.executable).parent / "check-jsonschema"))
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)
