"""The CLI's last guard for an OSError no command translated (cli/outputs.describe_os_error,
used by cli/main.py): one line naming the path, exit 2 for a path the user can fix, exit 3 for
the machine's trouble (issue 19 item 4: no traceback, one JSON document). The errors are the
system's own, from real calls."""

from __future__ import annotations

import errno
import socket

import pytest

from reconciler.cli.outputs import describe_os_error


def test_a_folder_that_is_a_file_is_named_and_is_bad_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a folder\n")
    with pytest.raises(OSError) as raised:
        open("notes.txt/deep/k.key", "w")  # noqa: SIM115 (it fails)
    code, message, hint, path = describe_os_error(raised.value)
    assert (code, path) == (2, "notes.txt/deep/k.key")
    assert message == "cannot use notes.txt/deep/k.key: notes.txt is a file, not a folder"
    assert hint == "name a path whose folders exist"


def test_a_directory_written_as_a_file_is_bad_input(tmp_path):
    with pytest.raises(IsADirectoryError) as raised:
        open(tmp_path, "w")  # noqa: SIM115 (it fails)
    code, message, hint, _ = describe_os_error(raised.value)
    assert code == 2 and str(tmp_path) in message and "directory" in message.lower()
    assert hint == "check the path and its permissions"


def test_a_full_disk_is_the_machines_trouble():
    full = OSError(errno.ENOSPC, "No space left on device", "inventory/vaults/ops.age")
    assert describe_os_error(full) == (
        3,
        "inventory/vaults/ops.age: No space left on device",
        "the disk is full or failing",
        "inventory/vaults/ops.age",
    )


def test_a_network_failure_is_the_machines_trouble_without_a_path():
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError) as raised:
        sock.connect(("127.0.0.1", 1))  # nothing listens on port 1
    code, message, hint, path = describe_os_error(raised.value)
    assert (code, hint, path) == (3, None, None) and "refused" in message.lower()
