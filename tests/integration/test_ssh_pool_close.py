"""What a close of the SSH pool ends, against real sshd: work begun before it (a connect
ahead, the runners `prepare` starts, a run waiting for them or for a connection) opens
nothing after it and is not left waiting, and a pool used again after it (another pass on
the same transport) keeps the runners it starts for its own runs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.core.errors import TransportError
from tests.support.sshd import descendants
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


class Gate:
    """Holds the transport's next `count` connects once they logged in, until `release`."""

    def __init__(self, transport, count: int = 1):
        self._connect = transport.pool._connect
        self.logged_in = [threading.Event() for _ in range(count)]
        self.released = [threading.Event() for _ in range(count)]
        self._calls = 0
        self._lock = threading.Lock()
        transport.pool._connect = self.connect

    def connect(self, machine):
        client = self._connect(machine)
        with self._lock:
            index, self._calls = self._calls, self._calls + 1
        if index < len(self.logged_in):
            self.logged_in[index].set()
            assert self.released[index].wait(60), "the test never released its connect"
        return client

    def wait(self, index: int) -> None:
        assert self.logged_in[index].wait(30), f"connect {index} never logged in"

    def release(self, index: int) -> None:
        self.released[index].set()


class Watched(threading.Event):
    """An event that says when a thread began to wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = threading.Event()

    def wait(self, timeout=None):
        self.waited.set()
        return super().wait(timeout)


class WatchedCondition(threading.Condition):
    """A condition that says when a thread began to wait on it."""

    def __init__(self, lock) -> None:
        super().__init__(lock)
        self.waited = threading.Event()

    def wait(self, timeout=None):
        self.waited.set()
        return super().wait(timeout)


def _connect_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "ssh-connect"}


def test_a_connect_ahead_a_close_refused_leaves_the_next_pass_its_runners(sshd, transport):
    """A connect ahead still on its way at a close is refused once logged in, and it reported
    its runners as never to start: to the pool's slot of the machine as it was then, the
    next pass's (the pool used again). That pass's runs stopped waiting for the runners its
    own prepare was starting and opened channels of their own beside them: a second login."""
    machine = sshd.machine(max_parallel=8)
    gate = Gate(transport, count=2)
    before = _connect_threads()
    transport.prepare([machine], {machine.name: 7})
    [stale] = _connect_threads() - before
    gate.wait(0)
    transport.close()  # the first pass ends, its connect ahead still on its way
    transport.prepare([machine], {machine.name: 8})  # the next pass, on the same transport
    gate.wait(1)
    gate.release(0)
    stale.join(30)
    assert not stale.is_alive()
    assert transport.pool._slot(machine).starting == 7  # the next pass's runners, all to come
    with ThreadPoolExecutor(8) as runs:
        started = [
            runs.submit(transport.run, machine, "echo ok", {}, 30, run_id) for run_id in range(1, 9)
        ]
        gate.release(1)
        done = [future.result().output for future in started]
    assert done == ["ok\n"] * 8
    assert sshd.logins() == 2  # the refused connect ahead's, and the next pass's alone


def test_a_run_waiting_for_the_runners_of_a_closed_pool_is_not_left_waiting(sshd, transport):
    """A run waits for the runners `prepare` is starting (up to the connect timeout). A close
    meanwhile refuses them; the run waited its whole wait (nothing told it) and then logged
    in again, on a pool nothing would close again. It ends at once: nothing was sent."""
    machine = sshd.machine(max_parallel=8)
    transport.connect_timeout = 120  # how long a run waits for the runners ahead
    gate = Gate(transport)
    transport.prepare([machine], {machine.name: 7})
    gate.wait(0)
    slot = transport.pool._slot(machine)
    slot.changed = waiting = WatchedCondition(slot.lock)
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["done"] = transport.run(machine, "echo ok", {}, 30, 1)
        except TransportError as exc:
            result["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    assert waiting.waited.wait(30)
    transport.close()
    gate.release(0)
    runner.join(30)
    assert not runner.is_alive(), "the run still waits for runners a close refused"
    assert "the connections were closed" in str(result.get("error"))
    assert sshd.logins() == 1
    wait_until(lambda: not descendants(sshd.proc.pid), timeout=10, message="no login left open")


def test_a_connect_a_close_overtook_is_closed_not_kept_for_ever(sshd, transport, tmp_path):
    """A caller that waits (a while) for a channel to end on a full connection, still waiting
    when the pool closes, then connects: its connection, made once the close was over, went
    to the machine's slot that close had emptied, where no later close, idle timeout or
    watchdog saw it: a login kept open for the life of the process. It is refused, and
    closed: nothing was sent."""
    pool = transport.pool
    machine = sshd.machine()
    go = tmp_path / "go"
    ending = pool.take(machine)
    ending.channel.exec_command(f'while [ ! -f "{go}" ]; do sleep 0.05; done')
    ending.channel.status_event = watched = Watched()
    pool.drain(machine, ending)  # its place is freed once its command ended
    slot = pool._slot(machine)

    def only_it_drains() -> bool:  # the markers' cleanup, at the login, ended
        pool._reap_drained(slot)
        return [c.draining for c in slot.connections] == [[ending.channel]]

    wait_until(only_it_drains, timeout=30, message="the markers' cleanup to end")
    pool.max_channels = 1  # the connection is full
    gate = Gate(transport)
    result: dict[str, object] = {}

    def take() -> None:
        try:
            pool.give_back(machine, pool.take(machine))
            result["taken"] = True
        except TransportError as exc:
            result["error"] = exc

    taker = threading.Thread(target=take)
    taker.start()
    assert watched.waited.wait(30)  # waiting for the ending channel's place
    closing = threading.Thread(target=pool.close)
    closing.start()
    wait_until(  # it gave up waiting: it connects, or is told the pool closed
        lambda: gate.logged_in[0].is_set() or not taker.is_alive(),
        timeout=30,
        message="the caller to give up waiting",
    )
    go.write_text("")
    closing.join(30)
    assert not closing.is_alive()
    gate.release(0)
    taker.join(30)
    assert "the connections were closed" in str(result.get("error"))
    wait_until(lambda: not descendants(sshd.proc.pid), timeout=10, message="no login left open")
    assert sshd.logins() == 1
