"""The `local` transport: `sh -c` on the reconciler's own host.

The command runs in its own session (process group), so a timeout kills the whole tree, not
just the shell. Secrets travel only in the child's environment, never in its argv. The child
does not inherit the reconciler's environment: it gets a small allow-list plus the task's env
(start-up already took the identity out of the environment, cli/startup.py).

A machine's `user:` names the OS account its commands run as: when the reconciler runs as root
it drops to that user's uid, gid and groups in the child (with its HOME, USER, LOGNAME, SHELL),
so a task cannot read what only the reconciler may (its identity file, its state store).
Without `user:` a command runs with the reconciler's own rights.

Output is read while the command runs and only its last `OUTPUT_TAIL` bytes are kept, so a
command that prints gigabytes costs no memory. A marker file holds the process group of each
running command: if the reconciler dies, the next pass finds the orphan and stops it before
anything is re-run (`reap`). The marker is written before the command may start (`GATE`), so
no command ever runs without one: a reconciler killed in between leaves nothing running.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import pwd
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters import failpoints
from reconciler.adapters.private_files import private_dir
from reconciler.adapters.transport.base import STILL_RUNNING, Completed, RunControl, Transport
from reconciler.core.errors import AuthFailed
from reconciler.core.model import Machine
from reconciler.core.output import TailBuffer
from reconciler.core.redact import Secret, reveal

# Every process of a run's attempt carries this variable with a value of its own (random, no
# secret): `queue kill` and a timeout stop the processes that left the run's group by it.
RUN_COOKIE = "RECONCILE_RUN_COOKIE"
# What a task sees of the reconciler's own environment; everything else is the task's `env`.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SHELL",
    "TERM",
)
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a process group
OUTPUT_TAIL = 64 * 1024
# After the shell exits, how long its output may keep arriving. A background child that keeps
# the pipe open (`daemon &`) must not hold the run open until its timeout.
DRAIN_GRACE = 0.5
# The shell a command is spawned in waits on its stdin until the reconciler has written the
# command's marker, then becomes the command's shell: it evaluates the command as `sh -c` would
# (no positional parameter, the variable it read unset; same pid, group and environment, so
# `$$` is still the group `reap` stops). Evaluating, not `exec /bin/sh -c`, spares an exec of
# another sh per run. What shows: the shell's own error messages name `eval` (`/bin/sh: 1:
# eval: foo: not found`), and its argument list holds the gate before the command.
# Without the gate the command ran as soon as it was spawned, and a reconciler killed before
# its marker was written left an orphan the next pass could not find: an idempotent task then
# ran twice at once. If the reconciler dies before opening the gate, `read` meets the end of
# the pipe and the command never runs.
GATE = 'IFS= read -r opened || exit 125; unset opened; exec </dev/null; eval "set --; $1"'
# Without pidfds (not Linux, or a kernel before 5.3) the shell's exit is polled this often.
EXIT_POLL = 0.02
# A run's cookie: this process's random part and a count, so that no two attempts share one
# (random per attempt cost a getrandom(2) per run, and the cookie guards nothing secret).
_COOKIE_PREFIX = secrets.token_hex(8)
_COOKIE_COUNT = itertools.count(1)


def child_environment(
    env: Mapping[str, str | Secret], account: RunAs | None = None
) -> dict[str, str]:
    """The environment of a local task: the allow-list from ours, overlaid with the task's;
    for a task run as another user, that user's HOME, USER, LOGNAME and SHELL."""
    base = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    base.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if account is not None:
        base.update(account.environment())
    return {**base, **{k: reveal(v) for k, v in env.items()}}


@dataclass(frozen=True)
class RunAs:
    """The OS account a local machine's `user:` names, resolved on this host."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    def environment(self) -> dict[str, str]:
        return {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": self.shell or "/bin/sh",
        }

    def popen_arguments(self) -> dict:
        """Popen's privilege drop, done in the child between fork and exec: supplementary
        groups (as initgroups would set them), then gid, then uid."""
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def run_as(machine: Machine, own_user_allowed: bool = True) -> RunAs | None:
    """The account the commands of `machine` run as: None for the reconciler's own (no
    `user:`, or `user:` is the reconciler's own user). Raises AuthFailed (never retried) for
    an unknown user, for another user when the reconciler is not root and cannot switch, and
    for the reconciler's own account when that is not allowed (`own_user_allowed`)."""
    if not machine.user:
        return None
    try:
        entry = pwd.getpwnam(machine.user)
    except KeyError:
        raise AuthFailed(
            f"machine '{machine.name}': user: {machine.user}: no such user on "
            "this host (create the account, or fix 'user:')"
        ) from None
    if entry.pw_uid == os.geteuid():
        if not own_user_allowed:
            raise AuthFailed(
                f"machine '{machine.name}': user: {machine.user} is the reconciler's own "
                "account, so its tasks would run with the reconciler's rights (its identity, "
                "every team's vault) in an inventory of several teams; name an unprivileged "
                "account, or an admin allows it in reconciler.yaml: "
                "local_machines: {allow_shared_user: true}"
            )
        return None
    if os.geteuid() != 0:
        raise AuthFailed(
            f"machine '{machine.name}': user: {machine.user}, but the reconciler runs as "
            f"{_own_user_name()} and only root can run commands as another user (run the "
            "reconciler as root, or remove 'user:' to run them with its own rights)"
        )
    return RunAs(
        entry.pw_name,
        entry.pw_uid,
        entry.pw_gid,
        tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)),
        entry.pw_dir,
        entry.pw_shell,
    )


def _own_user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


class LocalTransport(Transport):
    """Runs commands as child processes of the reconciler."""

    def __init__(
        self,
        markers: str | Path = ".reconciler/runs",
        cwd: str | Path | None = None,
        own_user_allowed: bool = True,
    ):
        self.markers = Path(markers)
        # False with several teams (unless the settings allow the shared user): a `user:`
        # that is the reconciler's own account would give one team's tasks its rights.
        self.own_user_allowed = own_user_allowed
        # Under git.verify: the verified commit's checkout, so that relative paths a command
        # runs (./scripts/...) are the signed ones, never the working tree's.
        self.cwd = cwd
        self._private = False  # the markers folder was made private

    def run(
        self,
        machine: Machine,
        command: str,
        env: Mapping[str, str | Secret],
        timeout: float,
        run_id: int,
        control: RunControl | None = None,
        key: str = "",  # its markers are this project's own (.reconciler/runs)
    ) -> Completed:
        started = time.monotonic()
        account = run_as(machine, self.own_user_allowed)
        # Marks every process of this attempt: see _kill_group.
        cookie = f"{_COOKIE_PREFIX}{next(_COOKIE_COUNT):016x}"
        env = {**env, RUN_COOKIE: cookie}
        # Bare pipes, not Popen's file objects: each of those cost system calls (a stat, an
        # ioctl, seeks) that let go of the GIL, and the threads of a busy pass wait on it.
        gate, gate_end = os.pipe()
        out, out_end = os.pipe()
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", GATE, "/bin/sh", command],  # $0 as `sh -c command` gives it
                stdin=gate,
                stdout=out_end,
                stderr=out_end,
                env=child_environment(env, account),
                start_new_session=True,
                cwd=self.cwd,
                **(account.popen_arguments() if account is not None else {}),
            )
        except BaseException:
            for fd in (gate_end, out):
                os.close(fd)
            raise
        finally:
            os.close(gate)
            os.close(out_end)
        failpoints.hit("after_spawn")
        marker = self._mark(run_id, proc.pid, cookie)
        if control is not None:  # a kill request stops the whole group, as a timeout does
            control.attach(lambda grace: _kill_group(proc.pid, None, grace, cookie))
        try:
            _open_gate(gate_end)
            tail, timed_out = _collect(proc, out, started + timeout, control, cookie)
        finally:
            if control is not None:
                control.detach()
            if marker is not None:
                marker.unlink(missing_ok=True)
        return Completed(
            exit_code=None if timed_out else proc.returncode,
            output=tail.text(),
            duration=time.monotonic() - started,
            timed_out=timed_out,
        )

    def _mark(self, run_id: int, pgid: int, cookie: str) -> Path | None:
        """Remember the process group and the cookie of a command about to run (best
        effort). Written in place, in one write: the command waits at its gate until this
        returns, so a marker a crash left half-written names a command that never ran (its
        gate reads the end of the pipe), and `reap` leaves a marker it cannot read alone."""
        marker = self.markers / f"{run_id}.pgid"
        try:
            if not self._private:  # once: the folder stays (made again if removed meanwhile)
                private_dir(self.markers)  # inside private state, whatever the store
                self._private = True
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except FileNotFoundError:
                private_dir(self.markers)
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{pgid} {cookie}".encode())
            finally:
                os.close(fd)
            return marker
        except OSError:
            return None

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
        """Stop the command of a run whose reconciler died, if it is still running.

        The process group is only killed when its leader still carries this run's id in its
        environment, so a recycled pid is never hit.
        """
        marker = self.markers / f"{run_id}.pgid"
        try:
            pgid_text, _, cookie = marker.read_text().partition(" ")  # no cookie: older
            pgid = int(pgid_text)
        except (OSError, ValueError):
            return
        ours = _runs(pgid, run_id)
        if ours or _carriers(cookie or None):  # a setsid daemon may outlive the group
            if not stop:
                return STILL_RUNNING
            if ours:
                _kill_group(pgid, None, cookie=cookie or None)
            else:
                _kill_carriers(cookie)
        marker.unlink(missing_ok=True)


def _open_gate(gate: int) -> None:
    """Let the spawned shell run its command (see `GATE`): one line on the write end
    `gate` of its stdin, which is closed."""
    # An error means it died before reading (killed from outside): `wait` gives its status.
    try:
        with contextlib.suppress(OSError):
            os.write(gate, b"\n")
    finally:
        os.close(gate)


def _collect(
    proc: subprocess.Popen,
    out: int,
    deadline: float,
    control: RunControl | None = None,
    cookie: str | None = None,
) -> tuple[TailBuffer, bool]:
    """Read the command's output from the pipe `out` (closed on return) in the calling
    thread (no reader thread per run) until its shell exited and the output ended, or
    `deadline`: then its process group is killed (`timed_out`). Output still held open by a
    background child is read for at most `DRAIN_GRACE` after the shell's end. The shell's
    exit is waited on with a pidfd beside the pipe, so nothing polls where the kernel
    supports it. Each read also goes to `control` (the output as it comes)."""
    tail = TailBuffer(OUTPUT_TAIL)
    exits = _pidfd(proc.pid)
    poller = select.poll()
    poller.register(out, select.POLLIN)
    if exits is not None:
        poller.register(exits, select.POLLIN)
    reading, timed_out = True, False
    try:
        while proc.returncode is None:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_group(proc.pid, proc, cookie=cookie)
                timed_out = True
                break
            for fd, _ in poller.poll(_millis(left if exits is not None else min(left, EXIT_POLL))):
                if fd == out and not (reading := _read(out, tail, control)):
                    poller.unregister(out)
                elif fd == exits:
                    proc.wait()  # it exited: this reaps it at once
            if exits is None:
                proc.poll()
        if exits is not None:
            poller.unregister(exits)
        until = time.monotonic() + DRAIN_GRACE
        while reading and (left := until - time.monotonic()) > 0:
            if poller.poll(_millis(left)):
                reading = _read(out, tail, control)
    finally:
        if exits is not None:
            os.close(exits)
        os.close(out)
    return tail, timed_out


def _pidfd(pid: int) -> int | None:
    """A file descriptor that turns readable when process `pid` exits, None where the
    platform has none (then the exit is polled)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _read(fd: int, tail: TailBuffer, control: RunControl | None = None) -> bool:
    """One read of the output pipe into `tail` (and `control`); False at its end."""
    chunk = os.read(fd, 65536)
    if chunk:
        tail.add(chunk)
        if control is not None:
            control.output(chunk)
    return bool(chunk)


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _runs(pid: int, run_id: int) -> bool:
    return _environ_has(pid, f"RECONCILE_RUN_ID={run_id}".encode())


def _environ_has(pid: int, entry: bytes) -> bool:
    """Whether process `pid`'s environment holds `entry` (`NAME=value`); False when it cannot
    be read (gone, another user's, no /proc)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return entry in environ.read().split(b"\0")
    except OSError:
        return False


def _kill_group(
    pgid: int, proc: subprocess.Popen | None, grace: float = KILL_GRACE, cookie: str | None = None
) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds. With `cookie`, every
    process whose environment carries it gets the same signals: a daemon the command started
    in a session of its own (`setsid`, a double fork) left the group but kept the cookie. A
    process that cleared its environment escapes; without /proc only the group is signalled."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
            group = True
        except ProcessLookupError:
            group = False
        strays = _signal_carriers(cookie, sig)
        if not group and not strays:
            return
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else KILL_GRACE)
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our own child, or it lingers as a zombie in the group
            if not _group_alive(pgid) and not _carriers(cookie):
                return
            time.sleep(0.02)


def _kill_carriers(cookie: str) -> None:
    """SIGTERM the processes carrying `cookie`, SIGKILL what is left after KILL_GRACE (the
    group is gone: only its strays are left)."""
    if not _signal_carriers(cookie, signal.SIGTERM):
        return
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline and _carriers(cookie):
        time.sleep(0.02)
    _signal_carriers(cookie, signal.SIGKILL)


def _signal_carriers(cookie: str | None, sig: int) -> bool:
    """Send `sig` to every process carrying `cookie`; whether there was any."""
    found = _carriers(cookie)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    return bool(found)


def _carriers(cookie: str | None) -> list[int]:
    """The live processes whose environment holds `RUN_COOKIE=cookie` (a zombie's reads
    empty; one we may not read, or without /proc, is not found)."""
    if cookie is None:
        return []
    entry = f"{RUN_COOKIE}={cookie}".encode()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    return [pid for pid in pids if _environ_has(pid, entry)]


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: a killed orphan's
    processes wait for their parent (or an init that may never reap them, as in some
    containers) to reap them, and waiting on those only delayed every kill by its grace."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True  # no /proc to look in: the signal's answer is all we know
    return any(_member_running(pid, pgid) for pid in pids)


def _member_running(pid: str, pgid: int) -> bool:
    """Whether process `pid` is in group `pgid` and not a zombie (from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False  # gone meanwhile
    return len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z"
