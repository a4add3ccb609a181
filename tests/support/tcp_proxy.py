"""A TCP proxy on 127.0.0.1 that can simulate a network partition.

`TcpProxy(target_port)` listens on a free loopback port and forwards every connection to
`127.0.0.1:target_port`, one thread per direction. `partition()` stops forwarding in both
directions *without closing any socket*: no FIN, no RST, the bytes just stop, as when a cable
is cut or a firewall starts dropping packets. Both kernels keep ACKing their side, so TCP
keepalive never notices; only an application-level liveness check can. `heal()` forwards
again (what was held back is delivered, as after a short outage), and new connections are
accepted (and held) during a partition too, like a SYN that gets through to a firewall that
drops data. `close()` stops everything.
"""

from __future__ import annotations

import socket
import threading

CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port` until told to partition."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()  # set: bytes are forwarded
        self.flowing.set()
        self.closed = threading.Event()
        self.connections = 0  # accepted so far (tests read it)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def partition(self) -> None:
        """Stop forwarding, both ways, on every connection; sockets stay open."""
        self.flowing.clear()

    def heal(self) -> None:
        """Forward again."""
        self.flowing.set()

    def close(self) -> None:
        self.closed.set()
        self.flowing.set()  # wake the pumps so they see `closed`
        with self._lock:
            sockets, self._sockets = [self.listener, *self._sockets], []
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes from `source` to `sink`; during a partition hold them (read nothing,
        so the sender's window fills up as it would behind a dead link)."""
        source.settimeout(None)
        while not self.closed.is_set():
            self.flowing.wait()
            if self.closed.is_set():
                return
            try:
                data = source.recv(CHUNK)
            except OSError:
                return
            if not data:
                _shutdown(sink)
                return
            # A chunk read just before the partition began is held until it heals.
            self.flowing.wait()
            try:
                sink.sendall(data)
            except OSError:
                return


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


__all__ = ["TcpProxy"]
