"""Fixtures shared by the unit tests of the event consumers."""

from __future__ import annotations

import pytest

from reconciler.adapters.store.factory import open_store


@pytest.fixture
def store(project):
    """A real SQLite store of the test module's `project` (an InProcessProject), closed after."""
    opened = open_store(project.url)
    yield opened
    opened.close()
