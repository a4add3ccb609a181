"""The web console on a shared PostgreSQL store, as a read-only login role sees it: every page
answers from the reader's SELECTs alone, with the same runs `queue list` shows it."""

from __future__ import annotations

import pytest

from tests.support.console import served
from tests.support.pg_roles import least_privilege
from tests.support.project import Project

pytestmark = pytest.mark.integration


def test_the_console_serves_a_postgresql_store_to_a_reader_role(tmp_path, postgres_url):
    with least_privilege(postgres_url) as (worker_url, reader_url):
        p = Project(tmp_path)
        p.task("hello", "command: echo hello from postgres\n")
        p.task("broken", "command: echo no; exit 2\n")
        p.run("--once", "-q", "--state", worker_url, code=1)
        listed = p.run("queue", "list", "--state", reader_url, "--format", "json", code=0).json()
        with served(p.root, "--state", reader_url) as console:
            assert console.json("/runs")["runs"] == listed
            assert console.json("/runs?status=failed")["runs"] == [
                r for r in listed if r["status"] == "failed"
            ]
            hello = next(r for r in listed if r["task"] == "ops/hello")
            assert console.json(f"/runs/{hello['id']}")["output"] == "hello from postgres\n"
            overview = console.json("/")
            assert overview["failed_last_24h"] == 1 and overview["audit"]["entries"] > 0
            for target in (
                "/",
                "/runs",
                f"/runs/{hello['id']}",
                "/tasks/ops/hello",
                "/machines/box",
            ):
                assert console.get(target)[0] == 200, target
            assert console.get("/runs", method="POST")[0] == 405
