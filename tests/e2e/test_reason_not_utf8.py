"""A `--reason` that is not UTF-8 (bytes a shell passes through as typed) is refused as bad
input: exit 2, a line that says so, nothing queued, killed or written. It used to reach the
store's UTF-8 encoding and end the command with exit 3 "internal error"."""

from __future__ import annotations

# How Python holds the byte 0xff of an argument that is not UTF-8; the CLI helper passes it
# back to the command as that byte (os.fsencode).
BYTE_FF = "\udcff"


def test_run_refuses_a_reason_that_is_not_utf8_and_queues_nothing(project):
    p = project
    p.task("echoer", "command: echo hi\n")
    refused = p.run("run", "ops/echoer", "--reason", f"bad{BYTE_FF}", code=2)
    assert "--reason is not valid UTF-8 (byte 0xff at character 4)" in refused.err, refused.err
    assert "internal error" not in refused.err and "Traceback" not in refused.err
    assert p.run("queue", "list", code=0).out.strip() == "No runs."


def test_queue_kill_refuses_a_reason_that_is_not_utf8_and_leaves_the_run(project):
    p = project
    p.task("echoer", "command: echo hi\n")
    p.run("run", "ops/echoer", "--reason", "now", code=0)
    refused = p.run("queue", "kill", "1", "--reason", f"x{BYTE_FF}y", code=2)
    assert "--reason is not valid UTF-8 (byte 0xff at character 2)" in refused.err, refused.err
    assert "internal error" not in refused.err
    shown = p.run("queue", "show", "1", "--format", "json", code=0).json()
    assert shown["status"] == "pending", shown
