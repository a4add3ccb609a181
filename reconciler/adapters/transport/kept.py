"""Transports that outlive a pass: the daemon's SSH logins and runners, kept from pass to pass.

A `--once` pass builds its transports and closes them at its end. The daemon runs a pass
every poll interval, and with transports of each pass's own every pass logged in to each
machine again (a key exchange and a login in the target's auth log every 30 s) and started
new runners. So the daemon keeps one SSH transport for its whole life (another once the
liveness settings change), and each pass borrows it: a `Borrowed` view whose `close` lets
go of what that pass left on the targets, not of the connections. An idle connection
still closes after the pool's idle timeout, and a dead one is dropped and reconnected by
its next run.

A login opened while several passes drain (the daemon plans a new commit while earlier
runs go on) reads the machine's key from the newest pass's vaults: the newest commit is
the desired state, and a key rotated there is the one to log in with. A connection is
shared only by machines the same in everything the login depends on (`pool.pool_key`):
another host, port, user, host key or key reference opens a new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping

from reconciler.adapters.transport.base import Completed, RunControl, Transport
from reconciler.core.model import Machine
from reconciler.core.redact import Secret

# A pass's key resolver: (team, vault reference) -> the key, or None.
Secrets = Callable[[str, object], "Secret | None"]


class Borrowed(Transport):
    """One pass's use of a transport it does not own. Runs, reaps, prepares and settles go
    to the owner; `close` releases the runs this pass started or reaped that it never
    settled (their wrappers exit and keep their outputs on the target, for a later pass to
    adopt, as a pass's own transport does when it closes), keeps the connections, and tells
    `returned` (once).

    A run id outlives a pass: a retry is the same run, its next attempt started by a later
    pass while this one may still drain. So `close` releases only the runs no later pass
    has run or reaped since (`latest`, shared by the passes of one `KeptTransports`, says
    which pass last did): never the output a later pass holds for its recording."""

    def __init__(self, owner: Transport, returned: Callable[[], None], latest: Latest):
        self.owner = owner
        self._returned: Callable[[], None] | None = returned
        self._latest = latest
        self._runs: set[int] = set()
        self._lock = threading.Lock()

    def _took(self, run_id: int) -> None:
        with self._lock:
            self._runs.add(run_id)
        self._latest.took(run_id, self)

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
        self._took(run_id)
        return self.owner.run(machine, command, env, timeout, run_id, control, key)

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
        self._took(run_id)
        return self.owner.reap(
            machine, run_id, attempt=attempt, command=command, stop=stop, key=key
        )

    def prepare(self, machines: Iterable[Machine], runs: Mapping[str, int] | None = None) -> None:
        self.owner.prepare(machines, runs)

    def settle(self, recorded: Collection[int], unrecorded: Collection[int] = ()) -> None:
        self.owner.settle(recorded, unrecorded)

    def close(self) -> None:
        with self._lock:
            runs, self._runs = self._runs, set()
            returned, self._returned = self._returned, None
        self.owner.release(self._latest.given_back(runs, self))
        if returned is not None:
            returned()

    def __getattr__(self, name: str):
        # What else a caller asks of an SSH transport (`query`, `probe`) is the owner's.
        return getattr(self.owner, name)


class Latest:
    """Which borrower last ran or reaped each run id (thread-safe)."""

    def __init__(self) -> None:
        self._by_run: dict[int, Borrowed] = {}
        self._lock = threading.Lock()

    def took(self, run_id: int, borrower: Borrowed) -> None:
        with self._lock:
            self._by_run[run_id] = borrower

    def given_back(self, run_ids: Iterable[int], borrower: Borrowed) -> list[int]:
        """Of `run_ids`, those `borrower` was the last to take, forgotten."""
        with self._lock:
            mine = [i for i in run_ids if self._by_run.get(i) is borrower]
            for run_id in mine:
                del self._by_run[run_id]
        return mine


class KeptTransports:
    """The daemon's SSH transport, of the liveness setting (`ssh_keepalive`,
    `ssh_keepalive_count`) of the pass that asked last, built on a pass's first SSH run and
    closed with the daemon (`close`). A pass of another setting (the inventory's changed)
    gets a transport of its own, and the one it replaces is renewed. `renew` (SIGHUP) makes
    later passes log in afresh: the transports in use are closed once the passes that
    borrowed them ended."""

    def __init__(self) -> None:
        self._setting: tuple[float, int] | None = None  # the liveness setting of `_owner`
        self._owner: Transport | None = None  # what the next pass borrows (None: build one)
        self._borrowers: dict[Transport, int] = {}  # passes not yet ended, by transport
        self._retired: list[Transport] = []  # renewed, closed when no pass borrows them
        self._secrets: Secrets | None = None
        self._latest = Latest()  # run ids outlive passes, and transports (a renewal)
        self._lock = threading.Lock()

    def ssh(self, secrets: Secrets | None, keepalive: float, count: int) -> Transport:
        """A pass's view of the kept SSH transport; `secrets` (the pass's vaults) resolve
        the keys of the logins opened from now on."""
        from reconciler.adapters.transport.ssh import SshTransport

        with self._lock:
            self._secrets = secrets
            if self._owner is None or self._setting != (keepalive, count):
                # Another setting's transport no later pass asks for: closed once the passes
                # on it ended, as a renewed one (kept, its logins and runners stayed for ever).
                self._retire()
                # The engine settles each end batch: outputs stay on the target until recorded.
                self._owner = SshTransport(
                    resolve_key=self._resolve_key,
                    keepalive=keepalive,
                    keepalive_count=count,
                    hold_outputs=True,
                )
                self._setting = (keepalive, count)
            owner = self._owner
            self._borrowers[owner] = self._borrowers.get(owner, 0) + 1
        self._close_unused()
        return Borrowed(owner, lambda: self._returned(owner), self._latest)

    def renew(self) -> None:
        """Later passes open new connections (a key rotated in its vault, then SIGHUP: the
        next login uses it); the current ones close once no pass uses them."""
        with self._lock:
            self._retire()
        self._close_unused()

    def _retire(self) -> None:
        """The current transport is lent no more (under the lock)."""
        if self._owner is not None:
            self._retired.append(self._owner)
        self._owner = self._setting = None

    def _returned(self, owner: Transport) -> None:
        with self._lock:
            self._borrowers[owner] -= 1
        self._close_unused()

    def _close_unused(self) -> None:
        with self._lock:
            unused = [t for t in self._retired if not self._borrowers.get(t)]
            self._retired = [t for t in self._retired if self._borrowers.get(t)]
            for owner in unused:
                self._borrowers.pop(owner, None)
        for owner in unused:
            owner.close()

    def _resolve_key(self, machine: Machine) -> Secret | None:
        secrets = self._secrets
        if machine.key is None or secrets is None:
            return None
        return secrets(machine.team, machine.key)

    def close(self) -> None:
        """Close every kept connection (the daemon stops, its passes ended)."""
        with self._lock:
            self._retire()
            owners, self._retired, self._borrowers = self._retired, [], {}
        for owner in owners:
            owner.close()
