"""Files a command writes for the user (`-o PATH`), and the signals that stop it mid-write.

A regular file (or one not there yet) is written beside its target and renamed over it once
complete, so a failure part-way leaves it as it was. Anything else (a pipe, a device such as
/dev/stdout or /dev/null) is written into as it is: renaming over it would replace the device
node or the pipe with a regular file. A symlink is followed: its target is written, the link
stays.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from reconciler.core.errors import InfrastructureError, InputError, UsageError

# A write that fails for these reasons is the machine's trouble (a full disk, a failing one),
# not the user's input: exit 3 like any other infrastructure failure.
_MACHINE_TROUBLE = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived while a command held something to clean up (a partial
    plaintext, a decrypted vault): raised in the main thread so that its `finally` blocks run.
    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Stopped` (as SIGINT raises
    KeyboardInterrupt), so that a closed terminal or a `kill` cleans up like Ctrl-C does."""
    restore = stop_on_signals()
    try:
        yield
    finally:
        restore()


def stop_on_signals() -> Callable[[], None]:
    """From now on SIGTERM and SIGHUP raise `Stopped` in the main thread; returns what puts the
    previous handlers back. main() calls it around every command, so that a `kill` ends any
    command with its "stopped" line (and JSON document) and exit 128 + the signal, as Ctrl-C
    ends it with "interrupted" (issue 19); a command that handles a signal itself (the
    daemon, `--once` letting running runs finish) installs its own handler over this one. A
    signal the process was started ignoring (`nohup` ignores SIGHUP) stays ignored. Only the
    main thread may set handlers (a test running a command in a thread): nothing changes."""

    def stop(signum, frame):
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, stop)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT wait: the block finishes (a system call
    they interrupt is retried, PEP 475), then the first of them takes effect as it would have
    (`Stopped`, or KeyboardInterrupt for SIGINT). For what must not
    be cut part-way: the result document on stdout (half a JSON document is none), the removal
    of a plaintext folder. A signal the process ignores stays ignored; outside the main thread
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def note(signum, frame):
        arrived.append(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if arrived:
        handler = previous[arrived[0]]
        if callable(handler):
            handler(arrived[0], None)  # the handler that was there: `Stopped`, or a command's own
        elif handler == signal.SIG_DFL:
            raise Stopped(arrived[0])


def write_stdout(text: str) -> None:
    """`text` on standard output, whole: to its file descriptor in a loop that goes on after a
    partial write (a signal in a full pipe), where Python's buffered stdout can lose part of
    it. A stdout with no descriptor (a test's capture) is written as it is."""
    stream = sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(text)
        stream.flush()
        return
    stream.flush()
    view = memoryview(text.encode(stream.encoding or "utf-8", stream.errors or "strict"))
    while view:
        view = view[os.write(fd, view) :]


def is_machine_trouble(exc: OSError) -> bool:
    """Whether a failed write is the machine's trouble (a full or failing disk)."""
    return exc.errno in _MACHINE_TROUBLE


def write_error(path: str, exc: OSError) -> InputError | InfrastructureError:
    """The error for a failed write to `path`: exit 3 for a full or failing disk, exit 2 for
    an output the user named wrong (a directory, a folder that does not exist, no right)."""
    reason = os_reason(path, exc)
    if exc.errno in _MACHINE_TROUBLE:
        return InfrastructureError(f"cannot write {path}: {reason}")
    return UsageError(f"cannot write {path}: {reason}")


def os_reason(path: str | os.PathLike | None, exc: OSError) -> str:
    """Why `exc` failed on `path`, in words a user can act on: a folder of the path that is a
    file is named as such (the system says only 'Not a directory' or 'File exists')."""
    if path is not None and exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = file_in_the_way(path)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    return exc.strerror or str(exc)


def file_in_the_way(path: str | os.PathLike) -> str | None:
    """The first folder of `path` that exists and is not a folder (a file where a folder
    should be), as written in `path`; None when there is none."""
    parts = Path(path).parts[:-1]
    for count in range(1, len(parts) + 1):
        ancestor = Path(*parts[:count])
        try:
            if not stat.S_ISDIR(os.stat(ancestor).st_mode):
                return str(ancestor)
        except OSError:
            return None
    return None


def make_parent(path: str) -> None:
    """Create the folders of output `path` that do not exist yet; a failure is `write_error`."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None


# Failures about a path the user named (or one in the inventory): fixed by naming another
# path or changing its rights, so bad input (exit 2). Any other OSError is the machine's or
# the network's (exit 3).
_PATH_TROUBLE = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.ETXTBSY,
}


def describe_os_error(exc: OSError) -> tuple[int, str, str | None, str | None]:
    """An OSError that no command translated, as (exit code, message, hint, path): exit 2 for
    a path that cannot be used as it is (no right, not a folder, missing), exit 3 for the
    machine's trouble (a full or failing disk, the network). The CLI's last guard: no OSError
    reaches a user as a traceback."""
    path = exc.filename if isinstance(exc.filename, str) else None
    if path is None and isinstance(exc.filename, bytes | os.PathLike):
        path = os.fsdecode(exc.filename)
    reason = os_reason(path, exc)
    if path is not None and exc.errno in _PATH_TROUBLE:
        hint = (
            "name a path whose folders exist"
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST)
            else "check the path and its permissions"
        )
        return 2, f"cannot use {path}: {reason}", hint, path
    where = f"{path}: " if path else ""
    if exc.errno in _MACHINE_TROUBLE:
        return 3, f"{where}{reason}", "the disk is full or failing", path
    return 3, f"{where}{reason}", None, path


def same_file(first: str | None, second: str | None) -> bool:
    """Whether two paths name one existing file (through symlinks and hard links)."""
    if first in (None, "-") or second in (None, "-"):
        return False
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def replaces_a_file(path: str) -> bool:
    """Whether `path` is written by renaming a new file over it: a regular file, or nothing
    yet. Not a pipe or a device (written into as they are). A directory is a usage error."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise write_error(path, exc) from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"cannot write {path}: it is a directory")
    return stat.S_ISREG(mode)


def _new_file_mode(private: bool) -> int:
    if private:
        return 0o600
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def writing(path: str, *, private: bool, keep_mode: bool = True) -> Iterator[BinaryIO]:
    """`path` open for binary writing (see the module's docstring). A new regular file gets
    0600 when `private` (plaintext, audit entries), else 0666 less the umask; a file replaced
    keeps its mode (unless not `keep_mode`: then it gets the new file's). Write errors name
    `path` (see `write_error`)."""
    if not replaces_a_file(path):
        try:
            handle = open(path, "wb")  # noqa: SIM115 (a device or pipe: no rename, no chmod)
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            with handle:
                yield _Named(handle, path)
        except OSError as exc:
            raise write_error(path, exc) from None
        return
    target = Path(os.path.realpath(path))
    mode = _new_file_mode(private)
    if keep_mode:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            pass
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)  # 0600
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield _Named(handle, path)
            try:
                handle.flush()
                os.fchmod(handle.fileno(), mode)
            except OSError as exc:
                raise write_error(path, exc) from None
        try:
            os.replace(temporary, target)
        except OSError as exc:
            raise write_error(path, exc) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class _Named:
    """A binary file whose write errors name the path the user gave (not the temporary)."""

    def __init__(self, handle: BinaryIO, path: str):
        self._handle, self._path = handle, path

    def write(self, data) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            raise write_error(self._path, exc) from None

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as exc:
            raise write_error(self._path, exc) from None

    def fileno(self) -> int:
        return self._handle.fileno()
