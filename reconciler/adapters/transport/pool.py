"""One SSH connection per machine, shared by the runs of that machine from many threads.

The engine calls `run()` from a thread pool, up to `max_parallel` at once per machine. They
share one connection (one login, one key exchange) and each gets its own channel on it;
paramiko's transport multiplexes channels and is safe to use from several threads. Only when
more than `max_channels` runs of one machine are open at once is a second connection opened
(sshd refuses more than `MaxSessions`, 10 by default, on one connection; a server that
refuses a channel earlier lowers that connection's `capacity`, it is not a lost connection).

A run is sent to a runner (`wrapper.RUNNER`), a bash that stays on its channel and runs one
run after another: the channel goes back to the pool between runs (`give_back_runner`) and the
next run of that machine takes it (`idle_runner`), so sshd's session and the login shell are
paid once per channel, not once per run. Idle runners keep their places on the connection; a
caller that needs a channel of its own (a kill, a read of the markers) when every place is
taken closes one. A target that cannot keep a runner (no bash 4.1, no /proc) gets one channel
per run (`Connection.runs_runners` False).

With one channel per run, a run's channel may outlive its command: the wrapper waits for the acknowledgement of its
output, which the transport sends only once the run's end is recorded (`ssh.SshTransport.settle`).
Until the wrapper exits on it the channel is open and counts against the connection (sshd
counts it against `MaxSessions`): the transport hands an acknowledged channel back with
`drain()`, and it is closed and freed when its command has ended, which is at most one round
trip later. A caller that finds every connection full waits for such a channel rather than
opening a new connection for it.

Connecting happens once for all the threads that need it: the first connects, the others wait
for its result and share the connection, or its error. A connection found dead (its transport
stopped, a channel cannot be opened) is dropped and the next caller reconnects; a connection
unused for `idle_timeout` seconds is closed (by the next caller, or the watchdog).

Liveness: a silently dead peer (a partition: no FIN, no RST, the packets just stop) is never
noticed by paramiko, whose keepalive asks for no reply, nor by TCP keepalive when a middlebox
keeps ACKing. So a watchdog thread sends every connection a global request that wants a reply
(`keepalive@openssh.com`, OpenSSH's own ServerAliveInterval probe) every `keepalive` seconds,
one at a time, and declares the connection dead when nothing answered for `keepalive *
keepalive_count` seconds: it closes the transport, which closes every channel on it, so a
command waiting on it ends at once (as `ConnectionLost`, with `Connection.dead` saying why).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from reconciler.adapters.transport.sshlib import paramiko
from reconciler.adapters.transport.wrapper import RUNNER_QUIT
from reconciler.core.errors import TransportError, Unreachable
from reconciler.core.model import Machine

MAX_CHANNELS = 8
IDLE_TIMEOUT = 300.0
KEEPALIVE = 10.0  # seconds between liveness probes
KEEPALIVE_COUNT = 3  # probe intervals without an answer before a connection is dead
PROBE = "keepalive@openssh.com"  # any global request works: sshd answers "unsupported"
DRAIN_WAIT = 2.0  # how long a caller waits for an acknowledged channel to end, not connecting
CLOSE_WAIT = 10.0  # how long `close` waits for acknowledged commands to end (they empty outputs)


class Connection:
    """One open SSH connection: the paramiko client and how many channels use it."""

    def __init__(self, client):
        self.client = client
        self.transport: paramiko.Transport = client.get_transport()
        self.in_use = 0
        self.capacity = 1 << 16  # lowered when the server refuses a channel
        self.last_used = time.monotonic()
        self.broken = False
        self.answered = time.monotonic()  # when the peer last answered a probe
        self.probed = 0.0  # when the last probe was sent
        self.probing = False  # a probe waits for its answer (one at a time)
        self.dead: str | None = None  # why the watchdog declared the connection dead
        # Acknowledged channels whose command has not ended yet (counted in `in_use`).
        self.draining: list[paramiko.Channel] = []
        self.idle: list[Runner] = []  # runners waiting for a run (counted in `in_use`)
        self.runs_runners: bool | None = None  # None until a first runner started (or not)
        self.opened_at = time.monotonic()  # when the pool's `opened` last ran on it

    def hand_over(self, channel: paramiko.Channel) -> None:
        """Give the connection a channel whose command ends by itself (`ConnectionPool`'s
        `opened`; under the slot's lock once the connection is shared): it is closed once
        the command ended."""
        self.in_use += 1
        self.draining.append(channel)

    def let_go_idle(self, runner: Runner) -> None:
        """Tell an idle runner to quit (under the slot's lock): it exits within a round
        trip, and its place drains like an acknowledged channel's."""
        self.idle.remove(runner)
        runner.quit()
        self.draining.append(runner.channel)

    @property
    def alive(self) -> bool:
        """False once the transport stopped or a channel could not be opened on it."""
        return not self.broken and self.transport is not None and self.transport.is_active()

    def open_channel(self, timeout: float) -> paramiko.Channel:
        """A new session channel; raises paramiko.SSHException (and marks us broken) when the
        connection turns out to be dead. A channel the server refused (`ChannelException`:
        sshd's `MaxSessions` is lower than our `max_channels`) leaves the connection alive
        and lowers how many channels it is given at once (`capacity`)."""
        try:
            return self.transport.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # paramiko keeps one saved exception per transport, so of several threads whose
            # channels were refused at once only one sees the ChannelException; the others
            # see a plain SSHException on a transport that is still up.
            refused = isinstance(exc, paramiko.ChannelException) or (
                isinstance(exc, paramiko.SSHException)
                and self.transport.is_active()
                and "timeout" not in str(exc).lower()
            )
            if not refused:
                self.broken = True
                raise
            self.capacity = max(1, min(self.capacity, self.in_use - 1))
            raise paramiko.ChannelException(1, f"channel refused by the server: {exc}") from exc

    def watch(self, now: float, interval: float, count: int) -> None:
        """One watchdog tick: declare the connection dead after `interval * count` seconds
        without an answer, else send a probe when one is due and none is in flight."""
        if self.broken:
            return
        silent = now - self.answered
        if silent >= interval * count:
            self.dead = (
                f"no answer for {silent:.0f}s ({count} keepalive probes, one every "
                f"{interval:g}s); the machine is unreachable"
            )
            self.close()
        elif not self.probing and now - self.probed >= interval:
            self.probing, self.probed = True, now
            threading.Thread(target=self._probe, name="ssh-probe", daemon=True).start()

    def _probe(self) -> None:
        """Send one probe and wait for its answer (or for the transport to close: a global
        request has no timeout of its own; the watchdog closing the transport ends it)."""
        try:
            self.transport.global_request(PROBE, wait=True)  # None: "unsupported", an answer
            if self.transport.is_active():
                self.answered = time.monotonic()
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the connection is going away; the watchdog or the next use notices
        finally:
            self.probing = False

    def close(self) -> None:
        self.broken = True
        try:
            self.client.close()  # also when the transport is no longer active
        except Exception:  # noqa: BLE001 - closing a dead connection may fail in many ways
            pass


class _Slot:
    """The connections of one machine, and the connect in progress for it, if any."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: list[Connection] = []
        self.connecting: Future | None = None
        self.capacity = 1 << 16  # channels a connection may carry (lowered by refusals)
        self.starting = 0  # runners being started ahead of the runs (`warm`)
        self.changed = threading.Condition(self.lock)  # a runner is idle, or one fewer starts
        # Set by the pool's `close` (under `lock`): the slot is no longer the pool's, and
        # no connection is added to it (none would ever be closed).
        self.closed = False


class Session:
    """A channel on a pooled connection, for one command."""

    def __init__(self, connection: Connection, channel: paramiko.Channel):
        self.connection = connection
        self.channel = channel

    @property
    def alive(self) -> bool:
        return self.connection.alive


class Runner(Session):
    """A channel whose runner waits for runs (`wrapper.RUNNER`): one run at a time is sent
    on it, by the thread that took it; acknowledgements of earlier runs may be sent by
    another thread meanwhile, hence the lock around every send."""

    def __init__(self, connection: Connection, channel: paramiko.Channel):
        super().__init__(connection, channel)
        self.send_lock = threading.Lock()
        self.idle_since = time.monotonic()  # when it was last given back, waiting for a run

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.channel.sendall(data)

    @property
    def usable(self) -> bool:
        """Its connection lives and its runner has not exited (nor its channel closed)."""
        channel = self.channel
        return self.connection.alive and not channel.closed and not channel.status_event.is_set()

    def quit(self) -> None:
        """Tell the runner to exit once it read what was sent before (acknowledgements)."""
        try:
            with self.send_lock:
                send_last(self.channel, RUNNER_QUIT)  # no EOF after it (see `wrapper`)
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the runner is gone already


def send_last(channel: paramiko.Channel, data: bytes) -> None:
    """Send `data`, the last the remote side reads from `channel`, and mark the channel
    half-closed (`no_eof`) before its last piece leaves. The remote may exit as soon as it
    reads it, and paramiko answers a CLOSE that arrives before the mark with an EOF of its
    own (which could reach sshd after it freed the channel): marked after `sendall`, that
    EOF went out now and then. Raises EOFError when the channel can take no more."""
    while data:
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_CHANNEL_DATA)
        message.add_int(channel.remote_chanid)
        with channel.lock:  # what paramiko's own send does, with the mark inside
            if channel.closed:
                raise OSError("the channel is closed")
            size = channel._wait_for_send_window(len(data))
            if size == 0:
                raise EOFError("the channel takes no more data")
            message.add_string(data[:size])
            data = data[size:]
            if not data:
                channel.eof_sent = True
        channel.transport._send_user_message(message)


def no_eof(channel: paramiko.Channel) -> None:
    """Mark `channel` as half-closed without telling the server: paramiko then sends no EOF
    when it is closed, only the CLOSE (see `wrapper`: an EOF racing the remote exit can reach
    sshd after it freed the channel, which drops the connection)."""
    with channel.lock:  # paramiko decides whether to send an EOF under this lock
        channel.eof_sent = True


class ConnectionPool:
    """Connections by machine. `connect(machine)` opens one (a paramiko `SSHClient`, already
    connected and verified) or raises a TransportError; `opened(connection)`, when given, is
    called with each new connection before any caller gets it, and with `opened_every`
    again every that many seconds while it stays open (by the watchdog, on a thread of its
    own; a pool that outlives its passes, the daemon's, may keep a connection for weeks). It
    returns a channel whose command ends by itself (closed by the pool once it ended) or
    None."""

    def __init__(
        self,
        connect: Callable[[Machine], object],
        *,
        opened: Callable[[Connection], paramiko.Channel | None] | None = None,
        opened_every: float | None = None,
        max_channels: int = MAX_CHANNELS,
        channel_timeout: float = 10.0,
        idle_timeout: float = IDLE_TIMEOUT,
        keepalive: float = KEEPALIVE,
        keepalive_count: int = KEEPALIVE_COUNT,
    ):
        self._connect = connect
        self._opened = opened
        self.opened_every = opened_every
        self.max_channels = max_channels
        self.channel_timeout = channel_timeout
        self.idle_timeout = idle_timeout
        self.keepalive = max(0.1, float(keepalive))
        self.keepalive_count = max(1, int(keepalive_count))
        self._lock = threading.Lock()
        self._slots: dict[Hashable, _Slot] = {}
        self.connects = 0  # how many connections were opened (for tests and benchmarks)
        self._swept = time.monotonic()
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        # Bumped by every `close`: work begun before it (a connect ahead, the runners
        # `prepare` starts from a thread of its own) opens nothing after it.
        self.generation = 0

    @contextmanager
    def session(self, machine: Machine) -> Iterator[Session]:
        """A fresh channel to `machine`, closed afterwards. Raises a TransportError when no
        channel can be had; the command has then not been sent anywhere."""
        session = self.take(machine)
        try:
            yield session
        finally:
            self.give_back(machine, session)

    def take(self, machine: Machine, generation: int | None = None) -> Session:
        """A fresh channel to `machine`, to be handed back with `give_back` (closed) or
        `drain` (closed once its command ended). Raises a TransportError when no channel
        can be had; the command has then not been sent anywhere. With `generation` (the
        pool's when the caller's work began), a pool closed since gives none."""
        return Session(*self._channel(machine, generation))

    def give_back(self, machine: Machine, session: Session) -> None:
        """Close the session's channel and free its place on the connection."""
        try:
            session.channel.close()
        except (paramiko.SSHException, EOFError, OSError):
            # The connection died under the channel: what the session got stands (a
            # result already read is the run's); the next caller reconnects.
            session.connection.broken = True
        self._release(machine, session.connection)

    def idle_runner(self, machine: Machine, wait: float = 0.0) -> Runner | None:
        """A runner of `machine` waiting for a run, taken for one; while runners are being
        started ahead of the runs (`warm`), up to `wait` seconds for one of them. None when
        there is none (runners found exited, or on a dead connection, are closed on the
        way; none of a slot the pool's `close` took, whose runners are told to quit)."""
        slot = self._slot(machine)
        gone: list[Runner] = []
        deadline = time.monotonic() + wait
        with slot.lock:
            found = None
            while not slot.closed:
                for connection in slot.connections:
                    while connection.idle and found is None:
                        runner = connection.idle.pop()
                        if runner.usable:
                            found = runner
                            connection.last_used = time.monotonic()
                        else:
                            gone.append(runner)
                if found is not None or slot.starting <= 0:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                slot.changed.wait(left)
        for runner in gone:
            self.give_back(machine, runner)
        return found

    def runner_started(
        self, machine: Machine, count: int = 1, generation: int | None = None
    ) -> None:
        """`count` of the runners `warm` was asked to start are started (idle), or never
        will be: the runs waiting for one look again. With `generation` (the pool's when the
        runners were asked for), nothing after a close since: those runners were the closed
        slot's, not the ones a later `warm` asked for."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            slot = self._slots.get(pool_key(machine))
        if slot is not None:
            self._started(slot, count)

    def _started(self, slot: _Slot, count: int) -> None:
        with slot.lock:
            slot.starting = max(0, slot.starting - count)
            slot.changed.notify_all()

    def give_back_runner(self, machine: Machine, runner: Runner) -> None:
        """Keep a runner that replied to its run for the next run of `machine`; one that is
        no longer usable is closed instead."""
        if not runner.usable or self._closing.is_set():
            self.give_back(machine, runner)
            return
        slot = self._slot(machine)
        with slot.lock:
            if runner.connection in slot.connections:
                runner.connection.idle.append(runner)
                runner.connection.last_used = runner.idle_since = time.monotonic()
                slot.changed.notify_all()
                return
        self.give_back(machine, runner)  # the pool was closed meanwhile

    def drain(self, machine: Machine, session: Session) -> None:
        """Hand back a channel whose command is about to end by itself (the wrapper was
        acknowledged): it keeps its place on the connection until it ended, then is closed
        (by the next caller that looks for a channel, or by `close`)."""
        slot = self._slot(machine)
        with slot.lock:
            session.connection.draining.append(session.channel)
        self._reap_drained(slot)

    def _channel(
        self, machine: Machine, generation: int | None = None
    ) -> tuple[Connection, paramiko.Channel]:
        # A pooled connection may have died since its last use without our noticing (the
        # peer restarted): nothing was sent on it yet, so one fresh connection is tried. A
        # refused channel (the server's session limit) lowered that connection's capacity:
        # the next try gets a channel elsewhere, on a new connection if need be.
        failures = refusals = 0
        while True:
            connection = self._acquire(machine, generation)
            try:
                return connection, connection.open_channel(self.channel_timeout)
            except paramiko.ChannelException as exc:
                self._release(machine, connection, learned=connection.capacity)
                refusals += 1
                if refusals <= 2 * self.max_channels:  # each lowered a capacity: bounded
                    continue
                raise Unreachable(
                    f"machine '{machine.name}' is unreachable: it refuses every channel: {exc}"
                ) from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._release(machine, connection)
                failures += 1
                if failures == 2:
                    raise Unreachable(
                        f"machine '{machine.name}' is unreachable: cannot open a "
                        f"channel: "
                        f"{exc or type(exc).__name__}"
                    ) from exc

    def _acquire(self, machine: Machine, generation: int | None = None) -> Connection:
        """A live connection with a free channel, connecting when there is none (after
        waiting a little for an acknowledged channel to end, when one is on its way); none
        for work begun before the pool was closed (`generation`)."""
        slot = self._slot(machine)
        patience = time.monotonic() + DRAIN_WAIT
        while True:
            if slot.closed or (generation is not None and generation != self.generation):
                raise _closed(machine)
            self._reap_drained(slot)
            with slot.lock:
                self._drop_dead(slot)
                # A dead one other channels still hold stays listed until they let go: never
                # hand it out again (the retry in `_channel` would fail on it once more).
                for connection in slot.connections:
                    limit = min(self.max_channels, connection.capacity)
                    if connection.alive and connection.in_use < limit:
                        connection.in_use += 1
                        connection.last_used = time.monotonic()
                        return connection
                # Every place taken, some by idle runners: one of them gives its place up,
                # within a round trip (its channel drains like an acknowledged one).
                for connection in slot.connections:
                    if connection.alive and connection.idle:
                        connection.let_go_idle(connection.idle[0])
                        break
                # An acknowledged channel frees its place within a round trip: wait for it
                # (a while) rather than open a connection for one command.
                ending = None
                if time.monotonic() < patience:
                    ending = next(
                        (c.draining[0] for c in slot.connections if c.alive and c.draining),
                        None,
                    )
                if ending is None:
                    pending, mine = slot.connecting, slot.connecting is None
                    if mine:
                        pending = slot.connecting = Future()
            if ending is not None:
                ending.status_event.wait(max(0.0, patience - time.monotonic()))
                continue
            if mine:
                self._open(machine, slot, pending)
            pending.result()  # re-raises the connect error to every waiter

    def _reap_drained(self, slot: _Slot) -> None:
        """Close the acknowledged channels whose command ended, freeing their places (under
        the slot's lock, so no caller sees a place neither draining nor free)."""
        with slot.lock:
            for connection in slot.connections:
                if not connection.draining:
                    continue
                # Judged once per channel: paramiko's thread sets the events meanwhile.
                done = [c for c in connection.draining if c.status_event.is_set()]
                if not done:
                    continue
                connection.draining = [c for c in connection.draining if c not in done]
                for channel in done:
                    try:
                        channel.close()
                    except (paramiko.SSHException, EOFError, OSError):
                        connection.broken = True
                    connection.in_use -= 1
                connection.last_used = time.monotonic()
            self._drop_dead(slot)

    def warm(
        self, machine: Machine, then: Callable[[], None] | None = None, runners: int = 0
    ) -> None:
        """Start connecting to `machine` in a thread of its own, unless a connection is open
        or on its way: the runs that come meanwhile wait for it as for any connect (and get
        its error); a failure is not kept, so the next run tries again. Once connected, that
        thread calls `then` (when given), which starts `runners` runners, each reported with
        `runner_started` (the runs wait for them rather than start their own). Returns at
        once."""
        slot = self._slot(machine)
        with slot.lock:
            self._drop_dead(slot)
            if slot.connecting is not None or any(c.alive for c in slot.connections):
                return
            pending = slot.connecting = Future()
            slot.starting += runners

        def connect() -> None:
            self._open(machine, slot, pending)
            if pending.exception() is not None:
                self._started(slot, runners)  # none will be (of this slot: not a later one's)
            elif then is not None:
                then()

        threading.Thread(target=connect, name="ssh-connect", daemon=True).start()

    def _open(self, machine: Machine, slot: _Slot, pending: Future) -> None:
        """Connect for `slot` and hand the result to `pending`'s waiters. A connection made
        for a slot the pool's `close` took meanwhile is closed at once, and its waiters get
        a TransportError: nothing would use it, and nothing would close it."""
        connection = None
        try:
            connection = Connection(self._connect(machine))
            if slot.closed:  # read again below, under the lock, before the slot takes it
                raise _closed(machine)
            connection.capacity = slot.capacity
            if self._opened is not None and (channel := self._opened(connection)) is not None:
                connection.hand_over(channel)  # not shared yet: no lock needed
            with slot.lock:
                if slot.closed:
                    raise _closed(machine)
                slot.connections.append(connection)
                slot.connecting = None
                self.connects += 1
        except BaseException as exc:
            if connection is not None:  # never the slot's: no one else would close it
                connection.close()
            with slot.lock:
                slot.connecting = None
            pending.set_exception(exc)
            return
        self._start_watchdog()
        pending.set_result(connection)

    def _start_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is not None and self._watchdog.is_alive():
                return
            self._closing.clear()
            self._watchdog = threading.Thread(target=self._watch, name="ssh-watchdog", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        """Tick a few times per keepalive interval: probe every connection, close the dead,
        and the idle (a pool that outlives its passes, the daemon's, may see no channel given
        back for a long while: its idle connections would be kept until then)."""
        tick = min(1.0, self.keepalive / 4)
        while not self._closing.wait(tick):
            with self._lock:
                slots = list(self._slots.values())
            for slot in slots:
                with slot.lock:
                    connections = list(slot.connections)
                for connection in connections:
                    connection.watch(time.monotonic(), self.keepalive, self.keepalive_count)
                    self._open_again(slot, connection)
            self._close_idle()

    def _open_again(self, slot: _Slot, connection: Connection) -> None:
        """Call `opened` again for a connection open `opened_every` seconds since it last
        ran (on a thread of its own: the watchdog does no I/O that could stall it)."""
        if self._opened is None or self.opened_every is None or not connection.alive:
            return
        now = time.monotonic()
        if now - connection.opened_at < self.opened_every:
            return
        connection.opened_at = now

        def again() -> None:
            channel = self._opened(connection)
            if channel is not None:
                with slot.lock:  # shared: every count of a place is made under the lock
                    connection.hand_over(channel)

        threading.Thread(target=again, name="ssh-opened", daemon=True).start()

    def _release(
        self, machine: Machine, connection: Connection, learned: int | None = None
    ) -> None:
        slot = self._slot(machine)
        with slot.lock:
            if learned is not None:  # the server's session limit, for the next connections
                slot.capacity = min(slot.capacity, learned)
            connection.in_use -= 1
            connection.last_used = time.monotonic()
            self._drop_dead(slot)
        self._close_idle()

    def _drop_dead(self, slot: _Slot) -> None:
        """Close and forget connections that died and that no channel uses any more."""
        for connection in [c for c in slot.connections if not c.alive]:
            connection.in_use -= len(connection.idle)  # runners on it are gone with it
            connection.idle.clear()
            if connection.in_use == 0:
                slot.connections.remove(connection)
                connection.close()

    def _close_idle(self) -> None:
        """Close connections unused for `idle_timeout` (looked for at most every 10 s), and
        on the others the runners that waited that long for a run: a connection in use (the
        daemon's, from pass to pass) would keep for ever every runner a burst of runs, or a
        `max_parallel` since lowered, once started. The next run takes the runner given back
        last, so the others are the ones left idle."""
        now = time.monotonic()
        with self._lock:
            if now - self._swept < min(10.0, self.idle_timeout):
                return
            self._swept = now
            slots = list(self._slots.values())
        for slot in slots:
            self._reap_drained(slot)  # an ended command's channel (the markers' cleanup)
            with slot.lock:
                for connection in list(slot.connections):
                    unused = connection.in_use == len(connection.idle)
                    if unused and now - connection.last_used > self.idle_timeout:
                        slot.connections.remove(connection)
                        connection.close()
                        continue
                    for runner in [
                        r for r in connection.idle if now - r.idle_since > self.idle_timeout
                    ]:
                        connection.let_go_idle(runner)

    def _slot(self, machine: Machine) -> _Slot:
        key = pool_key(machine)
        slot = self._slots.get(key)  # an atomic read: a slot is only ever added (or all, by close)
        if slot is not None:
            return slot
        with self._lock:
            return self._slots.setdefault(key, _Slot())

    def close(self) -> None:
        """Close every connection, once the acknowledged commands ended (at most
        `CLOSE_WAIT` s: each empties its output on the target as it exits); the pool may be
        used again afterwards. What began before it and waits (a connect on its way, the
        runners `warm` starts, a caller waiting for either or for a place) opens nothing after
        it: a connection it makes is closed, and the caller gets a TransportError."""
        self._closing.set()
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
            self.generation += 1
        for slot in slots:
            with slot.lock:  # no connection is added to it from now on
                slot.closed = True
                slot.starting = 0  # the runs waiting for runners ahead stop waiting
                slot.changed.notify_all()
        deadline = time.monotonic() + CLOSE_WAIT
        for slot in slots:
            with slot.lock:
                runners = [r for c in slot.connections for r in c.idle]
            for runner in runners:  # each exits once it read the acknowledgements before
                runner.quit()
            with slot.lock:
                ending = [ch for c in slot.connections for ch in c.draining]
                ending += [r.channel for r in runners]
            for channel in ending:
                channel.status_event.wait(max(0.0, deadline - time.monotonic()))
        for slot in slots:
            with slot.lock:
                for connection in slot.connections:
                    connection.close()
                slot.connections.clear()


def pool_key(machine: Machine) -> Hashable:
    """What makes two machines share a connection: everything the connect depends on, so
    an inventory change (a new host key, another user) opens a new connection."""
    return (
        machine.name,
        machine.host,
        machine.port,
        machine.user,
        machine.host_key,
        machine.key,
        machine.key_file,
    )


def _closed(machine: Machine) -> TransportError:
    """What a caller whose work began before the pool's `close` gets instead of a channel
    (nothing was sent)."""
    return TransportError(
        f"machine '{machine.name}': the connections were closed (the transport was closed "
        "before this could start); nothing was sent"
    )
