"""The stub HTTP server and socket hand-off, over real sockets, a real Reactor and real uvicorn."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.health import HealthStub, StubPhase
from supervisor.listener import bind_listener, loopback_address
from supervisor.reactor import Reactor
from supervisor.readiness import descendants, socket_in_epoll
from supervisor.stub_connection import CLOSED, TRANSITIONS, Connection, ConnState, StateError
from tests.conftest import wait_for

CHILDREN = Path(__file__).resolve().parent.parent / "children"


# -- harness -------------------------------------------------------------------
class LoopThread:
    """Runs a Reactor in a background thread; ``call`` runs a function inside it."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.calls: queue.Queue[Callable[[], None]] = queue.Queue()
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.reactor.run_once(0.005)
                while True:
                    try:
                        self.calls.get_nowait()()
                    except queue.Empty:
                        break
        except BaseException as error:  # surfaced by stop(): the stub must never raise
            self.errors.append(error)

    def call(self, function: Callable[[], Any]) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(function())
            finally:
                done.set()

        self.calls.put(run)
        assert done.wait(5), "the loop thread did not run the call"
        return box[0]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


class Stub:
    """A bound listener, a reactor in a thread and a started HealthStub."""

    def __init__(self, host: str = "127.0.0.1", **options: Any) -> None:
        self.listener = bind_listener(host, 0)
        self.port = self.listener.getsockname()[1]
        self.host = host
        self.reactor = Reactor()
        self.logs: list[str] = []
        self.stub = HealthStub(self.reactor, self.listener, log=self.logs.append, **options)
        self.stub.start()
        self.loop = LoopThread(self.reactor)

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def close(self) -> None:
        self.loop.stop()
        self.stub.close()
        self.reactor.close()
        self.listener.close()


@pytest.fixture
def make_stub() -> Iterator[Callable[..., Stub]]:
    made: list[Stub] = []

    def make(**options: Any) -> Stub:
        stub = Stub(**options)
        made.append(stub)
        return stub

    yield make
    for stub in made:
        stub.close()


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(sock: socket.socket, buffer: bytearray, head_only: bool = False) -> Response:
    """Read one response (Content-Length framed) from ``sock``; leftovers stay in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {bytes(buffer)!r}")
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    del buffer[: len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers["content-length"])
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return Response(status, headers, body)


def request(stub: Stub, raw: bytes, head_only: bool = False, timeout: float = 5.0) -> Response:
    with stub.connect(timeout) as sock:
        sock.sendall(raw)
        return read_response(sock, bytearray(), head_only)


def get(stub: Stub, path: str, timeout: float = 5.0) -> Response:
    return request(stub, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), timeout=timeout)


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"not closed in time; got {data[:200]!r}")


class Uvicorn:
    """``python -m uvicorn app_slow_start:app --fd N`` on a listener we bound."""

    def __init__(self, listener: socket.socket, *args: str, startup_s: float = 0.0) -> None:
        env = dict(os.environ, APP_STARTUP_S=str(startup_s), PYTHONUNBUFFERED="1")
        fd = listener.fileno()
        self.inode = os.fstat(fd).st_ino
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app_slow_start:app",
                "--app-dir",
                str(CHILDREN),
                "--fd",
                str(fd),
                "--log-level",
                "warning",
                *args,
            ],
            pass_fds=(fd,),
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ready(self) -> bool:
        return socket_in_epoll(descendants(self.process.pid), self.inode)

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(self.ready, timeout=max(timeout, 30), what="uvicorn to register the socket")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def uvicorns() -> Iterator[list[Uvicorn]]:
    started: list[Uvicorn] = []
    yield started
    for server in started:
        server.kill()


# -- the stub's own answers ----------------------------------------------------------
def test_health_answers_200_json_while_starting(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    response = get(stub, "/healthz")
    assert response.status == 200
    assert response.json() == {"status": "starting"}
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)
    assert stub.stub.phase is StubPhase.STARTING


def test_health_path_with_query_and_absolute_form(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    assert get(stub, "/healthz?probe=1").status == 200
    assert get(stub, "http://example.com/healthz").status == 200


def test_head_sends_headers_without_body(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        buffer = bytearray()
        head = read_response(sock, buffer, head_only=True)
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) > 0
        # The next response starts right where the head ended: no stray body bytes.
        assert read_response(sock, buffer).json() == {"status": "starting"}


def test_keep_alive_serves_two_requests_on_one_connection(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        buffer = bytearray()
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            response = read_response(sock, buffer)
            assert response.status == 200
            assert "connection" not in response.headers


def test_pipelined_requests_are_answered_in_order(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(ready_path="/ready")
    with stub.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\nGET /ready HTTP/1.1\r\n\r\n" * 50)
        buffer = bytearray()
        statuses = [read_response(sock, buffer).status for _ in range(100)]
    assert statuses == [200, 503] * 50


def test_http10_closes_unless_keep_alive_is_asked(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = read_until_closed(sock, time.monotonic() + 5)
        assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in data
    with stub.connect() as sock:
        buffer = bytearray()
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = read_response(sock, buffer)
            assert response.status == 200
            assert response.headers["connection"] == "keep-alive"


def test_connection_close_is_honoured(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = read_until_closed(sock, time.monotonic() + 5)
    assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in data


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
        b"GARBAGE\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET  /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nName : space before colon\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nA: b\x00c\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_malformed_requests_get_400(make_stub: Callable[..., Stub], raw: bytes) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        sock.sendall(raw)
        data = read_until_closed(sock, time.monotonic() + 5)
    assert data.startswith(b"HTTP/1.1 400 ") and b"Connection: close\r\n" in data
    assert get(stub, "/healthz").status == 200


def test_http2_preface_gets_505(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert read_until_closed(sock, time.monotonic() + 5).startswith(b"HTTP/1.1 505 ")


def test_nine_kib_of_headers_get_431(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 9 * 1024 + b"\r\n\r\n")
        data = read_until_closed(sock, time.monotonic() + 5)
    assert data.startswith(b"HTTP/1.1 431 ")
    with stub.connect() as sock:
        sock.sendall(b"GET /" + b"a" * 9 * 1024 + b" HTTP/1.1\r\n\r\n")
        assert read_until_closed(sock, time.monotonic() + 5).startswith(b"HTTP/1.1 414 ")


def test_small_body_on_health_path_is_skipped_and_large_one_gets_413(
    make_stub: Callable[..., Stub],
) -> None:
    stub = make_stub()
    with stub.connect() as sock:
        buffer = bytearray()
        sock.sendall(b"POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert read_response(sock, buffer).status == 405
        sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert read_response(sock, buffer).status == 200
    with stub.connect() as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000)
        assert read_until_closed(sock, time.monotonic() + 5).startswith(b"HTTP/1.1 413 ")


def test_idle_connection_is_closed(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(idle_timeout_s=0.3)
    with stub.connect() as sock:
        assert read_until_closed(sock, time.monotonic() + 10) == b""
    wait_for(lambda: stub.stub.connection_count == 0, timeout=30, what="connection_count == 0")


def test_starting_status_503(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(starting_status=503)
    response = get(stub, "/healthz")
    assert response.status == 503 and response.json() == {"status": "starting"}


def test_ready_path_answers_503_while_starting(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(ready_path="/ready")
    response = get(stub, "/ready")
    assert response.status == 503 and response.json() == {"status": "starting"}
    assert get(stub, "/healthz").status == 200


def test_after_take_back_both_paths_answer_503_with_the_cause(
    make_stub: Callable[..., Stub],
) -> None:
    stub = make_stub(ready_path="/ready")
    stub.loop.call(lambda: stub.stub.take_back("oom_killed"))
    for path in ("/healthz", "/ready"):
        response = get(stub, path)
        assert response.status == 503
        assert response.json() == {"status": "down", "cause": "oom_killed"}
    other = get(stub, "/anything")
    assert other.status == 503 and other.headers["retry-after"] == "1"
    assert stub.stub.phase is StubPhase.ENDED


def test_ipv6_listener_answers(make_stub: Callable[..., Stub]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        stub = make_stub(host="::1")
    except OSError:
        pytest.skip("::1 cannot be bound here")
    assert get(stub, "/healthz").status == 200


def test_listener_options() -> None:
    with bind_listener("127.0.0.1", 0) as listener:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert not listener.get_inheritable()
        assert not listener.getblocking()
        assert loopback_address(listener) == listener.getsockname()
        with pytest.raises(OSError):
            bind_listener("127.0.0.1", listener.getsockname()[1])
    with bind_listener("0.0.0.0", 0) as wildcard:
        assert loopback_address(wildcard)[0] == "127.0.0.1"


# -- a connection's states ------------------------------------------------------------
def test_every_state_can_close_and_a_closed_connection_stays_closed() -> None:
    for state, allowed in TRANSITIONS.items():
        assert (CLOSED in allowed) is (state is not CLOSED), state
    assert TRANSITIONS[CLOSED] == frozenset()
    reached, frontier = {ConnState.OPEN}, [ConnState.OPEN]
    while frontier:
        for state in TRANSITIONS[frontier.pop()] - reached:
            reached.add(state)
            frontier.append(state)
    assert reached == set(ConnState), "a state no connection can reach"


class _Server:
    """The least a connection needs from its stub, recording what it is told."""

    idle_timeout_s = 10.0
    app_address = None

    def __init__(self) -> None:
        self.moves: list[tuple[ConnState, ConnState]] = []
        self.logs: list[str] = []

    def answer(self, conn: Connection, request: Any) -> None:
        conn.respond(b"", close=True, skip=0)

    def moved(self, conn: Connection, old: ConnState) -> None:
        self.moves.append((old, conn.state))

    def log(self, text: str) -> None:
        self.logs.append(text)


def test_a_move_the_table_refuses_costs_only_that_connection() -> None:
    reactor = Reactor()
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        server = _Server()
        conn = Connection(server, reactor, ours)
        with pytest.raises(StateError):
            conn.move(ConnState.LINGER)  # an open connection has sent no answer yet
        conn.guard(lambda c: c.move(ConnState.LINGER))
        assert conn.state is CLOSED and ours.fileno() == -1
        assert server.moves == [(ConnState.OPEN, CLOSED)]
        assert "StateError" in server.logs[0]
        assert theirs.recv(10) == b""  # the client sees a close, and that is all
    finally:
        ours.close()
        theirs.close()
        reactor.close()


# -- bad input at volume ----------------------------------------------------------------
_VALID = [
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    b"HEAD /healthz HTTP/1.0\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
    b"GET /other HTTP/1.1\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 2))
        if action == 0:
            data[position:position] = draw(st.binary(min_size=1, max_size=20))
        elif action == 1:
            del data[position : position + draw(st.integers(1, 10))]
        else:
            data[position:position] = draw(
                st.sampled_from(
                    [b"\r\n", b"\n", b"\r", b" ", b":", b"\x00", b"\r\n\r\n", b"\xff", b"HTTP/1.1"]
                )
            )
    return bytes(data)


_header = st.tuples(st.text(max_size=20), st.text(max_size=40)).map(
    lambda pair: f"{pair[0]}: {pair[1]}\r\n".encode("utf-8", "surrogatepass")
)
_structured = st.builds(
    lambda method, path, version, headers, body: (
        f"{method} {path} {version}\r\n".encode("utf-8", "surrogatepass")
        + b"".join(headers)
        + b"\r\n"
        + body
    ),
    st.sampled_from(["GET", "HEAD", "POST", "", "G\x00T", "get", "OPTIONS"]) | st.text(max_size=8),
    st.sampled_from(["/healthz", "/", "*", "/x?y=%00"]) | st.text(max_size=30),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "http/1.1", "HTTP/9"]),
    st.lists(_header, max_size=5),
    st.binary(max_size=50),
)
_any_request = st.binary(max_size=400) | _mutated() | _structured

REQUESTS_PER_EXAMPLE = 50
EXAMPLES = 200


def test_random_and_malformed_requests_never_break_the_stub(
    make_stub: Callable[..., Stub],
) -> None:
    # Early requests are refused at once here so that every answer is immediate.
    stub = make_stub(hold_early_requests=False, idle_timeout_s=2.0)
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(_any_request, min_size=REQUESTS_PER_EXAMPLE, max_size=REQUESTS_PER_EXAMPLE))
    def run(payloads: list[bytes]) -> None:
        nonlocal sent
        sockets = []
        try:
            for payload in payloads:
                sock = stub.connect()
                sockets.append(sock)
                if payload:
                    sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                sent += 1
            deadline = time.monotonic() + 10
            for sock in sockets:
                answer = read_until_closed(sock, deadline)
                assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:100]
        finally:
            for sock in sockets:
                sock.close()

    run()
    assert sent >= 10_000
    assert get(stub, "/healthz").status == 200
    wait_for(lambda: stub.stub.connection_count == 0, timeout=30, what="connection_count == 0")
    assert not [line for line in stub.logs if "dropped a connection" in line]


def test_slowloris_is_cut_off_while_health_answers(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(idle_timeout_s=1.0)
    slow = stub.connect()
    try:
        started = time.monotonic()
        cut_after = None
        pace = selectors.DefaultSelector()
        pace.register(slow, selectors.EVENT_READ)
        trickle = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        for index, byte in enumerate(trickle):
            # Wait 100 ms between bytes, waking at once if the stub answers or closes.
            if pace.select(0.1):
                cut_after = time.monotonic() - started
                break
            try:
                slow.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_after = time.monotonic() - started
                break
            if index % 3 == 0:
                assert get(stub, "/healthz").status == 200
        pace.close()
        assert cut_after is not None, "the slow head was never cut off"
        answer = read_until_closed(slow, time.monotonic() + 5)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    finally:
        slow.close()
    assert get(stub, "/healthz").status == 200


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_two_thousand_connections_at_once(make_stub: Callable[..., Stub]) -> None:
    count = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 3 * count + 256) if hard != resource.RLIM_INFINITY else 3 * count + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    stub = make_stub(idle_timeout_s=20.0)
    assert get(stub, "/healthz").status == 200  # warm up before measuring
    before = _rss_bytes()
    request_bytes = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    selector = selectors.DefaultSelector()
    answers: dict[int, bytes] = {}
    sockets: dict[int, socket.socket] = {}
    try:
        for index in range(count):
            # Each client sends its request as soon as it is connected, as health
            # checkers do. (At the cap, one that stays silent for a while may be
            # dropped to make room: test_at_the_cap_a_silent_connection_makes_room.)
            sock = socket.create_connection(("127.0.0.1", stub.port), timeout=10)
            sock.sendall(request_bytes)
            sock.setblocking(False)
            sockets[index] = sock
            answers[index] = b""
            selector.register(sock, selectors.EVENT_READ, index)
        open_count = count
        deadline = time.monotonic() + 60
        while open_count and time.monotonic() < deadline:
            for key, _ in selector.select(0.5):
                index = key.data
                sock = sockets[index]
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                answers[index] += chunk
                if not chunk:
                    selector.unregister(sock)
                    sock.close()
                    open_count -= 1
        assert open_count == 0, f"{open_count} connections neither answered nor closed"
        answered = sum(1 for data in answers.values() if data.startswith(b"HTTP/1.1 200 "))
        assert answered == count
        assert get(stub, "/healthz").status == 200
        grown = _rss_bytes() - before
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown} bytes"
        wait_for(lambda: stub.stub.connection_count == 0, timeout=30, what="connection_count == 0")
    finally:
        selector.close()
        for sock in sockets.values():
            sock.close()


def closed_by_the_stub(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True when the stub closes ``sock`` (EOF, or a reset) within ``timeout``."""
    try:
        read_until_closed(sock, time.monotonic() + timeout)
    except AssertionError:
        return False
    return True


def test_at_the_cap_an_incomplete_head_makes_room_for_a_health_check(
    make_stub: Callable[..., Stub],
) -> None:
    stub = make_stub(max_connections=2, idle_timeout_s=60)
    slow: list[socket.socket] = []
    try:
        # One after the other, so that which is the oldest incomplete head is
        # not left to the order in which one wake-up handles both.
        for count in (1, 2):
            slow.append(stub.connect())
            slow[-1].sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            wait_for(lambda expected=count: stub.stub.incomplete_count == expected,
                     timeout=30, what=f"{count} incomplete heads")
        assert get(stub, "/healthz").status == 200
        assert closed_by_the_stub(slow[0])  # the oldest made room
        slow[1].sendall(b"a\r\n\r\n")  # the other one is still served
        assert read_response(slow[1], bytearray()).status == 200
    finally:
        for sock in slow:
            sock.close()


def test_at_the_cap_a_silent_connection_makes_room(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(max_connections=1, idle_timeout_s=60)
    with stub.connect() as silent:
        wait_for(lambda: stub.stub.connection_count == 1, timeout=30, what="connection_count == 1")
        # Once it has sent nothing for a while (MIN_IDLE_BEFORE_DROP_S).
        assert get(stub, "/healthz", timeout=10).status == 200
        assert closed_by_the_stub(silent)


def test_at_the_cap_held_requests_are_never_dropped(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(max_connections=1, hold_timeout_s=1.0, idle_timeout_s=60)
    with stub.connect() as held:
        held.sendall(b"GET /early HTTP/1.1\r\n\r\n")
        wait_for(lambda: stub.stub.held_count == 1, timeout=30, what="held_count == 1")
        # The health check waits in the backlog until the hold ends, then is answered.
        assert get(stub, "/healthz", timeout=10).status == 200
        response = read_response(held, bytearray())
        assert response.status == 503 and response.headers["retry-after"] == "1"


def test_a_head_that_never_ends_is_cut_before_the_idle_timeout(
    make_stub: Callable[..., Stub],
) -> None:
    stub = make_stub(idle_timeout_s=60)
    with stub.connect() as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        answer = b""
        deadline = time.monotonic() + 15  # well inside the 60 s idle timeout
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and not answer:
                slow.sendall(b"X")  # bytes keep coming, the head never ends
                slow.settimeout(0.1)
                with contextlib.suppress(socket.timeout):
                    answer = slow.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer


# -- early requests ---------------------------------------------------------------------
def test_early_request_held_past_timeout_gets_503_retry_after(
    make_stub: Callable[..., Stub],
) -> None:
    stub = make_stub(hold_timeout_s=0.3)
    with stub.connect() as sock:
        sock.sendall(b"GET /early HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: stub.stub.held_count == 1, timeout=30, what="held_count == 1")
        response = read_response(sock, bytearray())
    assert response.status == 503 and response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"
    assert stub.stub.held_count == 0


def test_early_requests_beyond_max_held_get_503_at_once(make_stub: Callable[..., Stub]) -> None:
    stub = make_stub(max_held=1, hold_timeout_s=30)
    with stub.connect() as first:
        first.sendall(b"GET /early HTTP/1.1\r\n\r\n")
        wait_for(lambda: stub.stub.held_count == 1, timeout=30, what="held_count == 1")
        response = get(stub, "/second")
        assert response.status == 503 and "retry-after" in response.headers
        assert stub.stub.held_count == 1  # answered while the first is still held


def test_held_bytes_are_capped_across_connections(make_stub: Callable[..., Stub]) -> None:
    # Room for two 1 MiB requests and a few small ones.
    stub = make_stub(max_held_bytes=2 * 1024 * 1024 + 4096, hold_timeout_s=30)
    upload = b"POST /upload HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n"
    held = [stub.connect(), stub.connect()]
    try:
        for sock in held:
            sock.sendall(upload)
        wait_for(lambda: stub.stub.held_count == 2, timeout=30, what="held_count == 2")
        response = request(stub, upload)
        assert response.status == 503 and response.headers["retry-after"] == "1"
        assert stub.stub.held_count == 2
        # The cap is in bytes: a small request still fits.
        small = stub.connect()
        held.append(small)
        small.sendall(b"GET /early HTTP/1.1\r\n\r\n")
        wait_for(lambda: stub.stub.held_count == 3, timeout=30, what="held_count == 3")
    finally:
        for sock in held:
            sock.close()


def test_early_requests_rejected_at_once_when_holding_is_off(
    make_stub: Callable[..., Stub],
) -> None:
    stub = make_stub(hold_early_requests=False)
    response = get(stub, "/early")
    assert response.status == 503 and response.headers["retry-after"] == "1"


def test_held_request_is_answered_by_the_app_after_hand_off(
    make_stub: Callable[..., Stub], uvicorns: list[Uvicorn]
) -> None:
    stub = make_stub(ready_path="/ready")
    early = stub.connect(timeout=20)
    posted = stub.connect(timeout=20)
    keep_alive = stub.connect(timeout=20)
    try:
        early.sendall(b"GET /early HTTP/1.1\r\nHost: t\r\n\r\n")
        posted.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        posted.sendall(b"x" * 100_000)
        buffer = bytearray()
        keep_alive.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert read_response(keep_alive, buffer).json() == {"status": "starting"}
        wait_for(lambda: stub.stub.held_count == 2, timeout=30, what="held_count == 2")
        server = Uvicorn(stub.listener, startup_s=0.5)
        uvicorns.append(server)
        server.wait_ready()
        stub.loop.call(lambda: stub.stub.hand_off(loopback_address(stub.listener)))
        answer = read_response(early, bytearray())
        assert answer.status == 200
        assert answer.json()["app"] is True and answer.json()["path"] == "/early"
        upload = read_response(posted, bytearray()).json()
        assert upload["path"] == "/upload" and upload["body_bytes"] == 100_000
        # The stub's keep-alive connection now reaches the app too.
        keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(keep_alive, buffer).json()["app"] is True
        # New connections go to the app directly, every path included.
        for path in ("/healthz", "/ready", "/anything"):
            assert get(stub, path, timeout=10).json()["path"] == path
        assert stub.stub.phase is StubPhase.READY
    finally:
        for sock in (early, posted, keep_alive):
            sock.close()


def test_a_held_request_reaches_an_app_on_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.setblocking(False)
    reactor = Reactor()
    stub = HealthStub(reactor, listener)
    stub.start()
    loop = LoopThread(reactor)
    seen: list[bytes] = []

    def app() -> None:
        # The app takes the shared socket, as a server given --fd does.
        with socket.socket(fileno=os.dup(listener.fileno())) as shared:
            wait_for(lambda: bool(select.select([shared], [], [], 0.05)[0]),
                     timeout=30, what="the shared socket to become readable")
            conn, _ = shared.accept()
            with conn:
                conn.setblocking(True)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                seen.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfrom the app")

    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(10)
        client.connect(path)
        client.sendall(b"GET /early HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: stub.held_count == 1, timeout=30, what="stub.held_count == 1")
        server = threading.Thread(target=app, daemon=True)
        server.start()
        loop.call(lambda: stub.hand_off((path,)))
        response = read_response(client, bytearray())
        assert response.status == 200 and response.body == b"from the app"
        assert seen == [b"GET /early HTTP/1.1\r\nHost: t\r\n\r\n"]
        server.join(10)
    finally:
        client.close()
        loop.stop()
        stub.close()
        reactor.close()
        listener.close()


def test_sigkilled_child_backlog_is_answered_and_nothing_refused(
    make_stub: Callable[..., Stub], uvicorns: list[Uvicorn]
) -> None:
    stub = make_stub()
    server = Uvicorn(stub.listener)
    uvicorns.append(server)
    server.wait_ready()
    stub.loop.call(lambda: stub.stub.hand_off(loopback_address(stub.listener)))

    outcomes: dict[str, int] = {"refused": 0, "reset": 0, "app": 0, "stub": 0, "other": 0}
    stop = threading.Event()

    def client_loop() -> None:
        while not stop.is_set():
            try:
                with stub.connect(timeout=5) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    body = read_response(sock, bytearray())
                outcomes["app" if body.status == 200 else "stub"] += 1
            except ConnectionRefusedError:
                outcomes["refused"] += 1
            except (ConnectionResetError, ConnectionError, socket.timeout):
                outcomes["reset"] += 1
            except (OSError, KeyError, ValueError):
                outcomes["other"] += 1

    clients = threading.Thread(target=client_loop, daemon=True)
    clients.start()
    waiting: list[socket.socket] = []
    try:
        wait_for(lambda: outcomes["app"] >= 20, timeout=30, what="outcomes['app'] >= 20")
        server.kill()
        # Between the child's death and take_back, clients queue in the backlog.
        for _ in range(20):
            sock = stub.connect()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            waiting.append(sock)
        stub.loop.call(lambda: stub.stub.take_back("killed"))
        for sock in waiting:
            response = read_response(sock, bytearray())
            assert response.status == 503
            assert response.json() == {"status": "down", "cause": "killed"}
        wait_for(lambda: outcomes["stub"] >= 20, timeout=30, what="outcomes['stub'] >= 20")
    finally:
        stop.set()
        clients.join(10)
        for sock in waiting:
            sock.close()
    print(f"\nclient loop across the kill: {outcomes}")
    assert outcomes["refused"] == 0 and outcomes["other"] == 0, outcomes
