"""Widen paramiko's EOF race so a test loses it every time, against the real sshd.

paramiko's `Channel.shutdown_write()` builds the SSH EOF under the channel's lock and sends it
after releasing it. When the remote command exits at that moment, paramiko's transport thread
answers the server's CLOSE with its own CLOSE, which may go out first; sshd frees the channel
on that CLOSE, then reads the EOF for a channel it no longer has ("ieof packet referred to
nonexistent channel") and drops the whole connection, with every other run on it. On a busy
machine that happened about once in 600 runs.

`widen()` makes the window as wide as it can be: the EOF built, it waits (bounded) until the
peer closed the channel, then sends. A client that half-closes a channel whose command may be
exiting now loses its connection every time; one that never does is untouched. Installed in a
`reconcile` subprocess by `install_in(env, folder)`: a `sitecustomize` module on its PYTHONPATH.
`fail_closing()` injects the other end of that failure: the connection dies as a channel
closes, after the run's result was read.
"""

from __future__ import annotations

import os
from pathlib import Path

import paramiko

from tests.support.waiting import wait_until

PEER_CLOSE_WAIT = 3.0  # a remote that waits for the EOF never closes: send it after this
ROOT = Path(__file__).resolve().parents[2]


def _late_shutdown(channel: paramiko.Channel, how: int) -> None:
    if how in (0, 2):
        channel.eof_received = 1
    if how not in (1, 2):
        return
    with channel.lock:
        message = channel._send_eof()
    if message is None or channel.transport is None:
        return
    try:
        wait_until(lambda: channel.closed, PEER_CLOSE_WAIT, message="the peer to close")
    except AssertionError:
        pass  # the remote waits for this EOF: send it now
    channel.transport._send_user_message(message)


def widen() -> None:
    """Make every `Channel.shutdown` of this process send its EOF as late as possible."""
    paramiko.Channel.shutdown = _late_shutdown


def fail_closing() -> None:
    """Make closing a channel fail as on a connection that died at that moment (the socket
    write raises): the command's result was read; closing is all that failed."""
    closing = paramiko.Channel.close

    def close(channel: paramiko.Channel) -> None:
        closing(channel)
        raise OSError("injected: the connection died as the channel closed")

    paramiko.Channel.close = close


def install_in(env: dict[str, str], folder: Path, *, failing_close: bool = False) -> dict[str, str]:
    """`env` for a `reconcile` subprocess that widens the race at start-up (and, with
    `failing_close`, fails every channel close)."""
    folder.mkdir(parents=True, exist_ok=True)
    hooks = "widen()\n" + ("fail_closing()\n" if failing_close else "")
    (folder / "sitecustomize.py").write_text(
        "from tests.support.eof_race import fail_closing, widen\n\n" + hooks
    )
    path = os.pathsep.join(p for p in (str(folder), str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


__all__ = ["fail_closing", "install_in", "widen"]
