"""The `project` fixture of the end-to-end tests: a scratch `Project` (tests/support/project.py)
in the test's temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.project import Project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)
