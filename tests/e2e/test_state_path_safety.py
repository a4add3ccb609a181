"""A state URL that names a folder instead of a database file: the reconciler must refuse it
as bad input and leave the folder as it was (it made a named folder 0600, so `--state /tmp`
locked every other user out of /tmp)."""

from __future__ import annotations

import stat

import pytest


@pytest.mark.parametrize("form", ["sqlite:///{}", "{}"])
def test_a_state_url_naming_a_folder_is_refused_and_the_folder_keeps_its_mode(project, form):
    p = project
    p.task("deploy", f"command: {p.record('deploy')}\n")
    folder = p.root / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    url = form.format(folder)
    for args in (["--once"], ["status"], ["queue", "list"], ["plan"]):
        result = p.run(*args, "--state", url)
        assert result.code == 2, (args, result.code, result.err)
        assert "is a folder" in result.err and "Traceback" not in result.err
        assert stat.S_IMODE(folder.stat().st_mode) == 0o1777, args
    assert p.ledger_lines() == []
