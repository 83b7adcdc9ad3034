"""The stub HTTP server that answers on the public socket until the app is ready.

Owns: accepting connections on the listener, the stub's phases (``start``,
``hand_off``, ``mark_serving``, ``take_back``), what the health and ready paths
answer in each phase, which early requests are held for the app, and the
bounds on connections and held requests.
Must not know: processes, signals, readiness detection, configuration parsing
or reports. The main loop decides when the app is ready (``hand_off``) and when
it ended (``take_back``); this module only obeys. One connection's states and
bytes are ``stub_connection``'s; HTTP on the wire is ``http_wire``'s.

It is imported right after the spawn, before the stub's first answer: nothing
here imports ``re``, ``json``, ``typing`` or ``dataclasses``.
"""

from __future__ import annotations

import enum
import errno
import os

from supervisor import http_wire as wire
from supervisor.stub_connection import (
    CLOSED,
    CLOSING,
    HELD,
    LINGER,
    OPEN,
    PUMP,
    READING,
    RETRY_AFTER_S,
    SERVED,
    Connection,
    ConnState,
)

# After the child ended, the callers already waiting get the cause for at most this long.
LINGER_S = 0.2

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import socket
    from typing import Callable, Optional

    from supervisor.reactor import Reactor, Timer

# A body sent to a path the stub answers is read and thrown away up to this size.
MAX_STUB_BODY_BYTES = 64 * 1024
# Bytes of one held request kept for the app; past this the client is simply
# not read (TCP back-pressure), so nothing is lost and memory stays bounded.
MAX_HELD_BYTES = 1024 * 1024
# Bytes held for the app across all connections. Anyone can reach the stub
# while the app starts, and what it holds counts against the container's memory
# limit: 128 held requests of 1 MiB once took the supervisor to 150 MiB. 8 MiB,
# half the supervisor's own 16 MiB budget, still holds eight 1 MiB uploads or
# thousands of ordinary requests; past it, early requests get 503 and Retry-After.
MAX_HELD_TOTAL_BYTES = 8 * 1024 * 1024
# At the connection cap, a connection that has sent nothing yet may be dropped to
# make room only after this long: a client's request comes right behind its
# connection, and a burst of honest clients must not push each other out.
MIN_IDLE_BEFORE_DROP_S = 1.0
# Connections accepted per readable event: fairness with the rest of the loop.
ACCEPT_BATCH = 64
# After EMFILE/ENFILE the listener is left alone this long instead of spinning.
ACCEPT_BACKOFF_S = 0.1


class StubPhase(enum.Enum):
    """Who answers on the socket; the loop moves it with hand_off and take_back."""

    STARTING = "starting"  # the child has not taken the socket yet: the stub answers
    READY = "ready"  # the app accepts; the stub only finishes what it had
    # ``port`` hand-off: the app listens on its own address and the stub keeps
    # its separate health port, answering that the app is up.
    SERVING = "serving"
    ENDED = "ended"  # the child is gone: the stub answers 503 with the cause


class HealthStub:
    """Answers on the public socket while the app cannot, and hands early requests to it.

    At ``max_connections`` open connections, a new one takes the place of the
    oldest that is doing nothing useful (see ``_victim``), so that a health
    check is answered however many slow clients there are. Held requests and
    connections that belong to the app are never dropped: when they fill every
    slot, new clients wait in the kernel's backlog.
    Early requests are held up to ``max_held`` of them and ``max_held_bytes``
    in all; past either, they get 503 with Retry-After at once.
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
        max_held_bytes: int = MAX_HELD_TOTAL_BYTES,
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
        self._max_held_bytes = max_held_bytes
        self._held_bytes = 0  # the quotas of the held connections
        self._warned: set[str] = set()  # a warning under attack is said once, not per client
        self._hold_timeout_s = hold_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.log = log
        self._on_app_accepts = on_app_accepts
        self._phase = StubPhase.STARTING
        self._cause = ""
        self._app_address: Optional[tuple[object, ...]] = None
        # Every live connection by its state, each in the order it entered it.
        self._by_state: dict[ConnState, dict[int, Connection]] = {s: {} for s in ConnState}
        self._count = 0
        self._accepting = False
        self._started = False
        self._paused = False
        self._backoff: Optional[Timer] = None
        self._recheck: Optional[Timer] = None  # at the cap: when an idle one may be dropped

    # -- the loop's interface ----------------------------------------------
    @property
    def phase(self) -> StubPhase:
        return self._phase

    @property
    def connection_count(self) -> int:
        return self._count

    @property
    def held_count(self) -> int:
        return len(self._by_state[HELD])

    @property
    def incomplete_count(self) -> int:
        """Connections whose request head has begun but not ended."""
        return len(self._by_state[READING])

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
        self._release_held(Connection.start_pump)
        for state in SERVED:
            for conn in list(self._by_state[state].values()):
                conn.guard(Connection.flush)

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
        self._release_held(self._refuse_held)

    def take_back(self, cause: str) -> None:
        """The child ended: accept again at once and answer 503 with the cause."""
        self._phase = StubPhase.ENDED
        self._cause = cause
        self._update_accepting()
        self._release_held(self._refuse_held)
        for conn in list(self._by_state[PUMP].values()):
            if conn.pump is not None and conn.pump.app is None:
                conn.guard(Connection.reopen)

    def linger(self, listener: Optional[socket.socket], seconds: float = LINGER_S) -> None:
        """After ``take_back``: answer the callers already connected or waiting in
        the backlog (for at most ``seconds``), then close every connection."""
        self._reactor.run_until(lambda: self._idle(listener), self._reactor.clock() + seconds)
        self.close()

    def _idle(self, listener: Optional[socket.socket]) -> bool:
        """No open connection and none waiting in the listener's backlog."""
        if self._count or listener is None:
            return self._count == 0
        import select

        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        """Close every connection; the listener stays open (the loop owns it)."""
        self._started = False
        self._update_accepting()
        for timer in (self._backoff, self._recheck):
            if timer is not None:
                timer.cancel()
        self._backoff = self._recheck = None
        for connections in self._by_state.values():
            for conn in list(connections.values()):
                conn.close()

    # -- what connections ask of the stub ------------------------------------------
    @property
    def app_address(self) -> Optional[tuple[object, ...]]:
        """Where the app listens, once it is ready; None while the stub answers."""
        return self._app_address if self._phase is StubPhase.READY else None

    def moved(self, conn: Connection, old: ConnState) -> None:
        """Keep the index by state and the held bytes; a closed connection frees a slot."""
        del self._by_state[old][conn.fd]
        if old is HELD:
            self._held_bytes -= conn.quota
        if conn.state is HELD:
            self._held_bytes += conn.quota
        if conn.state is CLOSED:
            self._count -= 1
        else:
            self._by_state[conn.state][conn.fd] = conn
        # A free slot, or a connection that may now be dropped for a new one.
        self._update_accepting()

    def answer(self, conn: Connection, request: wire.Request) -> None:
        """Answer, hold or refuse one request whose head starts ``conn.inbuf``."""
        own_path = request.path in (self._health_path, self._ready_path)
        if not own_path and self._phase is StubPhase.STARTING and self._hold:
            # What this request may keep: its head and body, or the most for one
            # request when its length is not known (chunked).
            wanted = request.head_bytes + request.content_length
            quota = MAX_HELD_BYTES if request.chunked else min(MAX_HELD_BYTES, wanted)
            if (len(self._by_state[HELD]) < self._max_held
                    and self._held_bytes + quota <= self._max_held_bytes):
                # The head stays in the buffer: the app gets the very bytes sent.
                conn.hold(self._hold_timeout_s, self._on_hold_timeout, quota)
                return
            self._warn_once("held", f"health stub: {self._max_held} early requests or "
                            f"{self._max_held_bytes >> 20} MiB held for the app; "
                            "answering 503 to more")
        del conn.inbuf[: request.head_bytes]
        # A chunked body is not decoded, nor a large one read: answer, then drain
        # it while closing.
        large = request.content_length > MAX_STUB_BODY_BYTES
        close = not request.keep_alive or request.chunked or large
        retry_after_s, allow = 0, ""
        if own_path and large:
            status, payload = 413, {"status": "rejected"}
        elif not own_path and self._phase is StubPhase.SERVING:
            status, payload = 404, {"status": "not found"}
        elif not own_path:
            status, payload, retry_after_s = 503, self._unavailable(), RETRY_AFTER_S
        elif request.method not in (b"GET", b"HEAD"):
            status, payload, allow = 405, {"status": "method not allowed"}, "GET, HEAD"
        else:
            status, payload = self._status_for(request.path)
        data = wire.response(
            status, payload, head_only=request.method == b"HEAD", close=close,
            keep_alive_header=not close and not request.http11,
            retry_after_s=retry_after_s, allow=allow,
        )
        conn.respond(data, close=close, skip=request.content_length)

    # -- held requests ----------------------------------------------------------------
    def _release_held(self, step: Callable[[Connection], None]) -> None:
        """Every held request leaves the hold by ``step``: to the app, or a 503."""
        for conn in list(self._by_state[HELD].values()):
            conn.guard(step)

    def _on_hold_timeout(self, conn: Connection) -> None:
        if conn.state is HELD:
            self.log("health stub: an early request waited too long for the app; answered 503")
            self._refuse_held(conn)

    def _refuse_held(self, conn: Connection) -> None:
        conn.finish(wire.response(503, self._unavailable(), retry_after_s=RETRY_AFTER_S))

    def _warn_once(self, what: str, text: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            self.log(text)

    def _status_for(self, path: str) -> tuple[int, dict[str, str]]:
        if self._phase is StubPhase.ENDED:
            return 503, {"status": "down", "cause": self._cause}
        if self._phase is StubPhase.SERVING:
            return 200, {"status": "ok"}
        if path == self._health_path:
            return self._starting_status, {"status": "starting"}
        return 503, {"status": "starting"}

    def _unavailable(self) -> dict[str, str]:
        if self._phase is StubPhase.ENDED:
            return {"status": "down", "cause": self._cause}
        return {"status": "starting"}

    # -- accepting ------------------------------------------------------------
    def _update_accepting(self) -> None:
        room = self._count < self._max_connections or self._victim() is not None
        want = (
            self._started
            and not self._paused
            and self._phase is not StubPhase.READY
            and room
            and self._backoff is None
        )
        if self._started and not room and self._recheck is None and self._by_state[OPEN]:
            # Full of connections too young to drop: look again when the oldest is not.
            oldest = next(iter(self._by_state[OPEN].values()))
            self._recheck = self._reactor.call_at(
                oldest.since + MIN_IDLE_BEFORE_DROP_S, self._end_recheck
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
            if self._count >= self._max_connections and self._victim() is None:
                break
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log(f"health stub: accept failed ({error.strerror}); pausing")
                    self._backoff = self._reactor.call_later(ACCEPT_BACKOFF_S, self._end_backoff)
                # Otherwise (ECONNABORTED...) the client gave up before we got to it.
                break
            try:
                client.setblocking(False)
            except OSError:
                client.close()
                continue
            if self._count >= self._max_connections:
                self._make_room()
            conn = Connection(self, self._reactor, client)
            self._by_state[conn.state][conn.fd] = conn
            self._count += 1
            conn.start()
        self._update_accepting()

    def _victim(self) -> Optional[Connection]:
        """The connection to drop for a new one: the oldest in the least useful state.

        First one already answered and draining, then one whose request has
        not all come (slowloris), then one not reading its answer, then one
        that has sent nothing for a while. Held requests and connections that
        belong to the app are never dropped.
        """
        for state in (LINGER, READING, CLOSING):
            for conn in self._by_state[state].values():
                return conn
        for conn in self._by_state[OPEN].values():
            if self._reactor.clock() - conn.since >= MIN_IDLE_BEFORE_DROP_S:
                return conn
            break
        return None

    def _make_room(self) -> None:
        victim = self._victim()
        if victim is not None:
            self._warn_once("cap", f"health stub: {self._max_connections} connections open; "
                            "dropping the oldest idle or incomplete ones to make room")
            victim.close()

    def _end_backoff(self) -> None:
        self._backoff = None
        self._update_accepting()

    def _end_recheck(self) -> None:
        self._recheck = None
        self._update_accepting()
