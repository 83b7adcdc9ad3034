"""The public listening socket and the stub HTTP server that answers on it until the app is ready.

Owns: answering the health and
ready paths while the child starts, holding early requests and passing them to
the app once it is ready, and answering again after the child ended.

Must not know: processes, signals, readiness detection, configuration parsing
or reports. The main loop decides when the app is ready (``hand_off``) and when
it ended (``take_back``); this module only obeys.

Imports are kept to what the stub needs to answer within milliseconds of exec
(socket, json, the reactor): the HTTP/1.1 parsing is hand-rolled on purpose.
"""

from __future__ import annotations

import enum
import errno
import os
import socket

from supervisor import http_wire as wire
from supervisor.listener import bind_listener, loopback_address

# The stub must answer within milliseconds of the child's spawn: no ``re``,
# ``json`` or ``typing`` at run time (together about 8 ms to import).
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional

    from supervisor.reactor import Reactor, Timer

__all__ = ["HealthStub", "StubPhase", "bind_listener", "loopback_address"]

# A body sent to a path the stub answers is read and thrown away up to this size.
MAX_STUB_BODY_BYTES = 64 * 1024
# Bytes of one held connection kept for the app; past this the client is simply
# not read (TCP back-pressure), so nothing is lost and memory stays bounded.
MAX_HELD_BYTES = 1024 * 1024
# Per-direction buffer while pumping a held connection to the app.
PUMP_BUFFER_BYTES = 256 * 1024
# Responses queued but unsent on one connection before we stop reading its requests.
MAX_PENDING_OUTPUT = 64 * 1024
# Seconds, and bytes, spent draining a client after our last response: closing a
# socket with unread input sends RST, which can destroy the response in flight.
LINGER_S = 2.0
LINGER_BYTES = 256 * 1024
# Retry-After for every 503 the stub sends for a path it does not own.
RETRY_AFTER_S = 1
# Connections accepted per readable event: fairness with the rest of the loop.
ACCEPT_BATCH = 64
# After EMFILE/ENFILE the listener is left alone this long instead of spinning.
ACCEPT_BACKOFF_S = 0.1
RECV_CHUNK = 64 * 1024

_AGAIN = (BlockingIOError, InterruptedError)


class StubPhase(enum.Enum):
    """Who answers on the socket; the loop moves it with hand_off and take_back."""

    STARTING = "starting"  # the child has not taken the socket yet: the stub answers
    READY = "ready"  # the app accepts; the stub only finishes what it had
    # ``port`` hand-off: the app listens on its own address and the stub keeps
    # its separate health port, answering that the app is up.
    SERVING = "serving"
    ENDED = "ended"  # the child is gone: the stub answers 503 with the cause


class _State(enum.Enum):
    """What one client connection is doing."""

    OPEN = "open"  # reading requests and answering them
    HELD = "held"  # an early request waits for the app; its bytes are kept
    CLOSING = "closing"  # the last response is being written
    LINGER = "linger"  # write side shut; input drained until EOF or timeout
    PUMP = "pump"  # handed to the app: bytes copied both ways


class _Connection:
    """One accepted client socket and, once handed over, its socket to the app."""

    __slots__ = (
        "action",
        "client",
        "client_eof",
        "connecting",
        "deadline",
        "discard",
        "due",
        "fd",
        "inbuf",
        "lingered",
        "outbuf",
        "reading",
        "state",
        "to_app",
        "to_client",
        "up_reading",
        "up_writing",
        "upstream",
        "upstream_eof",
        "upstream_fd",
        "upstream_shut",
        "writing",
    )

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.fd = client.fileno()
        self.state = _State.OPEN
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.discard = 0  # body bytes of the current request still to be skipped
        self.client_eof = False
        self.lingered = 0
        # One timer per connection, moved lazily: re-arming per request must not
        # grow the reactor's heap (a pipelining client sends thousands a second).
        self.deadline: Optional[Timer] = None
        self.due = 0.0
        self.action: Optional[Callable[[_Connection], None]] = None
        # Registered interest, so that the reactor is only told about changes.
        self.reading = False
        self.writing = False
        self.up_reading = False
        self.up_writing = False
        # The pump, once the connection belongs to the app.
        self.upstream: Optional[socket.socket] = None
        self.upstream_fd = -1
        self.connecting = False
        self.upstream_eof = False
        self.upstream_shut = False
        self.to_app = bytearray()
        self.to_client = bytearray()


class HealthStub:
    """Answers on the public socket while the app cannot, and hands early requests to it.

    Past ``max_connections`` open connections the stub stops accepting until one
    closes (rather than accepting and closing at once): the waiting clients sit
    in the kernel's backlog and are answered a moment later, where a closed
    connection would be a failed health check. Idle and slow clients are cut
    off after ``idle_timeout_s``, which bounds that wait.
    """

    def __init__(
        self,
        reactor: Reactor,
        listener: socket.socket,
        *,
        health_path: str = "/healthz",
        ready_path: Optional[str] = None,
        starting_status: int = 200,
        hold_early_requests: bool = True,
        max_connections: int = 512,
        max_held: int = 128,
        hold_timeout_s: float = 30.0,
        idle_timeout_s: float = 10.0,
        log: Callable[[str], None] = lambda s: None,
        on_app_accepts: Callable[[], None] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self._listener = listener
        self._listener_fd = listener.fileno()
        self._health_path = health_path
        self._ready_path = ready_path
        self._starting_status = starting_status
        self._hold = hold_early_requests
        self._max_connections = max(1, max_connections)
        self._max_held = max(0, max_held)
        self._hold_timeout_s = hold_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._log = log
        self._on_app_accepts = on_app_accepts
        self._phase = StubPhase.STARTING
        self._cause = ""
        self._app_address: Optional[tuple[object, ...]] = None
        self._connections: dict[int, _Connection] = {}
        self._held = 0
        self._accepting = False
        self._started = False
        self._paused = False
        self._backoff: Optional[Timer] = None

    # -- the loop's interface ----------------------------------------------
    @property
    def phase(self) -> StubPhase:
        return self._phase

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def held_count(self) -> int:
        return self._held

    def start(self) -> None:
        """Begin accepting connections on the listener."""
        self._started = True
        self._update_accepting()

    def hand_off(self, app_address: tuple[object, ...]) -> None:
        """The app is ready: stop accepting, finish what is in flight, pass held requests on.

        Open keep-alive connections go to the app too once their last stub
        answer is written: their next request is the app's to answer.
        """
        self._phase = StubPhase.READY
        self._app_address = app_address
        self._update_accepting()
        for conn in list(self._connections.values()):
            if conn.state is _State.HELD:
                self._held -= 1
                conn.state = _State.OPEN
                self._guard(conn, self._start_pump)
            elif conn.state is _State.OPEN:
                self._guard(conn, self._flush)

    def pause_accepting(self, paused: bool) -> None:
        """Leave new connections to whoever else accepts on the socket, for a moment.

        Open connections are still served. The loop uses it to see whether
        the app accepts (its readiness when /proc shows no epoll registration).
        """
        self._paused = paused
        self._update_accepting()

    def mark_serving(self) -> None:
        """The app (on its own port) is ready: health and ready paths answer 200."""
        self._phase = StubPhase.SERVING
        for conn in list(self._connections.values()):
            if conn.state is _State.HELD:
                self._held -= 1
                conn.state = _State.OPEN
                self._guard(conn, self._refuse_held)

    def take_back(self, cause: str) -> None:
        """The child ended: accept again at once and answer 503 with the cause."""
        self._phase = StubPhase.ENDED
        self._cause = cause
        self._update_accepting()
        for conn in list(self._connections.values()):
            if conn.state is _State.HELD:
                self._held -= 1
                conn.state = _State.OPEN
                self._guard(conn, self._refuse_held)
            elif conn.state is _State.PUMP and conn.upstream is None:
                # It never reached the app: its next request is the stub's again.
                conn.state = _State.OPEN
                self._guard(conn, self._reopen)

    def close(self) -> None:
        """Close every connection; the listener stays open (the loop owns it)."""
        self._started = False
        self._update_accepting()
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        for conn in list(self._connections.values()):
            self._drop(conn)

    # -- accepting ------------------------------------------------------------
    def _update_accepting(self) -> None:
        want = (
            self._started
            and not self._paused
            and self._phase is not StubPhase.READY
            and len(self._connections) < self._max_connections
            and self._backoff is None
        )
        if want and not self._accepting:
            self._reactor.add_reader(self._listener_fd, self._on_accept)
        elif not want and self._accepting:
            self._reactor.remove_reader(self._listener_fd)
        self._accepting = want

    def _on_accept(self) -> None:
        if os.get_blocking(self._listener_fd):
            # O_NONBLOCK belongs to the open file description, which the child
            # shares: a child that cleared it accepts there itself, and an
            # accept() here could block the whole loop (signals, timeouts).
            if self._phase is StubPhase.ENDED:
                os.set_blocking(self._listener_fd, False)  # the child is gone
            else:
                self._on_app_accepts()
                return
        for _ in range(ACCEPT_BATCH):
            if len(self._connections) >= self._max_connections:
                break
            try:
                client, _ = self._listener.accept()
            except _AGAIN:
                break
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._log(f"health stub: accept failed ({error.strerror}); pausing")
                    self._backoff = self._reactor.call_later(ACCEPT_BACKOFF_S, self._end_backoff)
                # Otherwise (ECONNABORTED...) the client gave up before we got to it.
                break
            try:
                client.setblocking(False)
            except OSError:
                client.close()
                continue
            conn = _Connection(client)
            self._connections[conn.fd] = conn
            self._arm(conn, self._idle_timeout_s, self._on_idle)
            self._sync(conn)
        self._update_accepting()

    def _end_backoff(self) -> None:
        self._backoff = None
        self._update_accepting()

    # -- registration, guarding, deadlines ---------------------------------------
    def _sync(self, conn: _Connection) -> None:
        """Make the reactor's interest match what the connection can do now."""
        state = conn.state
        if state is _State.PUMP:
            read = not conn.client_eof and len(conn.to_app) < PUMP_BUFFER_BYTES
            write = bool(conn.to_client)
        elif state is _State.LINGER:
            read, write = True, False
        elif state is _State.CLOSING:
            read, write = False, bool(conn.outbuf)
        elif state is _State.HELD:
            read = not conn.client_eof and len(conn.inbuf) < MAX_HELD_BYTES
            write = False
        else:
            # Input is parsed as it comes; while answers wait for a slow reader,
            # nothing more is read, so neither buffer grows without bound.
            read = not conn.client_eof and not conn.outbuf
            write = bool(conn.outbuf)
        reactor = self._reactor
        if read != conn.reading:
            if read:
                reactor.add_reader(conn.fd, lambda: self._guard(conn, self._on_client_read))
            else:
                reactor.remove_reader(conn.fd)
            conn.reading = read
        if write != conn.writing:
            if write:
                reactor.add_writer(conn.fd, lambda: self._guard(conn, self._on_client_write))
            else:
                reactor.remove_writer(conn.fd)
            conn.writing = write
        if conn.upstream is None:
            return
        up_read = (
            state is _State.PUMP
            and not conn.connecting
            and not conn.upstream_eof
            and len(conn.to_client) < PUMP_BUFFER_BYTES
        )
        up_write = state is _State.PUMP and (
            conn.connecting or bool(conn.to_app) or (conn.client_eof and not conn.upstream_shut)
        )
        if up_read != conn.up_reading:
            if up_read:
                reactor.add_reader(
                    conn.upstream_fd, lambda: self._guard(conn, self._on_upstream_read)
                )
            else:
                reactor.remove_reader(conn.upstream_fd)
            conn.up_reading = up_read
        if up_write != conn.up_writing:
            if up_write:
                reactor.add_writer(
                    conn.upstream_fd, lambda: self._guard(conn, self._on_upstream_write)
                )
            else:
                reactor.remove_writer(conn.upstream_fd)
            conn.up_writing = up_write

    def _guard(self, conn: _Connection, step: Callable[[_Connection], None]) -> None:
        """Run one step for a live connection; no input may raise out into the loop."""
        if self._connections.get(conn.fd) is not conn:
            return  # closed earlier in this batch of events
        try:
            step(conn)
            if self._connections.get(conn.fd) is conn:
                self._sync(conn)
        except Exception as error:  # a bug here must cost one connection, not the supervisor
            self._log(f"health stub: dropped a connection after {type(error).__name__}: {error}")
            self._drop(conn)

    def _arm(self, conn: _Connection, delay: float, action: Callable[[_Connection], None]) -> None:
        """Run ``action`` after ``delay`` seconds unless re-armed or disarmed before."""
        due = self._reactor.clock() + delay
        conn.due = due
        conn.action = action
        timer = conn.deadline
        if timer is not None:
            if timer.when <= due:
                return  # it fires first and moves itself to the new due time
            timer.cancel()
        conn.deadline = self._reactor.call_at(due, lambda: self._on_deadline(conn))

    def _disarm(self, conn: _Connection) -> None:
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        conn.action = None

    def _on_deadline(self, conn: _Connection) -> None:
        conn.deadline = None
        if self._connections.get(conn.fd) is not conn or conn.action is None:
            return
        if self._reactor.clock() < conn.due:
            conn.deadline = self._reactor.call_at(conn.due, lambda: self._on_deadline(conn))
            return
        action, conn.action = conn.action, None
        self._guard(conn, action)

    def _drop(self, conn: _Connection) -> None:
        """Close both sockets of a connection and forget it."""
        if self._connections.get(conn.fd) is not conn:
            return
        del self._connections[conn.fd]
        self._disarm(conn)
        if conn.state is _State.HELD:
            self._held -= 1
        if conn.reading:
            self._reactor.remove_reader(conn.fd)
        if conn.writing:
            self._reactor.remove_writer(conn.fd)
        conn.reading = conn.writing = False
        conn.client.close()
        self._drop_upstream(conn)
        # A free slot may let the listener accept again.
        self._update_accepting()

    def _drop_upstream(self, conn: _Connection) -> None:
        upstream = conn.upstream
        if upstream is None:
            return
        if conn.up_reading:
            self._reactor.remove_reader(conn.upstream_fd)
        if conn.up_writing:
            self._reactor.remove_writer(conn.upstream_fd)
        conn.up_reading = conn.up_writing = False
        upstream.close()
        conn.upstream = None

    # -- timeouts ---------------------------------------------------------------
    def _on_idle(self, conn: _Connection) -> None:
        if conn.state is _State.OPEN and (conn.inbuf or conn.discard) and not conn.outbuf:
            # A request started and never finished (slowloris): say so, then close.
            self._finish(conn, wire.response(408, {"status": "timeout"}))
        else:
            self._drop(conn)

    def _on_hold_timeout(self, conn: _Connection) -> None:
        if conn.state is _State.HELD:
            self._held -= 1
            conn.state = _State.OPEN
            self._log("health stub: an early request waited too long for the app; answered 503")
            self._refuse_held(conn)

    def _refuse_held(self, conn: _Connection) -> None:
        self._finish(conn, self._unavailable(head_only=False, close=True, keep_alive_header=False))

    def _reopen(self, conn: _Connection) -> None:
        self._arm(conn, self._idle_timeout_s, self._on_idle)
        self._flush(conn)

    # -- the stub's side of a connection ------------------------------------------
    def _on_client_read(self, conn: _Connection) -> None:
        if conn.state is _State.PUMP:
            self._pump_from_client(conn)
            return
        try:
            data = conn.client.recv(RECV_CHUNK)
        except _AGAIN:
            return
        except OSError:
            self._drop(conn)
            return
        if conn.state is _State.LINGER:
            conn.lingered += len(data)
            if not data or conn.lingered > LINGER_BYTES:
                self._drop(conn)
            return
        if not data:
            conn.client_eof = True
            if conn.state is _State.OPEN and not conn.outbuf:
                self._drop(conn)
            # A held client that half-closed still wants its answer from the app.
            return
        conn.inbuf += data
        if conn.state is _State.OPEN:
            self._flush(conn)

    def _on_client_write(self, conn: _Connection) -> None:
        if conn.state is _State.PUMP:
            self._pump_to_client(conn)
        else:
            self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        """Send what is queued; when all is sent, take the connection's next step."""
        while True:
            if conn.outbuf:
                try:
                    sent = conn.client.send(conn.outbuf)
                except _AGAIN:
                    return
                except OSError:
                    self._drop(conn)
                    return
                del conn.outbuf[:sent]
                if conn.outbuf:
                    return
            if conn.state is _State.CLOSING:
                self._linger(conn)
                return
            if conn.state is not _State.OPEN:
                return
            if conn.client_eof:
                self._drop(conn)
                return
            self._process(conn)
            if not conn.outbuf:
                return

    def _process(self, conn: _Connection) -> None:
        """Answer the complete requests in the input buffer, in order (no sending)."""
        while conn.state is _State.OPEN and len(conn.outbuf) < MAX_PENDING_OUTPUT:
            if conn.discard:
                skipped = min(conn.discard, len(conn.inbuf))
                del conn.inbuf[:skipped]
                conn.discard -= skipped
                if conn.discard:
                    return
            if self._phase is StubPhase.READY:
                # Whatever comes next on this connection is the app's to answer.
                if not conn.outbuf:
                    self._start_pump(conn)
                return
            wire.skip_empty_lines(conn.inbuf)
            if not conn.inbuf:
                return
            parsed = wire.read_request(conn.inbuf)
            if parsed is None:
                return
            if isinstance(parsed, wire.Reject):
                self._finish(conn, wire.response(parsed.status, {"status": "rejected"}))
                return
            self._answer(conn, parsed)

    def _answer(self, conn: _Connection, request: wire.Request) -> None:
        """Answer, hold or refuse one request whose head starts the input buffer."""
        head_only = request.method == b"HEAD"
        own_path = request.path == self._health_path or (
            self._ready_path is not None and request.path == self._ready_path
        )
        if not own_path and self._phase is StubPhase.STARTING and self._hold:
            if self._held < self._max_held:
                # The head stays in the buffer: the app gets the very bytes sent.
                conn.state = _State.HELD
                self._held += 1
                self._arm(conn, self._hold_timeout_s, self._on_hold_timeout)
                return
            self._log("health stub: too many early requests held; answered 503")
        del conn.inbuf[: request.head_bytes]
        if own_path and request.content_length > MAX_STUB_BODY_BYTES:
            self._finish(conn, wire.response(413, {"status": "rejected"}, head_only=head_only))
            return
        # A chunked body is not decoded: answer, then drain it while closing.
        close = (
            not request.keep_alive
            or request.chunked
            or (request.content_length > MAX_STUB_BODY_BYTES)
        )
        keep_alive_header = not close and not request.http11
        if not own_path and self._phase is StubPhase.SERVING:
            data = wire.response(
                404, {"status": "not found"}, head_only=head_only, close=close,
                keep_alive_header=keep_alive_header,
            )
        elif not own_path:
            data = self._unavailable(
                head_only=head_only, close=close, keep_alive_header=keep_alive_header
            )
        elif request.method not in (b"GET", b"HEAD"):
            data = wire.response(
                405,
                {"status": "method not allowed"},
                head_only=head_only,
                close=close,
                keep_alive_header=keep_alive_header,
                allow="GET, HEAD",
            )
        else:
            status, payload = self._status_for(request.path)
            data = wire.response(
                status,
                payload,
                head_only=head_only,
                close=close,
                keep_alive_header=keep_alive_header,
            )
        if close:
            self._finish(conn, data)
            return
        conn.discard = request.content_length
        conn.outbuf += data
        # A request was answered: the next one gets a fresh idle deadline.
        self._arm(conn, self._idle_timeout_s, self._on_idle)

    def _status_for(self, path: str) -> tuple[int, dict[str, str]]:
        if self._phase is StubPhase.ENDED:
            return 503, {"status": "down", "cause": self._cause}
        if self._phase is StubPhase.SERVING:
            return 200, {"status": "ok"}
        if path == self._health_path:
            return self._starting_status, {"status": "starting"}
        return 503, {"status": "starting"}

    def _unavailable(self, *, head_only: bool, close: bool, keep_alive_header: bool) -> bytes:
        if self._phase is StubPhase.ENDED:
            payload = {"status": "down", "cause": self._cause}
        else:
            payload = {"status": "starting"}
        return wire.response(
            503,
            payload,
            head_only=head_only,
            close=close,
            keep_alive_header=keep_alive_header,
            retry_after_s=RETRY_AFTER_S,
        )

    def _finish(self, conn: _Connection, data: bytes) -> None:
        """Queue a last response; once sent, shut the write side and drain."""
        conn.state = _State.CLOSING
        conn.outbuf += data
        conn.inbuf.clear()
        conn.discard = 0
        self._arm(conn, self._idle_timeout_s, self._on_linger_end)
        self._flush(conn)

    def _linger(self, conn: _Connection) -> None:
        # Closing with unread input makes the kernel send RST, which can destroy
        # the response still in flight: shut the write side and drain a little.
        if conn.client_eof:
            self._drop(conn)
            return
        try:
            conn.client.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.state = _State.LINGER
        self._arm(conn, LINGER_S, self._on_linger_end)

    def _on_linger_end(self, conn: _Connection) -> None:
        self._drop(conn)

    # -- the pump: a connection that now belongs to the app ------------------------
    def _start_pump(self, conn: _Connection) -> None:
        """Pass the connection to the app; connect once the client has bytes for it."""
        conn.state = _State.PUMP
        conn.to_app = conn.inbuf
        conn.inbuf = bytearray()
        if conn.to_app:
            self._disarm(conn)
            self._connect_upstream(conn)
        elif conn.client_eof:
            self._drop(conn)
        else:
            # An idle keep-alive connection: the app gets it only if it is used.
            self._arm(conn, self._idle_timeout_s, self._on_idle)

    def _connect_upstream(self, conn: _Connection) -> None:
        address = self._app_address
        if address is None:
            self._drop(conn)
            return
        family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
        upstream = socket.socket(family, socket.SOCK_STREAM)
        try:
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = upstream.connect_ex(address)
        except OSError:
            code = -1
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            upstream.close()
            self._pump_failed(conn)
            return
        conn.upstream = upstream
        conn.upstream_fd = upstream.fileno()
        conn.connecting = True

    def _pump_failed(self, conn: _Connection) -> None:
        self._log("health stub: could not reach the app for a held request; answered 502")
        self._drop_upstream(conn)
        conn.state = _State.OPEN
        refusal = wire.response(502, {"status": "unreachable"}, retry_after_s=RETRY_AFTER_S)
        self._finish(conn, refusal)

    def _pump_from_client(self, conn: _Connection) -> None:
        try:
            data = conn.client.recv(RECV_CHUNK)
        except _AGAIN:
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            conn.client_eof = True
            if conn.upstream is None:
                self._drop(conn)
            return
        conn.to_app += data
        if conn.upstream is None:
            self._disarm(conn)
            self._connect_upstream(conn)

    def _on_upstream_write(self, conn: _Connection) -> None:
        upstream = conn.upstream
        if upstream is None:
            return
        if conn.connecting:
            if upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._pump_failed(conn)
                return
            conn.connecting = False
        if conn.to_app:
            try:
                sent = upstream.send(conn.to_app)
            except _AGAIN:
                return
            except OSError:
                self._drop(conn)
                return
            del conn.to_app[:sent]
        if not conn.to_app and conn.client_eof and not conn.upstream_shut:
            # Pass the client's half-close on: the app still answers what it got.
            conn.upstream_shut = True
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                self._drop(conn)

    def _on_upstream_read(self, conn: _Connection) -> None:
        upstream = conn.upstream
        if upstream is None:
            return
        try:
            data = upstream.recv(RECV_CHUNK)
        except _AGAIN:
            return
        except OSError:
            data = b""  # reset by the app (or its death): end like a close
        if not data:
            conn.upstream_eof = True
            if not conn.to_client:
                self._drop(conn)
            return
        conn.to_client += data
        self._pump_to_client(conn)

    def _pump_to_client(self, conn: _Connection) -> None:
        if conn.to_client:
            try:
                sent = conn.client.send(conn.to_client)
            except _AGAIN:
                return
            except OSError:
                self._drop(conn)
                return
            del conn.to_client[:sent]
        if not conn.to_client and conn.upstream_eof:
            self._drop(conn)
