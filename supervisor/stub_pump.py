"""The pump: a stub connection that now belongs to the app, its bytes copied both ways.

Owns: the socket to the app for one client connection the stub passes on
after readiness (a held request, or a keep-alive connection's next request),
connecting it, copying bytes in both directions through bounded buffers, and
passing each side's half-close on to the other.
Must not know: HTTP, the stub's phases or paths, other connections. The
``Connection`` it belongs to keeps the client socket and the state.
"""

from __future__ import annotations

import errno
import socket

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from supervisor.stub_connection import Connection

# Per-direction buffer: past it, the side that sends is no longer read.
PUMP_BUFFER_BYTES = 256 * 1024
RECV_CHUNK = 64 * 1024


class Pump:
    """The app's side of one connection; ``conn.client`` is the client's."""

    __slots__ = ("app", "app_eof", "app_shut", "conn", "connecting", "fd", "reading",
                 "to_app", "to_client", "writing")

    def __init__(self, conn: Connection, to_app: bytearray) -> None:
        self.conn = conn
        self.to_app = to_app  # from the client, not yet sent to the app
        self.to_client = bytearray()  # from the app, not yet sent to the client
        self.app: socket.socket | None = None  # connected once there is something to send
        self.fd = -1
        self.connecting = self.app_eof = self.app_shut = False
        self.reading = self.writing = False  # registered interest in the app's socket

    # -- the client's side, called by the connection -----------------------------------------
    def client_interest(self) -> tuple[bool, bool]:
        """Whether the client socket is to be read, and written."""
        read = not self.conn.client_eof and len(self.to_app) < PUMP_BUFFER_BYTES
        return read, bool(self.to_client)

    def from_client(self, data: bytes) -> None:
        """Bytes from the client (b"" at its end) for the app."""
        conn = self.conn
        if not data:
            conn.client_eof = True  # passed on once ``to_app`` is sent
            if self.app is None:
                conn.close()
            return
        self.to_app += data
        if self.app is None:
            self.connect()

    def to_client_writable(self) -> None:
        conn = self.conn
        if self.to_client and not conn.give(conn.client, self.to_client):
            return
        if not self.to_client and self.app_eof:
            conn.close()

    # -- the app's side ---------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to the app, which answers whatever the client sent."""
        conn = self.conn
        conn.disarm()
        address = conn.server.app_address
        if address is None:
            conn.close()  # the app went away before this connection reached it
            return
        unix = len(address) == 1  # (path,) for a unix socket, (host, port) otherwise
        if unix:
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
        app = socket.socket(family, socket.SOCK_STREAM)
        try:
            app.setblocking(False)
            if not unix:
                app.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = app.connect_ex(str(address[0]) if unix else address)
        except OSError:
            code = -1
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            app.close()
            self.failed()
            return
        self.app = app
        self.fd = app.fileno()
        self.connecting = True

    def failed(self) -> None:
        self.close()
        self.conn.unreachable()

    def sync(self) -> None:
        """Make the reactor's interest in the app's socket match what can be done now."""
        if self.app is None:
            return
        conn = self.conn
        read = not self.connecting and not self.app_eof and len(self.to_client) < PUMP_BUFFER_BYTES
        write = self.connecting or bool(self.to_app) or (conn.client_eof and not self.app_shut)
        if read != self.reading:
            self.reading = conn.want(self.fd, False, read, lambda _: self._on_readable())
        if write != self.writing:
            self.writing = conn.want(self.fd, True, write, lambda _: self._on_writable())

    def close(self) -> None:
        """Close the app's socket (the connection closes the client's)."""
        app = self.app
        if app is None:
            return
        conn = self.conn
        self.reading = self.reading and conn.want(self.fd, False, False)
        self.writing = self.writing and conn.want(self.fd, True, False)
        app.close()
        self.app = None

    def _on_writable(self) -> None:
        app = self.app
        if app is None:
            return
        if self.connecting:
            if app.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.failed()
                return
            self.connecting = False
        if self.to_app and not self.conn.give(app, self.to_app):
            return
        if not self.to_app and self.conn.client_eof and not self.app_shut:
            # Pass the client's half-close on: the app still answers what it got.
            self.app_shut = True
            try:
                app.shutdown(socket.SHUT_WR)
            except OSError:
                self.conn.close()

    def _on_readable(self) -> None:
        if self.app is None:
            return
        # A reset by the app (or its death) ends the pump like a close.
        data = self.conn.take(self.app, RECV_CHUNK, reset_is_end=True)
        if data is None:
            return
        if not data:
            self.app_eof = True
            if not self.to_client:
                self.conn.close()
            return
        self.to_client += data
        self.to_client_writable()
