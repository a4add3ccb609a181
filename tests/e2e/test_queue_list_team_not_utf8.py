"""`queue list --team T` with a T that is not UTF-8 (bytes a shell passes through as typed)
is refused as bad input: exit 2 and a line saying so. It used to reach the store's UTF-8
encoding and end the command with exit 3 "internal error (a bug in reconciler ...)"."""

from __future__ import annotations

# How Python holds the byte 0xff of an argument that is not UTF-8; the CLI helper passes it
# back to the command as that byte (os.fsencode).
BYTE_FF = "\udcff"


def test_queue_list_refuses_a_team_that_is_not_utf8(project):
    p = project
    p.task("echoer", "command: echo hi\n")
    p.run("run", "ops/echoer", "--reason", "now", code=0)  # a store with a run in it
    refused = p.run("queue", "list", "--team", f"op{BYTE_FF}s", code=2)
    assert "--team is not valid UTF-8 (byte 0xff at character 3)" in refused.err, refused.err
    assert "internal error" not in refused.err and "Traceback" not in refused.err
    listed = p.run("queue", "list", "--team", f"op{BYTE_FF}s", "--format", "json", code=2)
    assert listed.json()["kind"] == "usage", listed.out
