"""get_runs: a drain learns in one read how the runs that ended elsewhere ended; each run as
get_run gives it (output included), missing ids left out."""

from reconciler.core.state import RunStatus
from tests.support.store_contract import ended, one


def test_get_runs_returns_each_existing_run_as_get_run_does(store, now):
    done = ended(store, now, RunStatus.FAILED, task="prod/a")
    waiting = one(store, now, task="prod/b")
    found = store.get_runs([done.id, waiting.id, 999_999])
    assert set(found) == {done.id, waiting.id}
    assert found[done.id] == store.get_run(done.id)
    assert found[done.id].output == "out" and found[done.id].status is RunStatus.FAILED
    assert found[waiting.id].status is RunStatus.PENDING
    assert store.get_runs([]) == {}
