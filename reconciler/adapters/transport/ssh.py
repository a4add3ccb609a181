"""The `ssh` transport: tasks on remote machines, over paramiko (DESIGN §6).

Safe by default:
- only the inventory's `host_key` is trusted (`hostkeys`): RejectPolicy, no known_hosts, the
  key algorithms limited to the pinned types; a mismatch fails before authentication;
- the client key comes from the team vault (in memory, never on disk), a `key_file`, or the
  ssh-agent; never from ~/.ssh/id_* (`look_for_keys` is off);
- the environment and secrets travel over the channel's stdin to a small sh wrapper
  (`wrapper`): never Fabric's `env=`, which inlines `export K=V` into the remote argv;
- a timeout kills the remote process group; a lost connection is `ConnectionLost`, not a
  failure of the command.

Fast: one connection per machine (`pool`), TCP_NODELAY, runs sent to runners that stay on
their channels (`wrapper.RUNNER`: sshd's session and the login shell paid once per channel, not
per run; one channel per run where the target cannot keep one), and the channel taken straight
from the paramiko transport: Fabric's `run()` costs ~15 ms per command in invoke's I/O loop, more
than a whole command on a LAN (DESIGN §6). paramiko's own client opens the connection (Fabric
would add ~0.1 s of imports to every pass and nothing the transport uses).

Failure classes (errors.py, DESIGN §4): Unreachable (retryable) when the machine cannot be
reached or the connection failed before the command was sent; AuthFailed and
HostKeyMismatch (never retried); ConnectionLost once the command may have started.
"""

from __future__ import annotations

import getpass
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from reconciler.adapters import failpoints
from reconciler.adapters.transport import hostkeys, wrapper
from reconciler.adapters.transport.base import STILL_RUNNING, Completed, RunControl, Transport
from reconciler.adapters.transport.pool import (
    MAX_CHANNELS,
    Connection,
    ConnectionPool,
    Runner,
    Session,
    no_eof,
    send_last,
)
from reconciler.adapters.transport.probe import PROBE_COMMAND, Load, parse_probe
from reconciler.adapters.transport.sshlib import paramiko
from reconciler.core.errors import (
    AuthFailed,
    ConnectionLost,
    ReconcilerError,
    TransportError,
    Unreachable,
)
from reconciler.core.model import Machine
from reconciler.core.output import MARK, TailBuffer, split_mark_bytes, tail_text
from reconciler.core.redact import Secret, reveal

log = logging.getLogger(__name__)

KEEPALIVE = 10  # seconds between liveness probes on a connection (`ssh_keepalive`)
KEEPALIVE_COUNT = 3  # probe intervals without any answer before it is dead (~30 s)
DRAIN = 10.0  # after the exit status, how long the rest of the output may take to arrive
CTL_TIMEOUT = 30.0  # reading or killing a run's markers
# How often the output file of a running task is read, from its first second on, for
# followers (issue 16 §1); a run that ends sooner is never read this way.
READ_SECONDS = 1.0
# How often a connection that stays open (the daemon's, kept from pass to pass) removes the
# day-old markers again; a new one does at once.
CLEAN_EVERY = 3600.0


KeyResolver = Callable[[Machine], "Secret | None"]


@dataclass(frozen=True)
class _Held:
    """A run whose output waits on the target for its acknowledgement: its wrapper waits on
    its channel, or its runner (a `Runner` session) keeps it until told."""

    machine: Machine
    session: Session
    token: str  # the invocation's, which acknowledges its output
    run_id: int


@dataclass(frozen=True)
class _Kept:
    """A run whose output was read from its markers (adopted, or a timed-out run stopped)
    and stays on the target until `settle` says its result is recorded."""

    machine: Machine
    nonce: str


class SshTransport(Transport):
    """Runs commands on `transport: ssh` machines; thread-safe, one connection per machine.

    `resolve_key(machine)` returns the machine's `key: {vault: NAME}` private key text as a
    `Secret` (None when the machine has no `key`: then its `key_file`, else the ssh-agent).
    `markers_dir` is where the wrapper keeps run markers on the target (`~/` = remote home).
    With `runners` (the default) runs go to runners kept on their channels where the target
    can run one; without, every run gets a channel of its own.
    With `hold_outputs` a run's output stays on the target until `settle` says the run's end
    is recorded (the engine does, after each end batch): a reconciler killed in between
    leaves every output for the next pass to adopt. The same holds for an output read from a
    run's markers (`reap`, and the stop of a timed-out run): it is removed only by `settle`.
    Without it (a caller that never settles) each output is acknowledged, or removed, as soon
    as it was read.
    """

    def __init__(
        self,
        resolve_key: KeyResolver = lambda machine: None,
        markers_dir: str = wrapper.DEFAULT_MARKERS,
        connect_timeout: float = 10,
        max_channels: int = MAX_CHANNELS,
        keepalive: float = KEEPALIVE,
        keepalive_count: int = KEEPALIVE_COUNT,
        hold_outputs: bool = False,
        runners: bool = True,
    ):
        self.resolve_key = resolve_key
        self.hold_outputs = hold_outputs
        self.runners = runners  # False: one channel per run, everywhere
        self._held: dict[int, _Held] = {}  # runs whose output waits for `settle`, by id
        self._kept: dict[int, _Kept] = {}  # outputs read from markers, waiting for `settle`
        self._lock = threading.Lock()
        self.markers = markers_dir
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.keepalive_count = keepalive_count
        self.pool = ConnectionPool(
            self._connect,
            opened=self._clean_markers,
            opened_every=CLEAN_EVERY,
            max_channels=max_channels,
            channel_timeout=connect_timeout,
            keepalive=keepalive,
            keepalive_count=keepalive_count,
        )

    # ------------------------------------------------------------------ the port

    def run(
        self,
        machine: Machine,
        command: str,
        env: Mapping[str, str | Secret],
        timeout: float,
        run_id: int,
        control: RunControl | None = None,
        key: str = "",
    ) -> Completed:
        """Run `command` with `sh -c` on `machine` through the wrapper. A non-zero exit is a
        `Completed`; raises Unreachable/AuthFailed/HostKeyMismatch before the command was
        sent, ConnectionLost after. With `control`, the task's output file is read once a
        second while it runs (a second channel) and a kill stops its process group on the
        target."""
        started = time.monotonic()
        plain = {name: reveal(value) for name, value in env.items()}
        call = wrapper.invocation(self.markers, run_id, command, plain, key)
        # A run's check and its command share the run id: the check's wrapper is let go
        # (its output is not the run's, and the command's markers replace its own).
        self._let_go([run_id])
        with self._lock:
            self._kept.pop(run_id, None)  # an earlier attempt's output: the day-old cleanup's
        session = self._session_for_run(machine)
        runner = session if isinstance(session, Runner) else None
        held = reusable = False
        try:
            if runner is not None:
                done, held, reusable = self._run_on_runner(
                    machine, runner, call, run_id, started, timeout, control
                )
            else:
                done, held = self._run_on(machine, session, call, run_id, started, timeout, control)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # Whatever paramiko or the socket raised past the command's dispatch: the
            # connection failed under the run (never an internal error of the pass).
            raise _lost(machine, exc, session.connection) from exc
        finally:
            if control is not None:
                control.detach()
            if reusable:
                self.pool.give_back_runner(machine, session)
            elif runner is not None or not held:  # a held wrapper keeps its channel: `settle`
                self.pool.give_back(machine, session)
        if held:
            with self._lock:
                self._held[run_id] = _Held(machine, session, call.token, run_id)
        return done

    def _session_for_run(self, machine: Machine) -> Session:
        """A runner of `machine` waiting for a run, a new one, or (where the target cannot
        keep one, or without `runners`) a channel for this run alone. Raises a
        TransportError when none can be had (the pool was closed meanwhile, among others):
        nothing was sent."""
        since = self.pool.generation  # a close from now on ends the wait, and opens nothing
        if self.runners:
            # A runner started ahead of the runs (`prepare`) is waited for, not doubled.
            idle = self.pool.idle_runner(machine, wait=self.connect_timeout)
            if idle is not None:
                return idle
        session = self.pool.take(machine, since)
        if not self.runners or session.connection.runs_runners is False:
            return session
        return self._start_runner(machine, session)

    def _start_runner(self, machine: Machine, session: Session) -> Session:
        """Start a runner on the session's fresh channel; where the target says it cannot
        keep one (or its login shell cannot start bash), note it for the connection and hand
        back a fresh channel in the same place, for a run of its own."""
        channel = session.channel
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(wrapper.runner_line(self.markers))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.pool.give_back(machine, session)
            raise Unreachable(
                f"machine '{machine.name}': the command could not be started: "
                f"{exc or type(exc).__name__}"
            ) from exc
        deadline = time.monotonic() + self.connect_timeout
        hello = _read_hello(channel, deadline)
        if hello.endswith(wrapper.RUNNER_READY):
            session.connection.runs_runners = True
            return Runner(session.connection, channel)
        # No runner was started: no run was sent. The shell that could not start bash ended
        # (its exit status follows the end of its output).
        unable = hello.endswith(wrapper.RUNNER_UNABLE) or _wait_status(channel, deadline)
        if not unable:
            self.pool.give_back(machine, session)
            raise Unreachable(f"machine '{machine.name}': no answer from the shell started")
        session.connection.runs_runners = False
        log.info("machine %s cannot keep a runner: one channel per run", machine.name)
        no_eof(channel)
        try:
            channel.close()
            session.channel = session.connection.open_channel(self.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.pool.give_back(machine, session)
            raise Unreachable(
                f"machine '{machine.name}' is unreachable: cannot open a channel: "
                f"{exc or type(exc).__name__}"
            ) from exc
        return session

    def _run_on_runner(
        self,
        machine: Machine,
        runner: Runner,
        call: wrapper.Invocation,
        run_id: int,
        started: float,
        timeout: float,
        control: RunControl | None = None,
    ) -> tuple[Completed, bool, bool]:
        """`run` on a runner: send the run, read its reply on the runner's channel. Returns
        the result, whether its output waits for `settle` (held), and whether the runner may
        take the next run (it replied; a runner that did not is closed)."""
        if control is not None and control.killed:
            # Killed while waiting for a runner: the command never starts.
            return Completed(None, "", time.monotonic() - started), False, True
        try:
            runner.send(call.request)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _lost(machine, exc, runner.connection) from exc
        follow = self._follow(machine, run_id, call, started, control)
        received, done, dropped = _replied(runner.channel, call.token, started, timeout, follow)
        if done is not None:
            if self.hold_outputs:
                return done, True, True
            try:
                runner.send(wrapper.acknowledged(run_id, call.token))
            except (paramiko.SSHException, EOFError, OSError):
                return done, False, False  # the output stays, for the day-old cleanup
            return done, False, True
        channel = runner.channel
        ended = _wait_status(channel, started + timeout)  # EOF comes before the exit status
        if ended and channel.exit_status in (wrapper.INPUT_CUT, wrapper.NO_MARKERS):
            done = self._finished(runner, started, received, dropped)  # it started nothing
        else:
            # Timed out, or the runner's channel ended without a reply: the connection died,
            # or the runner was killed. The markers know what became of the run.
            grace = control.grace if control is not None else None
            done = self._stopped(machine, runner, run_id, call.nonce, started, not ended, grace)
        if follow is not None:
            follow.finish(done.output.encode("utf-8", "replace"))
        return done, False, False

    def _run_on(
        self,
        machine: Machine,
        session: Session,
        call: wrapper.Invocation,
        run_id: int,
        started: float,
        timeout: float,
        control: RunControl | None = None,
    ) -> tuple[Completed, bool]:
        """`run` on a session's channel: dispatch, read the reply on the same channel. True
        with the result when the wrapper waits for the acknowledgement of its output (held
        until `settle`)."""
        if control is not None and control.killed:
            # Killed while the connection was being set up: the command never starts (a kill
            # attached only after the dispatch would let it start, then race its markers).
            return Completed(exit_code=None, output="", duration=time.monotonic() - started), False
        self._dispatch(machine, session, call)
        follow = self._follow(machine, run_id, call, started, control)
        received, done, dropped = _replied(session.channel, call.token, started, timeout, follow)
        if done is not None:
            if self.hold_outputs:
                return done, True
            _acknowledge(session.channel, call.token)
            return done, False
        ended = _wait_status(session.channel, started + timeout)
        if ended and session.channel.exit_status >= 0:  # the wrapper itself gave up
            done = self._finished(session, started, received, dropped)
        else:
            # Timed out, or the channel closed without an exit status: the connection died
            # (paramiko closes its channels before it marks the transport inactive, so only
            # a new channel tells), sshd sent `exit-signal`, or a kill stopped it. The
            # markers know which.
            grace = control.grace if control is not None else None
            done = self._stopped(machine, session, run_id, call.nonce, started, not ended, grace)
        if follow is not None:
            follow.finish(done.output.encode("utf-8", "replace"))
        return done, False

    def _follow(
        self,
        machine: Machine,
        run_id: int,
        call: wrapper.Invocation,
        started: float,
        control: RunControl | None,
    ) -> _RemoteOutput | None:
        """With `control`, the run's output followed while it runs, and a kill of it wired to
        its process group on the target; None without."""
        if control is None:
            return None
        control.attach(lambda grace: self._stop_remote(machine, run_id, call.nonce, grace))
        return _RemoteOutput(self, machine, run_id, call.nonce, control, started)

    def settle(self, recorded: Collection[int], unrecorded: Collection[int] = ()) -> None:
        """The ends of the `recorded` runs are durable: acknowledge their outputs (each
        wrapper then empties its output file and exits; its channel is freed when it did).
        The `unrecorded` runs ended but their ends were not written: their wrappers are let
        go without an acknowledgement, so their outputs stay on the target for a later pass
        to adopt (and go with the day-old markers)."""
        with self._lock:
            if not self._held and not self._kept:
                return
            settled = [self._held.pop(i) for i in recorded if i in self._held]
            read = [(i, self._kept.pop(i)) for i in recorded if i in self._kept]
            for run_id in unrecorded:
                self._kept.pop(run_id, None)  # stays on the target, for a later pass
        for held in settled:
            self._answer(held, recorded=True)
        self._let_go(unrecorded)
        for run_id, kept in read:
            self._forget(kept.machine, run_id, kept.nonce)

    def _forget(self, machine: Machine, run_id: int, nonce: str) -> None:
        """Remove the output file of run `run_id`'s invocation `nonce` (not a later one's)
        from the target, on a pooled channel; a failure leaves it to the day-old cleanup."""
        try:
            with self.pool.session(machine) as session:
                self._ctl(machine, session, run_id, "forget", nonce)
        except (TransportError, paramiko.SSHException, EOFError, OSError) as exc:
            log.debug("run %s: its output stays on %s: %s", run_id, machine.name, exc)

    def _let_go(self, run_ids: Iterable[int]) -> None:
        """Let the wrappers of held runs exit without their acknowledgement: each keeps its
        output on the target."""
        with self._lock:
            if not self._held:
                return
            let_go = [self._held.pop(i) for i in run_ids if i in self._held]
        for held in let_go:
            self._answer(held, recorded=False)

    def _answer(self, held: _Held, recorded: bool) -> None:
        """Tell a held output's keeper whether the run's end was recorded (then the output
        goes) or not (it stays). A runner reads it before its next run; a wrapper exits on
        it, and its channel keeps its place on the connection until it did (sshd counts the
        session until then). A lost answer leaves the output to the day-old cleanup."""
        if isinstance(held.session, Runner):
            answer = (
                wrapper.acknowledged(held.run_id, held.token)
                if recorded
                else wrapper.let_go(held.run_id)
            )
            try:
                held.session.send(answer)
            except (paramiko.SSHException, EOFError, OSError):
                pass
            return
        line = wrapper.acknowledgement(held.token) if recorded else wrapper.REFUSAL
        try:
            send_last(held.session.channel, line)
        except (paramiko.SSHException, EOFError, OSError):
            # The connection is gone: the wrapper exits without an answer, keeping its
            # output (removed with the day-old markers, or adopted).
            self.pool.give_back(held.machine, held.session)
            return
        self.pool.drain(held.machine, held.session)

    def reap(
        self,
        machine: Machine,
        run_id: int,
        *,
        attempt: int | None = None,
        command: str | None = None,
        stop: bool = True,
        key: str | None = None,
    ) -> Completed | None:
        """Resolve a run found `running` after its reconciler died, from the target's markers.

        Returns the run's `Completed` (real exit code and output tail) when its wrapper wrote
        an exit marker — and, when given, for that `attempt` and that `command` (a run's check
        shares its id) — so it can be adopted instead of being left `unknown`. Otherwise None:
        a command still running was killed (its whole process group), or nothing is known.
        With `stop=False` a command still running is left alone: `STILL_RUNNING`. With `key`
        (the run's `run_key`) only a result kept for that key is adopted, never one another
        store's run of the same id left in the shared markers; without it the key is not
        checked. Raises a TransportError when the machine cannot be asked (leave the run
        `unknown`).
        """
        keep = self.hold_outputs  # the output stays until `settle` says it was recorded
        # With the run's key, markers another store's run of this id left (a shared account)
        # are not this run's: never stopped, read or removed. Markers of versions before run
        # keys hold the command's digest alone: still stopped (never adopted).
        digests = (wrapper.digest(command, key), wrapper.digest(command)) if command and key else ()
        with self.pool.session(machine) as session:
            try:
                action = "reap" if stop else "peek"
                marker = self._ctl(machine, session, run_id, action, keep=keep, digests=digests)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise _lost(machine, exc, session.connection) from exc
        failpoints.hit("after_reap")  # the output was read, not yet adopted
        if marker.state == "running":
            return STILL_RUNNING
        if marker.state != "exit":
            if keep and marker.state in ("killed", "gone"):  # nothing to adopt from it
                self._forget(machine, run_id, marker.nonce or "-")
            return None
        if attempt is not None and marker.attempt != attempt:
            return None
        if command is not None and marker.digest != wrapper.digest(command, key or ""):
            return None  # another command's, or another store's run of this id: left there
        if keep:
            with self._lock:
                self._kept[run_id] = _Kept(machine, marker.nonce or "-")
        return Completed(exit_code=marker.exit_code, output=marker.output, duration=0.0)

    def prepare(self, machines: Iterable[Machine], runs: Mapping[str, int] | None = None) -> None:
        """Open the connections to `machines` now, all at once, in the background, and start
        on each as many runners as it is about to run runs at once (`runs` by machine name, up
        to its `max_parallel`): a pass that calls this before its first dispatch overlaps the
        logins and the runners' start with its own work instead of making its first runs wait
        for them."""
        for machine in machines:
            wanted = 0
            if self.runners and runs:
                wanted = min(runs.get(machine.name, 0), machine.max_parallel)
                wanted = min(wanted, self.pool.max_channels - 1)  # a place left for a kill

            def start(
                machine: Machine = machine, count: int = wanted, since=self.pool.generation
            ) -> None:
                self._start_runners(machine, count, since)

            self.pool.warm(machine, then=start if wanted > 0 else None, runners=wanted)

    def _start_runners(self, machine: Machine, count: int, generation: int | None = None) -> None:
        """Start `count` runners on `machine` and leave them waiting for runs, each reported
        to the pool as it is (the runs wait for them); a failure stops it (the runs meet it
        again, and report it), and so does a close of the pool since `generation` (the runs
        ended first: no login again for runners nothing will use)."""
        left = count
        try:
            while left > 0:
                try:
                    session = self.pool.take(machine, generation)
                    if session.connection.runs_runners is not False:
                        session = self._start_runner(machine, session)
                except TransportError as exc:
                    log.debug("machine %s: no runner started ahead: %s", machine.name, exc)
                    return
                if not isinstance(session, Runner):
                    self.pool.give_back(machine, session)
                    return
                self.pool.give_back_runner(machine, session)
                left -= 1
                self.pool.runner_started(machine, generation=generation)
        finally:
            # Those never started; after a close, of the pool as it was (not a later pass's).
            self.pool.runner_started(machine, left, generation)

    def close(self) -> None:
        """Close every pooled connection, once the acknowledged wrappers emptied their
        outputs; the outputs of runs never settled stay on their targets."""
        with self._lock:
            held = list(self._held)
            self._kept.clear()
        self._let_go(held)
        self.pool.close()

    def release(self, run_ids: Iterable[int]) -> None:
        """What `close` does for the runs `run_ids` alone, the connections kept: the ones
        never settled are let go and their outputs stay on their targets (a pass that
        borrowed this transport ends, `kept.Borrowed`)."""
        run_ids = list(run_ids)
        with self._lock:
            for run_id in run_ids:
                self._kept.pop(run_id, None)
        self._let_go(run_ids)

    # ------------------------------------------------------------------ helpers for commands

    def query(self, machine: Machine, command: str, timeout: float = 10.0) -> Completed:
        """Run a read-only `command` over the pooled connection, without wrapper or markers
        (for `reconcile machines`): no env, no secrets, no process group handling."""
        started = time.monotonic()
        with self.pool.session(machine) as session:
            try:
                session.channel.set_combine_stderr(True)
                session.channel.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise Unreachable(f"machine '{machine.name}': {exc}") from exc
            if not _wait_status(session.channel, started + timeout):
                return Completed(None, _read_all(session.channel, 0.5), timeout, timed_out=True)
            output = _read_all(session.channel, DRAIN)
            if session.channel.exit_status < 0:
                raise Unreachable(f"machine '{machine.name}': connection lost")
            return Completed(session.channel.exit_status, output, time.monotonic() - started)

    def probe(self, machine: Machine, timeout: float = 10.0) -> Load:
        """Load average and memory of `machine`, read from its /proc over the pooled
        connection. Raises a TransportError when it cannot be reached."""
        done = self.query(machine, PROBE_COMMAND, timeout)
        if not done.ok:
            raise Unreachable(
                f"machine '{machine.name}': cannot read /proc "
                f"(exit {done.exit_code}): {done.output.strip()[:200]}"
            )
        return parse_probe(done.output)

    # ------------------------------------------------------------------ running

    def _dispatch(self, machine: Machine, session: Session, call: wrapper.Invocation) -> None:
        """Start the wrapper and hand it its input. Until the exec request was accepted the
        command cannot have started (Unreachable); once input is on its way it may have.
        Stdin stays open: the wrapper waits on it for the acknowledgement of its output.
        (Sending the input right behind the request, without waiting for its answer, would
        save nothing: sshd opens a session channel's window only once its exec is accepted,
        so the input waits for that answer either way.)"""
        channel = session.channel
        channel.set_combine_stderr(True)
        try:
            channel.exec_command(call.command_line)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise Unreachable(
                f"machine '{machine.name}': the command could not be started: "
                f"{exc or type(exc).__name__}"
            ) from exc
        try:
            channel.sendall(call.stdin)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _lost(machine, exc, session.connection) from exc

    def _finished(
        self, session: Session, started: float, received: bytes, dropped: int = 0
    ) -> Completed:
        """The result of a wrapper that reported its exit status without a trailer (it could
        not start the command): what it printed so far and the rest."""
        output = _tail(received + _read_all_bytes(session.channel, DRAIN), dropped)
        return Completed(
            exit_code=session.channel.exit_status,
            output=output,
            duration=time.monotonic() - started,
        )

    def _stopped(
        self,
        machine: Machine,
        session: Session,
        run_id: int,
        nonce: str,
        started: float,
        timed_out: bool,
        grace: float | None = None,
    ) -> Completed:
        """Ask the run's markers through a second channel, killing what is left of its
        process group (TERM, then KILL after `grace` seconds, by default 2). A command that
        ended meanwhile keeps its own result; no channel means the connection is gone:
        ConnectionLost."""
        try:
            channel = session.connection.open_channel(self.connect_timeout)
        except paramiko.ChannelException:
            # The server refused a channel beside the run's (its session limit), which says
            # the connection is alive: read the markers on a channel the pool finds elsewhere.
            marker = self._ctl_elsewhere(machine, session, run_id, nonce, grace)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _lost(machine, exc, session.connection) from exc
        else:
            marker = self._ctl_on(
                machine, channel, run_id, "kill", nonce, keep=self.hold_outputs, grace=grace
            )
        if self.hold_outputs and marker.state != "none":
            with self._lock:  # the output stays until the run's end is recorded (`settle`)
                self._kept[run_id] = _Kept(machine, nonce)
        duration = time.monotonic() - started
        if marker.state == "exit":
            return Completed(marker.exit_code, marker.output, duration)
        if timed_out:
            return Completed(None, marker.output, duration, timed_out=True)
        # The wrapper itself was killed by a signal (paramiko does not parse exit-signal).
        return Completed(
            255,
            marker.output + "\n[reconciler: the remote command was killed by a signal]\n",
            duration,
        )

    def _ctl_elsewhere(
        self, machine: Machine, session: Session, run_id: int, nonce: str, grace=None
    ) -> wrapper.Marker:
        """`kill` run `run_id` through another pooled channel; its command was sent, so any
        failure to get one leaves the outcome unknown (ConnectionLost)."""
        try:
            with self.pool.session(machine) as other:
                return self._ctl(
                    machine, other, run_id, "kill", nonce, keep=self.hold_outputs, grace=grace
                )
        except ConnectionLost:
            raise
        except TransportError as exc:
            raise _lost(machine, exc, session.connection) from exc

    def _ctl(
        self,
        machine: Machine,
        session: Session,
        run_id: int,
        action: str,
        nonce: str = "-",
        *,
        keep: bool = False,
        grace: float | None = None,
        digests: Collection[str] = (),
    ) -> wrapper.Marker:
        return self._ctl_on(
            machine, session.channel, run_id, action, nonce, keep=keep, grace=grace, digests=digests
        )

    def _ctl_on(
        self,
        machine: Machine,
        channel: paramiko.Channel,
        run_id: int,
        action: str,
        nonce: str,
        *,
        keep: bool = False,
        grace: float | None = None,
        digests: Collection[str] = (),
    ) -> wrapper.Marker:
        """Run the marker script (`reap`, `kill`, `peek`, `forget`) for `run_id` on `channel`;
        with `keep` the output it prints stays on the target (until a `forget`); with
        `digests`, only markers holding one of them are the run's."""
        started = time.monotonic()
        line = wrapper.ctl_line(
            self.markers, run_id, action, nonce, keep=keep, grace=grace, digests=digests
        )
        try:
            channel.exec_command(line)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _lost(machine, exc) from exc
        no_eof(channel)  # the script reads nothing (stdin is /dev/null)
        try:
            budget = CTL_TIMEOUT + (grace or 0)
            if not _wait_status(channel, started + budget) or channel.exit_status < 0:
                raise _lost(machine, None)
            output = _read_all_bytes(channel, DRAIN)
        finally:
            try:
                channel.close()
            except (paramiko.SSHException, EOFError, OSError):
                pass  # the markers were read, or the failure above says why not
        if channel.exit_status != 0:
            raise TransportError(
                f"machine '{machine.name}': reading the markers of run {run_id} "
                f"failed (exit {channel.exit_status}): "
                f"{output.decode('utf-8', 'replace').strip()[:200]}"
            )
        return wrapper.parse_ctl(output)

    def _stop_remote(self, machine: Machine, run_id: int, nonce: str, grace: float) -> None:
        """A kill request (issue 16 §2): TERM the process group of run `run_id`'s invocation
        `nonce` on its target, KILL it after `grace` seconds, on a channel of its own. The
        output stays for the run's own thread, which then finds its wrapper gone and reads
        the markers (`_stopped`)."""
        try:
            with self.pool.session(machine) as session:
                self._ctl(machine, session, run_id, "kill", nonce, keep=True, grace=grace)
        except (TransportError, paramiko.SSHException, EOFError, OSError) as exc:
            log.warning("run %s: could not stop it on %s: %s", run_id, machine.name, exc)

    def _read_output(self, machine: Machine, run_id: int, nonce: str, offset: int) -> bytes:
        """What run `run_id`'s invocation `nonce` wrote from byte `offset` on (`READ`'s raw
        output), on a pooled channel."""
        with self.pool.session(machine) as session:
            channel = session.channel
            started = time.monotonic()
            try:
                channel.exec_command(wrapper.read_line(self.markers, run_id, nonce, offset))
                no_eof(channel)  # the script reads nothing (stdin is /dev/null)
                if not _wait_status(channel, started + CTL_TIMEOUT):
                    return b""
                return _read_all_bytes(channel, DRAIN)
            finally:
                try:
                    channel.close()
                except (paramiko.SSHException, EOFError, OSError):
                    pass

    # ------------------------------------------------------------------ connecting

    def _connect(self, machine: Machine) -> paramiko.SSHClient:
        """An open, host-key-verified, authenticated client connected to `machine`."""
        if not machine.host:
            raise Unreachable(f"machine '{machine.name}' has no host")
        keys = hostkeys.pinned(machine)  # before any network I/O: no pin, no connection
        auth = self._auth(machine)
        try:
            sock = hostkeys.open_socket(machine.host, machine.port, self.connect_timeout)
        except Unreachable as exc:
            raise Unreachable(f"machine '{machine.name}': {exc}") from exc
        sock = _BufferedSocket(sock)
        client = paramiko.SSHClient()
        # Trust only the pins: no known_hosts file is read, and an unknown key is refused.
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        hostkeys.pin(client.get_host_keys(), keys)
        try:
            client.connect(
                machine.host,
                port=machine.port,
                username=machine.user or getpass.getuser(),
                sock=sock,
                timeout=self.connect_timeout,
                look_for_keys=False,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                disabled_algorithms={
                    "keys": hostkeys.disabled_host_key_algorithms(hostkeys.pinned_types(machine))
                },
                transport_factory=_Transport,
                **auth,
            )
        except BaseException as exc:
            # paramiko's thread must stop before the socket goes, or it logs a spurious
            # "Bad file descriptor".
            client.close()
            sock.close()
            raise self._connect_error(machine, exc) from exc
        return client

    def _auth(self, machine: Machine) -> dict:
        """paramiko's authentication arguments: the vault key, the key file, or the agent."""
        try:
            secret = self.resolve_key(machine) if machine.key is not None else None
        except ReconcilerError as exc:  # the vault cannot be read: retrying will not help
            raise AuthFailed(f"machine '{machine.name}': cannot read its key: {exc}") from exc
        if machine.key is not None and secret is None:
            raise AuthFailed(
                f"machine '{machine.name}': its key {{vault: {machine.key.name}}} "
                "could not be resolved"
            )
        if secret is not None:
            return {"pkey": load_private_key(reveal(secret), machine.name), "allow_agent": False}
        if machine.key_file:
            return {"pkey": _key_from_file(machine), "allow_agent": False}
        return {"allow_agent": True}

    def _connect_error(self, machine: Machine, exc: BaseException) -> BaseException:
        """Translate what `open()` raised into the reconciler's error tree (DESIGN §4)."""
        where = f"machine '{machine.name}' ({hostkeys.target(machine)})"
        if isinstance(exc, paramiko.BadHostKeyException):
            return hostkeys.mismatch(machine, exc.key)
        if isinstance(exc, paramiko.ssh_exception.IncompatiblePeer) and "host key" in str(exc):
            return hostkeys.mismatch(machine, None, _offered(machine, self.connect_timeout))
        if isinstance(exc, paramiko.AuthenticationException) or (
            isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc)
        ):
            return AuthFailed(
                f"{where}: authentication as "
                f"{machine.user or getpass.getuser()} failed ({exc}); check that "
                "the machine's authorized_keys holds the reconciler's public key"
            )
        if isinstance(exc, (paramiko.SSHException, EOFError, OSError, socket.timeout)):
            return Unreachable(
                f"{where} is unreachable: the SSH connection failed: {exc or type(exc).__name__}"
            )
        return exc

    def _clean_markers(self, connection: Connection) -> paramiko.Channel | None:
        """Opportunistically remove day-old markers when a connection opened, and every
        `CLEAN_EVERY` while it stays open, errors ignored. Not waited for: the channel is
        handed to the pool, which closes it once `find` ended (so the first runs do not wait
        for it)."""
        try:
            channel = connection.transport.open_session(timeout=self.connect_timeout)
            channel.exec_command(wrapper.clean_line(self.markers))
        except (paramiko.SSHException, EOFError, OSError):
            return None
        no_eof(channel)  # the script reads nothing (stdin is /dev/null)
        return channel


class _RemoteOutput:
    """The output of a task running on a target, for its `RunControl` (issue 16 §1): its
    output file is read once a second from its first second on (where the last read ended),
    and when it ended the rest comes from its final output, so the control sees every byte
    once, in order (a stretch skipped because more than 64 KiB came within a second shows as
    an output mark)."""

    def __init__(
        self,
        transport: SshTransport,
        machine: Machine,
        run_id: int,
        nonce: str,
        control: RunControl,
        started: float,
    ):
        self.transport, self.machine, self.run_id, self.nonce = transport, machine, run_id, nonce
        self.control = control
        self.offset = 0  # bytes of the output file handed over so far
        self.next_at = started + READ_SECONDS

    def due(self) -> float:
        """Seconds until the next read."""
        return self.next_at - time.monotonic()

    def read(self) -> None:
        """Read what the task wrote since the last read; a failure waits for the next one."""
        try:
            raw = self.transport._read_output(self.machine, self.run_id, self.nonce, self.offset)
        except (TransportError, paramiko.SSHException, EOFError, OSError) as exc:
            log.debug("run %s: cannot read its output yet: %s", self.run_id, exc)
            raw = b""
        self.next_at = time.monotonic() + READ_SECONDS
        parsed = wrapper.parse_read(raw)
        if parsed is not None:
            self._feed(*parsed)

    def finish(self, final: bytes, dropped: int = 0) -> None:
        """The task ended and `final` is its output's tail (maybe under a mark, with
        `dropped` more bytes before it): hand over what no read did."""
        marked, body = split_mark_bytes(final)
        self._feed(dropped + marked, body)

    def _feed(self, start: int, data: bytes) -> None:
        """`data` is the output file from byte `start` on."""
        if start > self.offset:
            self.control.output(MARK.format(start - self.offset).encode())
            self.offset = start
        fresh = data[self.offset - start :]
        if fresh:
            self.control.output(fresh)
            self.offset += len(fresh)


class _Transport(paramiko.Transport):
    """paramiko's transport asking for AES-GCM first (the server picks the first of our
    ciphers it has; every OpenSSH since 6.2 has these). paramiko prefers AES-CTR with an
    HMAC, which costs every packet a cipher pass plus an HMAC computed and compared in
    Python; GCM authenticates within one AEAD call. The other ciphers stay, after it."""

    _preferred_ciphers = tuple(
        sorted(paramiko.Transport._preferred_ciphers, key=lambda name: "-gcm@" not in name)
    )

    # Right after authentication OpenSSH sends a `hostkeys-00` request and a debug message
    # (the key's options) that want no answer; our kernel delays its ACK of them (~40 ms),
    # and sshd's Nagle holds the answer to our first channel until that ACK: the first run
    # on every connection waited ~45 ms. Acknowledging such messages at once removes it.

    def _parse_debug(self, m):
        super()._parse_debug(m)
        _ack_now(self.sock)

    def _parse_global_request(self, m):
        super()._parse_global_request(m)
        _ack_now(self.sock)


class _BufferedSocket:
    """The connection's socket, read a whole burst at a time. paramiko reads each packet in
    three `recv` calls (length, body, tag), each a poll and a read with the GIL released and
    taken back; several packets often arrive together. Only paramiko's transport thread reads;
    everything else goes to the socket itself."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buffer = b""
        self.send, self.sendall = sock.send, sock.sendall  # every packet: no __getattr__

    def recv(self, size: int) -> bytes:
        buffer = self._buffer
        if not buffer:
            data = self._sock.recv(max(size, 65536))  # raises what the socket raises
            if len(data) <= size:
                return data
            self._buffer = data[size:]
            return data[:size]
        self._buffer = buffer[size:]
        return buffer[:size]

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def _ack_now(sock) -> None:
    """Send the ACK of what `sock` received now, not after the delayed-ACK timer (Linux)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except (AttributeError, OSError):
        pass  # not Linux, or not a TCP socket: the ACK is only late


def load_private_key(text: str, machine: str) -> paramiko.PKey:
    """An OpenSSH (or PEM) private key from its text, in memory; raises AuthFailed when it
    cannot be read (or is encrypted: a vault key needs no passphrase)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data = text.encode()
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise AuthFailed(
            f"machine '{machine}': its key is encrypted; store an unencrypted "
            "key in the vault (the vault itself is the encryption)"
        ) from exc
    except (ValueError, paramiko.SSHException) as exc:
        raise AuthFailed(f"machine '{machine}': its key is not an OpenSSH private key") from exc
    for kind, cls in (
        (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
        (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
        (rsa.RSAPrivateKey, paramiko.RSAKey),
    ):
        if isinstance(loaded, kind):
            return cls.from_private_key(io.StringIO(text))
    raise AuthFailed(f"machine '{machine}': unsupported key type {type(loaded).__name__}")


def _key_from_file(machine: Machine) -> paramiko.PKey:
    path = os.path.expanduser(machine.key_file or "")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthFailed(
            f"machine '{machine.name}': cannot read key_file {machine.key_file}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from exc
    return load_private_key(text, machine.name)


def _offered(machine: Machine, timeout: float) -> str:
    """What the server offers instead of the pinned types, for the mismatch message."""
    try:
        keys = hostkeys.scan(machine.host or "", machine.port, timeout)
    except TransportError:
        return "the server offers none we can read"
    return "it offers " + ", ".join(f"{k.type} {k.fingerprint}" for k in keys)


def _lost(
    machine: Machine, exc: BaseException | None, connection: Connection | None = None
) -> ConnectionLost:
    """The command may have run. When the liveness watchdog closed the connection (nothing
    answered its probes) the machine is also unreachable: one alert for the machine."""
    dead = connection.dead if connection is not None else None
    why = f": {dead}" if dead else f": {exc}" if exc is not None and str(exc) else ""
    lost = ConnectionLost(
        f"machine '{machine.name}': connection lost after the command was "
        f"sent{why}; its outcome is unknown (the next pass reads the run's "
        "markers on the machine)"
    )
    lost.unreachable = dead is not None
    return lost


def _wait_status(channel: paramiko.Channel, deadline: float) -> bool:
    """Wait until the command ended (exit status) or the channel closed (which also happens
    when the connection dies: paramiko unlinks every channel); False at `deadline`."""
    return channel.status_event.wait(max(0.0, deadline - time.monotonic()))


def _read_hello(channel: paramiko.Channel, deadline: float) -> bytes:
    """What a starting runner printed until it said whether it runs (`wrapper.RUNNER_READY`
    or `RUNNER_UNABLE`, after whatever the login shell's startup files printed), its channel
    ended (no bash) or `deadline`."""
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        channel.settimeout(left)
        try:
            chunk = channel.recv(4096)
        except (TimeoutError, paramiko.SSHException, EOFError, OSError):
            break
        if not chunk:
            break
        data += chunk
        if data.endswith((wrapper.RUNNER_READY, wrapper.RUNNER_UNABLE)):
            break
    return data


def _read_tail(channel: paramiko.Channel, wait: float) -> TailBuffer:
    """Everything the channel still delivers until EOF (at most `wait` s), last 64 KiB."""
    channel.settimeout(wait)
    tail = TailBuffer(wrapper.OUTPUT_TAIL)
    try:
        while chunk := channel.recv(65536):
            tail.add(chunk)
    except (TimeoutError, paramiko.SSHException, EOFError, OSError):
        pass
    return tail


def _read_reply(
    channel: paramiko.Channel,
    token: str,
    deadline: float,
    follow: _RemoteOutput | None = None,
) -> tuple[bytes, tuple[bytes, int] | None, int]:
    """Read the wrapper's reply until its trailer line, `TOKEN CODE` with the invocation's
    token, which the task cannot know (then: the output and exit code), the
    end of the channel or `deadline` (then None). Returns what was received as well, and how
    many bytes of its head were dropped to bound memory (for the output's mark). With
    `follow`, the task's output file is read whenever a read is due meanwhile."""
    data, dropped = bytearray(), 0
    while (left := deadline - time.monotonic()) > 0:
        # Data, the channel's end (also when the watchdog closes a dead connection) or the
        # deadline ends the wait; a due read of the output wakes it up when following.
        if follow is not None:
            if follow.due() <= 0:
                follow.read()
                continue
            left = min(left, follow.due())
        channel.settimeout(max(left, 0.001))
        try:
            chunk = channel.recv(65536)
        except TimeoutError:
            continue
        except (paramiko.SSHException, EOFError, OSError):
            break
        if not chunk:
            break
        data += chunk
        if len(data) > 4 * wrapper.OUTPUT_TAIL:
            dropped += len(data) - 2 * wrapper.OUTPUT_TAIL
            del data[: -2 * wrapper.OUTPUT_TAIL]
        if data.endswith(b"\n") and (reply := wrapper.parse_reply(bytes(data), token)):
            return bytes(data), reply, dropped
    return bytes(data), None, dropped


def _replied(
    channel: paramiko.Channel,
    token: str,
    started: float,
    timeout: float,
    follow: _RemoteOutput | None,
) -> tuple[bytes, Completed | None, int]:
    """`_read_reply` for a run started at `started`: what was received, the run's result when
    its reply came (handed to `follow` as well), and how many bytes of its head were
    dropped."""
    received, reply, dropped = _read_reply(channel, token, started + timeout, follow)
    if reply is None:
        return received, None, dropped
    if follow is not None:
        follow.finish(reply[0], dropped)
    done = Completed(reply[1], _tail(reply[0], dropped), time.monotonic() - started)
    return received, done, dropped


def _acknowledge(channel: paramiko.Channel, token: str) -> None:
    """Tell the wrapper we hold the whole output, so it removes it from the target, and wait
    for it to exit (closing the channel earlier could cut the acknowledgement off). A lost
    acknowledgement costs nothing but the output file, removed with day-old markers.
    No EOF follows the line: the wrapper exits on it, and an EOF racing its exit can reach
    sshd after the channel is gone, which drops the connection (see `wrapper`)."""
    try:
        send_last(channel, wrapper.acknowledgement(token))
    except (paramiko.SSHException, EOFError, OSError):
        return
    _wait_status(channel, time.monotonic() + DRAIN)


def _tail(raw: bytes, dropped: int = 0) -> str:
    """The last 64 KiB of the output as text, under the mark of what was dropped before it
    (`dropped` bytes, plus what this cut drops): the redactor then masks a piece of a secret
    the cut went through."""
    return tail_text(raw, wrapper.OUTPUT_TAIL, dropped)


def _read_all_bytes(channel: paramiko.Channel, wait: float) -> bytes:
    return bytes(_read_tail(channel, wait).data)


def _read_all(channel: paramiko.Channel, wait: float) -> str:
    """The output's last 64 KiB as text, under a mark saying how much was dropped."""
    return _read_tail(channel, wait).text()


__all__ = ["ConnectionLost", "SshTransport", "load_private_key"]
