"""One client connection of the health stub: its states, its deadline, and its bytes.

Owns: the states a connection goes through and the moves allowed between them
(a table, as h11 keeps its own), reading request heads and writing the stub's
answers, the linger before a close, one deadline per connection, and handing
the connection to its pump (``stub_pump``) once it belongs to the app.
Must not know: the stub's phases, which paths it answers, or how many
connections there are. It asks its server (the ``HealthStub``) what to answer
and tells it of every move, so that the server keeps the counts.
"""

from __future__ import annotations

import enum
import socket

from supervisor import http_wire as wire
from supervisor.stub_pump import RECV_CHUNK, Pump

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional, Protocol

    from supervisor.reactor import Reactor, Timer

    Step = Callable[["Connection"], None]

    class Server(Protocol):
        """What a connection needs from the stub that accepted it (``HealthStub``)."""

        idle_timeout_s: float

        @property
        def app_address(self) -> Optional[tuple[object, ...]]: ...  # None until it is ready
        def answer(self, conn: Connection, request: wire.Request) -> None: ...
        def moved(self, conn: Connection, old: ConnState) -> None: ...  # after each move
        def log(self, text: str) -> None: ...


# Answers queued but unsent on one connection before its requests are no longer read.
MAX_PENDING_OUTPUT = 64 * 1024
# Seconds, and bytes, spent draining a client after the last answer: closing a
# socket with unread input sends RST, which can destroy the answer in flight.
LINGER_S = 2.0
LINGER_BYTES = 256 * 1024
# Retry-After on the stub's 502 and 503 answers: the app may be there in a second.
RETRY_AFTER_S = 1
# Seconds for a request to arrive whole once its first byte has (its head, and the
# small body the stub skips), whatever the idle timeout: a health checker sends
# its few hundred bytes at once, and a slowloris client then holds a connection
# 2 s instead of 10. Platforms' own timeouts start at 1-2 s, so 2 s refuses no one.
HEAD_TIMEOUT_S = 2.0

_AGAIN = (BlockingIOError, InterruptedError)


class ConnState(enum.Enum):
    """What one client connection is doing."""

    OPEN = "open"  # waiting for a request (just accepted, or kept alive after an answer)
    READING = "reading"  # a request has begun and not all of it has come
    HELD = "held"  # an early request waits for the app; its bytes are kept
    CLOSING = "closing"  # the last answer is being written
    LINGER = "linger"  # write side shut; input drained until EOF or the deadline
    PUMP = "pump"  # it belongs to the app: bytes copied both ways
    CLOSED = "closed"  # its sockets are closed


OPEN, READING, HELD, CLOSING, LINGER, PUMP, CLOSED = ConnState
# The states in which the stub reads requests and answers them itself.
SERVED = (OPEN, READING)

# Every move a connection may make; ``Connection.move`` refuses any other.
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    # A request that comes whole in one read is answered from OPEN, without a move.
    OPEN: frozenset({READING, HELD, CLOSING, PUMP, CLOSED}),
    # OPEN again once answered; PUMP: the app became ready meanwhile and gets it.
    READING: frozenset({OPEN, HELD, CLOSING, PUMP, CLOSED}),
    # To the app once it is ready; refused (503) when it is not ready in time.
    HELD: frozenset({PUMP, CLOSING, CLOSED}),
    CLOSING: frozenset({LINGER, CLOSED}),
    LINGER: frozenset({CLOSED}),
    # OPEN: the child died before the connection reached it, so its next request
    # is the stub's again; CLOSING: the app could not be reached (502).
    PUMP: frozenset({OPEN, CLOSING, CLOSED}),
    CLOSED: frozenset(),
}


class StateError(Exception):
    """A move the table does not allow: a bug, which costs the one connection."""


class Connection:
    """One accepted client socket: the stub's requests and answers, then the app's pump."""

    __slots__ = ("action", "client", "client_eof", "deadline", "discard", "due", "fd", "inbuf",
                 "lingered", "outbuf", "pump", "quota", "reactor", "reading", "server", "since",
                 "state", "writing")

    def __init__(self, server: Server, reactor: Reactor, client: socket.socket) -> None:
        self.server = server
        self.reactor = reactor
        self.client = client
        self.fd = client.fileno()
        self.state = OPEN
        self.since = reactor.clock()  # when it entered its state
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.discard = 0  # body bytes of the current request still to be skipped
        self.quota = 0  # while HELD, the most bytes kept in ``inbuf`` for the app
        self.client_eof = False
        self.lingered = 0
        # One timer per connection, moved lazily: re-arming per request must not
        # grow the reactor's heap (a pipelining client sends thousands a second).
        self.deadline: Optional[Timer] = None
        self.due = 0.0
        self.action: Optional[Step] = None
        self.reading = self.writing = False  # registered interest in the client socket
        self.pump: Optional[Pump] = None

    # -- state, steps and the deadline ---------------------------------------------------
    def move(self, new: ConnState) -> None:
        """The one place a connection changes state, checked against the table."""
        old = self.state
        if new not in TRANSITIONS[old]:
            raise StateError(f"a {old.value} connection cannot become {new.value}")
        self.state = new
        self.since = self.reactor.clock()
        self.server.moved(self, old)

    def guard(self, step: Step) -> None:
        """Run one step of a live connection; no input may raise out into the loop."""
        if self.state is CLOSED:
            return  # closed earlier in this batch of events
        try:
            step(self)
            if self.state is not CLOSED:
                self.sync()
        except Exception as error:  # a bug here must cost one connection, not the supervisor
            self.server.log(
                f"health stub: dropped a connection after {type(error).__name__}: {error}"
            )
            self.close()

    def arm(self, delay: float, action: Step) -> None:
        """Run ``action`` after ``delay`` seconds unless re-armed or disarmed before."""
        due = self.reactor.clock() + delay
        self.due = due
        self.action = action
        timer = self.deadline
        if timer is not None:
            if timer.when <= due:
                return  # it fires first and moves itself to the new due time
            timer.cancel()
        self.deadline = self.reactor.call_at(due, self._on_deadline)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.action = None

    def _on_deadline(self) -> None:
        self.deadline = None
        if self.state is CLOSED or self.action is None:
            return
        if self.reactor.clock() < self.due:
            self.deadline = self.reactor.call_at(self.due, self._on_deadline)
            return
        action, self.action = self.action, None
        self.guard(action)

    def close(self) -> None:
        """Close the connection's sockets and tell the server."""
        if self.state is CLOSED:
            return
        self.disarm()
        self.reading = self.reading and self.want(self.fd, False, False)
        self.writing = self.writing and self.want(self.fd, True, False)
        self.client.close()
        if self.pump is not None:
            self.pump.close()
        self.move(CLOSED)

    # -- what the server asks of it -------------------------------------------------------
    def start(self) -> None:
        """Just accepted: read requests, and close if none comes in time.

        The first read is tried at once: a health check's request is usually
        there already, and is answered before any other connection is accepted.
        """
        self.guard(Connection._on_readable)
        if self.state is OPEN and self.action is None:
            self.arm(self.server.idle_timeout_s, Connection.on_idle)

    def hold(self, timeout_s: float, on_timeout: Step, quota: int) -> None:
        """Keep this early request (its head starts ``inbuf``) for the app."""
        self.quota = quota
        self.move(HELD)
        self.arm(timeout_s, on_timeout)

    def respond(self, data: bytes, *, close: bool, skip: int) -> None:
        """Queue the answer to the request whose head was consumed; skip its body."""
        if close:
            self.finish(data)
            return
        self.discard = skip
        self.outbuf += data
        # A request was answered: the next one gets a fresh idle deadline.
        if self.state is READING:
            self.move(OPEN)
        self.arm(self.server.idle_timeout_s, Connection.on_idle)

    def finish(self, data: bytes) -> None:
        """Queue a last answer; once it is sent, shut the write side and drain."""
        self.move(CLOSING)
        self.outbuf += data
        self.inbuf.clear()
        self.discard = 0
        self.arm(self.server.idle_timeout_s, Connection.close)
        self.flush()

    def start_pump(self) -> None:
        """Pass the connection to the app; connect once the client has bytes for it."""
        self.move(PUMP)
        self.pump = pump = Pump(self, self.inbuf)
        self.inbuf = bytearray()
        if pump.to_app:
            pump.connect()
        elif self.client_eof:
            self.close()
        else:
            # An idle keep-alive connection: the app gets it only if it is used.
            self.arm(self.server.idle_timeout_s, Connection.on_idle)

    def reopen(self) -> None:
        """It never reached the app, which is gone: its next request is the stub's."""
        self.pump = None
        self.move(OPEN)
        self.arm(self.server.idle_timeout_s, Connection.on_idle)
        self.flush()

    def unreachable(self) -> None:
        """The app refused the connection meant for it."""
        self.pump = None
        self.server.log("health stub: could not reach the app for a held request; answered 502")
        self.finish(wire.response(502, {"status": "unreachable"}, retry_after_s=RETRY_AFTER_S))

    # -- reading requests and writing answers ------------------------------------------
    def on_idle(self) -> None:
        if self.state is READING and not self.outbuf:
            # A request started and never finished (slowloris): say so, then close.
            self.finish(wire.response(408, {"status": "timeout"}))
        else:
            self.close()

    def _on_readable(self) -> None:
        state = self.state
        size = RECV_CHUNK
        if state is HELD:
            size = min(size, self.quota - len(self.inbuf))
            if size <= 0:
                return
        data = self.take(self.client, size)
        if data is None:
            return
        if state is PUMP and self.pump is not None:
            self.pump.from_client(data)
        elif state is LINGER:
            self.lingered += len(data)
            if not data or self.lingered > LINGER_BYTES:
                self.close()
        elif not data:
            self.client_eof = True
            # A held client that half-closed still wants its answer from the app.
            if state in SERVED and not self.outbuf:
                self.close()
        else:
            self.inbuf += data
            if state in SERVED:
                self.flush()

    def _on_writable(self) -> None:
        if self.state is PUMP and self.pump is not None:
            self.pump.to_client_writable()
        else:
            self.flush()

    def flush(self) -> None:
        """Send what is queued; when all is sent, take the connection's next step."""
        while True:
            if self.outbuf and (not self.give(self.client, self.outbuf) or self.outbuf):
                return
            if self.state is CLOSING:
                self._linger()
                return
            if self.state not in SERVED:
                return
            if self.client_eof:
                self.close()
                return
            self._process()
            if not self.outbuf:
                return

    def _process(self) -> None:
        """Answer the complete requests in the input buffer, in order (no sending)."""
        while self.state in SERVED and len(self.outbuf) < MAX_PENDING_OUTPUT:
            if self.discard:
                skipped = min(self.discard, len(self.inbuf))
                del self.inbuf[:skipped]
                self.discard -= skipped
                if self.discard:
                    self._await_rest()
                    return
            if self.server.app_address is not None:
                # Whatever comes next on this connection is the app's to answer.
                if not self.outbuf:
                    self.start_pump()
                return
            wire.skip_empty_lines(self.inbuf)
            if not self.inbuf:
                return
            parsed = wire.read_request(self.inbuf)
            if parsed is None:
                self._await_rest()
                return
            if isinstance(parsed, wire.Reject):
                self.finish(wire.response(parsed.status, {"status": "rejected"}))
                return
            self.server.answer(self, parsed)

    def _await_rest(self) -> None:
        """A request has begun and not ended: it gets HEAD_TIMEOUT_S in all to arrive."""
        if self.state is OPEN:
            self.move(READING)
            self.arm(min(HEAD_TIMEOUT_S, self.server.idle_timeout_s), Connection.on_idle)

    def _linger(self) -> None:
        # Closing with unread input makes the kernel send RST, which can destroy
        # the answer still in flight: shut the write side and drain a little.
        if self.client_eof:
            self.close()
            return
        try:
            self.client.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.move(LINGER)
        self.arm(LINGER_S, Connection.close)

    # -- sockets and the reactor -----------------------------------------------------------
    def sync(self) -> None:
        """Make the reactor's interest match what the connection can do now."""
        state = self.state
        if state is PUMP and self.pump is not None:
            read, write = self.pump.client_interest()
            self.pump.sync()
        elif state is LINGER:
            read, write = True, False
        elif state is CLOSING:
            read, write = False, bool(self.outbuf)
        elif state is HELD:
            read, write = not self.client_eof and len(self.inbuf) < self.quota, False
        else:
            # Input is parsed as it comes; while answers wait for a slow reader,
            # nothing more is read, so neither buffer grows without bound.
            read, write = not self.client_eof and not self.outbuf, bool(self.outbuf)
        if read != self.reading:
            self.reading = self.want(self.fd, False, read, Connection._on_readable)
        if write != self.writing:
            self.writing = self.want(self.fd, True, write, Connection._on_writable)

    def want(self, fd: int, write: bool, wanted: bool, step: Optional[Step] = None) -> bool:
        """Register (or drop) one interest in ``fd`` with the reactor; returns ``wanted``."""
        if wanted and step is not None:
            add = self.reactor.add_writer if write else self.reactor.add_reader
            add(fd, lambda: self.guard(step))
        elif write:
            self.reactor.remove_writer(fd)
        else:
            self.reactor.remove_reader(fd)
        return wanted

    def take(self, sock: socket.socket, size: int, *, reset_is_end: bool = False
             ) -> Optional[bytes]:
        """Up to ``size`` bytes, b"" at the end, None for none yet or when an error closed us."""
        try:
            return sock.recv(size)
        except _AGAIN:
            return None
        except OSError:
            if reset_is_end:
                return b""
            self.close()
            return None

    def give(self, sock: socket.socket, buffer: bytearray) -> bool:
        """Send what ``sock`` takes of ``buffer``; False when an error closed the connection."""
        try:
            del buffer[: sock.send(buffer)]
        except _AGAIN:
            pass
        except OSError:
            self.close()
            return False
        return True
