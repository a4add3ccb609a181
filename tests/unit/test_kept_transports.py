"""The daemon's kept transports (adapters/transport/kept.py): a pass borrows the SSH
transport and gives back only its own runs; after `renew` (SIGHUP) later passes get a new
one, and the old one closes once the last pass that borrowed it ended, never under it."""

from __future__ import annotations

import pytest

from reconciler.adapters.transport.kept import KeptTransports


class Owner:
    """Stands in for SshTransport: records what the borrowers asked of it."""

    def __init__(self, **settings):
        self.settings = settings
        self.released: list[set[int]] = []
        self.closed = 0

    def run(self, machine, command, env, timeout, run_id, control=None, key=""):
        return run_id

    def release(self, run_ids):
        self.released.append(set(run_ids))

    def close(self):
        self.closed += 1


@pytest.fixture
def owners(monkeypatch):
    made: list[Owner] = []

    def build(**settings):
        made.append(Owner(**settings))
        return made[-1]

    import reconciler.adapters.transport.ssh as ssh

    monkeypatch.setattr(ssh, "SshTransport", build)  # kept.py imports it when first asked
    return made


def test_passes_share_one_transport_and_each_gives_back_only_its_runs(owners):
    kept = KeptTransports()
    first, second = kept.ssh(None, 10.0, 3), kept.ssh(None, 10.0, 3)
    first.run(None, "true", {}, 5, 1)
    second.run(None, "true", {}, 5, 2)
    first.close()
    first.close()  # a second close gives back nothing more
    assert len(owners) == 1 and owners[0].released == [{1}, set()] and not owners[0].closed
    second.close()
    assert owners[0].released[-1] == {2} and not owners[0].closed  # kept for the next pass
    kept.close()
    assert owners[0].closed == 1


def test_a_pass_gives_back_none_of_the_runs_a_later_pass_took_since(owners):
    """A retry is the same run id, its next attempt run by a later pass."""
    kept = KeptTransports()
    first, second = kept.ssh(None, 10.0, 3), kept.ssh(None, 10.0, 3)
    first.run(None, "false", {}, 5, 7)
    first.run(None, "sleep 9", {}, 5, 8)
    second.run(None, "false", {}, 5, 7)  # run 7's retry
    first.close()
    second.close()
    assert owners[0].released == [{8}, {7}]


def test_another_liveness_setting_gets_a_transport_of_its_own(owners):
    kept = KeptTransports()
    kept.ssh(None, 10.0, 3).close()
    kept.ssh(None, 5.0, 3).close()
    assert [o.settings["keepalive"] for o in owners] == [10.0, 5.0]
    assert [o.closed for o in owners] == [1, 0]  # no later pass asks for the old setting


def test_the_transport_of_an_earlier_setting_closes_once_its_last_pass_ended(owners):
    kept = KeptTransports()
    draining = kept.ssh(None, 10.0, 3)
    later = kept.ssh(None, 5.0, 3)
    assert not owners[0].closed  # a pass still drains on it
    draining.close()
    assert [o.closed for o in owners] == [1, 0]
    later.close()
    kept.close()
    assert [o.closed for o in owners] == [1, 1]


def test_renew_closes_the_old_transport_once_no_pass_uses_it(owners):
    kept = KeptTransports()
    draining = kept.ssh(None, 10.0, 3)
    kept.renew()
    assert not owners[0].closed  # a pass still drains on it
    later = kept.ssh(None, 10.0, 3)
    assert len(owners) == 2  # the next pass logs in afresh
    draining.close()
    assert owners[0].closed == 1 and not owners[1].closed
    kept.renew()  # nothing borrows the second after `later` ends
    later.close()
    assert owners[1].closed == 1
    kept.close()
    assert [o.closed for o in owners] == [1, 1]


def test_renew_with_no_pass_running_closes_at_once(owners):
    kept = KeptTransports()
    kept.ssh(None, 10.0, 3).close()
    kept.renew()
    assert owners[0].closed == 1


def test_a_key_is_resolved_with_the_newest_pass_secrets(owners):
    from types import SimpleNamespace

    kept = KeptTransports()
    kept.ssh(lambda team, key: f"old {team} {key}", 10.0, 3)
    kept.ssh(lambda team, key: f"new {team} {key}", 10.0, 3)
    resolve = owners[0].settings["resolve_key"]
    assert resolve(SimpleNamespace(team="ops", key="K")) == "new ops K"
    assert resolve(SimpleNamespace(team="ops", key=None)) is None
