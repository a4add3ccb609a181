"""`runs_page` and `last_pass`, the web console's reads, on every backend: runs newest first,
narrowed by status, team, task, machine and a commit prefix, one keyset page at a time."""

from __future__ import annotations

from reconciler.adapters.store.base import RunFilter
from reconciler.core.state import RunStatus
from tests.support.store_contract import add, ended, enqueue


def _ids(runs) -> list[int]:
    return [r.id for r in runs]


def test_runs_page_filters_and_pages_newest_first(store, now):
    failed = ended(store, now, RunStatus.FAILED, task="prod/web", machine="m1", version="v1")
    ok = ended(store, now, RunStatus.SUCCEEDED, task="prod/db", machine="m2", version="v1")
    other = ended(store, now, RunStatus.SUCCEEDED, task="prodx/web", machine="m1", version="v1")
    [pending] = add(store, now, enqueue("prod/web", "m2", "v2"), commit="abc123")
    everything = store.runs_page(RunFilter())
    assert _ids(everything) == [pending.id, other.id, ok.id, failed.id]
    assert all(r.output == "" for r in everything)  # listed without output, as list_runs
    assert _ids(store.runs_page(RunFilter(statuses=(RunStatus.FAILED,)))) == [failed.id]
    both = RunFilter(statuses=(RunStatus.FAILED, RunStatus.PENDING))
    assert _ids(store.runs_page(both)) == [pending.id, failed.id]
    assert _ids(store.runs_page(RunFilter(team="prod"))) == [pending.id, ok.id, failed.id]
    assert _ids(store.runs_page(RunFilter(task="prod/web"))) == [pending.id, failed.id]
    assert _ids(store.runs_page(RunFilter(machine="m1"))) == [other.id, failed.id]
    assert _ids(store.runs_page(RunFilter(team="prod", machine="m2"))) == [pending.id, ok.id]
    assert _ids(store.runs_page(RunFilter(commit="abc"))) == [pending.id]
    assert _ids(store.runs_page(RunFilter(commit="c0ffee"))) == [other.id, ok.id, failed.id]
    assert store.runs_page(RunFilter(machine="m9")) == []
    # Keyset pages: each after the last id of the one before.
    first = store.runs_page(RunFilter(), limit=2)
    assert _ids(first) == [pending.id, other.id]
    assert _ids(store.runs_page(RunFilter(), before=first[-1].id, limit=2)) == [ok.id, failed.id]
    assert store.runs_page(RunFilter(), before=failed.id) == []


def test_runs_page_takes_team_and_task_names_literally(store, now):
    """`_` and `%` are no wildcards: a range on task and equality, never LIKE."""
    plain = ended(store, now, RunStatus.SUCCEEDED, task="a_b/x", machine="m1")
    ended(store, now, RunStatus.SUCCEEDED, task="aXb/x", machine="m%")
    assert _ids(store.runs_page(RunFilter(team="a_b"))) == [plain.id]
    assert _ids(store.runs_page(RunFilter(machine="m1"))) == [plain.id]
    assert store.runs_page(RunFilter(commit="%")) == []


def test_last_pass_is_the_latest_commit_and_when(store, now):
    assert store.last_pass() is None
    store.record_commit("a" * 40, now)
    store.record_commit("b" * 40, now.replace(hour=13))
    commit, at = store.last_pass()
    assert commit == "b" * 40 and at == now.replace(hour=13)
