"""`suspend.reason`: validate and the editor schemas agree on what a valid reason is (issue 19,
second review) — not blank once trimmed of whitespace (Python's, which a no-break space is),
no control character (C0 or C1) or line separator within — and validate words each refusal
itself instead of showing the schema's regular expression."""

from __future__ import annotations

import json

from tests.support.cli import reconcile
from tests.support.schemas import SHIPPED, check_jsonschema

VALID = {
    "plain": "INC-123 database failover",
    "padded": " \\t INC-123\\u3000",
    "nbsp-inside": "INC\\u00a0123",
    "bom-led": "\\ufeffINC",
}
INVALID = {
    "empty": "",
    "blank": "   ",
    "ideographic-space": "\\u3000",
    "tab": "a\\tb",
    "newline": "a\\nb",
    "nel": "a\\u0085b",
    "c1": "a\\u0080b",
    "del": "a\\u007fb",
    "line-separator": "a\\u2028b",
    "paragraph-separator": "a\\u2029b",
}


def test_validate_and_the_schema_agree_on_a_freeze_reason(tmp_path):
    found = {}
    for name, reason in (VALID | INVALID).items():
        root = tmp_path / name
        (root / "teams").mkdir(parents=True)
        (root / "teams" / "ops.yaml").write_text("name: ops\n")
        (root / "machines").mkdir()
        target = root / "machines" / "box.yaml"
        target.write_text(
            f'name: box\nteam: ops\ntransport: local\nuser: nobody\nsuspend: {{reason: "{reason}"}}\n'
        )
        validated = reconcile(
            "--inventory", str(root), "validate", "--format", "json", cwd=tmp_path
        )
        schema = check_jsonschema("--schemafile", str(SHIPPED / "machine.schema.json"), str(target))
        messages = [e["message"] for e in json.loads(validated.out).get("errors", [])]
        assert not any("does not match" in m for m in messages), messages
        found[name] = (validated.code, schema.returncode == 0)
    expected = {n: (0, True) for n in VALID} | {n: (2, False) for n in INVALID}
    assert found == expected, "(validate's exit, whether the schema accepts it)"
