"""The SSH pool's liveness watchdog (transport.pool.Connection.watch) against a stand-in
transport: probes one at a time, a connection silent for `interval * count` is declared dead
and closed. Times are passed in; waits are on conditions, with deadlines."""

from __future__ import annotations

import threading
import time

from reconciler.adapters.transport.pool import PROBE, Connection
from tests.support.waiting import wait_until


class FakeTransport:
    """Answers probes when `answering` is set; otherwise a probe waits until closed."""

    def __init__(self, answering: bool = True):
        self.answering = answering
        self.active = True
        self.probes: list[str] = []
        self.probed = threading.Event()
        self.closed = threading.Event()

    def global_request(self, kind, data=None, wait=True):
        self.probes.append(kind)
        self.probed.set()
        if not self.answering:
            self.closed.wait(10)
        return None  # sshd's "request failure" is an answer too

    def is_active(self):
        return self.active

    def close(self):
        self.active = False
        self.closed.set()


class FakeClient:
    """Stands in for paramiko's SSHClient."""

    def __init__(self, transport):
        self.transport = transport

    def get_transport(self):
        return self.transport

    def close(self):
        self.transport.close()


def test_a_probe_that_wants_an_answer_is_sent_each_interval_and_its_answer_noted():
    transport = FakeTransport()
    connection = Connection(FakeClient(transport))
    before = connection.answered
    connection.watch(time.monotonic() + 10, interval=10, count=3)
    assert transport.probed.wait(5) and transport.probes == [PROBE]
    wait_until(lambda: not connection.probing, timeout=5, message="the probe's answer")
    assert connection.answered >= before and not connection.broken


def test_only_one_probe_is_in_flight():
    transport = FakeTransport(answering=False)
    connection = Connection(FakeClient(transport))
    now = time.monotonic()
    connection.watch(now + 10, interval=10, count=3)
    assert transport.probed.wait(5)
    connection.watch(now + 20, interval=10, count=3)
    assert transport.probes == [PROBE]
    transport.close()


def test_a_connection_silent_for_count_intervals_is_dead_and_closed():
    transport = FakeTransport(answering=False)
    connection = Connection(FakeClient(transport))
    connection.watch(connection.answered + 29, interval=10, count=3)
    assert not connection.broken
    connection.watch(connection.answered + 30, interval=10, count=3)
    assert connection.broken and not transport.active
    assert "no answer for 30s" in connection.dead and "unreachable" in connection.dead


def test_a_dead_connection_still_held_by_a_channel_is_never_handed_out_again():
    from reconciler.adapters.transport.pool import ConnectionPool
    from reconciler.core.model import Machine

    opened: list[FakeTransport] = []

    def connect(machine):
        opened.append(FakeTransport())
        return FakeClient(opened[-1])

    pool = ConnectionPool(connect, keepalive=60)
    box = Machine("box", "ops", transport="ssh", host="127.0.0.1")
    held = pool._acquire(box)  # another command's channel keeps it listed
    opened[0].active = False  # the peer went away under it
    fresh = pool._acquire(box)
    assert fresh is not held and len(opened) == 2 and fresh.alive
    pool.close()
