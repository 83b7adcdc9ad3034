"""The platform's health check sent to real servers on 127.0.0.1, and what it decided."""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Optional

import pytest

from supervisor.config import HealthCheckSpec
from supervisor.prober import PlatformHealthCheck
from supervisor.verdict import CheckState, HealthCheckResult, verdict_text

# Probes every 0.1 s; a timeout that a loaded machine still meets.
FAST = {"interval_s": 0.1, "timeout_s": 0.5}
Address = tuple[str, int]


class Answers:
    """What the test server answers; changed by the test while it runs."""

    def __init__(self, status: int = 200, body: bytes = b"ok\n",
                 headers: Optional[dict[str, str]] = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {"Content-Type": "text/plain"}
        self.paths: list[str] = []


Served = tuple[Address, Answers]


@pytest.fixture
def http_server() -> Iterator[Served]:
    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answers.paths.append(self.path)
            self.send_response(answers.status)
            for name, value in answers.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answers.body)))
            self.end_headers()
            self.wfile.write(answers.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", int(server.server_address[1])), answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def silent_server() -> Iterator[Address]:
    """Listens and never accepts: the kernel completes the handshake, nobody answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield "127.0.0.1", int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> Address:
    """A port nobody listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1", int(sock.getsockname()[1])


def spec(protocol: str = "http", path: str = "/healthz", healthy: int = 1,
         unhealthy: int = 3, grace_s: float = 0.0, **timing: float) -> HealthCheckSpec:
    values = {**FAST, **timing}
    return HealthCheckSpec(protocol, path if protocol == "http" else "", values["interval_s"],
                           values["timeout_s"], healthy, unhealthy, grace_s)


def run_until(check: PlatformHealthCheck, done: Callable[[HealthCheckResult], bool],
              timeout: float = 10.0) -> HealthCheckResult:
    """Wait on the wakeup pipe, as the loop's reactor does, until ``done``; stop the check."""
    deadline = time.monotonic() + timeout
    check.start()
    try:
        while True:
            result = check.result()
            if done(result):
                return result
            left = deadline - time.monotonic()
            assert left > 0, f"health check did not get there: {result}"
            readable, _, _ = select.select([check.wakeup_fd], [], [], min(left, 0.05))
            if readable:
                check.take_wakeup()
    finally:
        check.close()


def is_final(result: HealthCheckResult) -> bool:
    return result.final


# -- real probes -----------------------------------------------------------------------


def test_http_check_passes_after_the_healthy_threshold(http_server: Served) -> None:
    address, answers = http_server
    check = PlatformHealthCheck(spec(healthy=2), address)
    result = run_until(check, lambda r: r.state is CheckState.PASSED)
    assert result.passed
    assert result.checks == 2 and result.failures == 0
    assert [p.detail for p in result.probes] == ["HTTP 200", "HTTP 200"]
    assert result.answered_by == "app"
    assert answers.paths == ["/healthz", "/healthz"]
    assert result.reason.startswith("2 consecutive health checks succeeded (HTTP 200) by ")
    report = result.as_report()
    assert {k: report[k] for k in ("passed", "checks", "failures", "answered_by")} == {
        "passed": True, "checks": 2, "failures": 0, "answered_by": "app"}


def test_http_503_fails_after_the_unhealthy_threshold(http_server: Served) -> None:
    address, answers = http_server
    answers.status = 503
    check = PlatformHealthCheck(spec(unhealthy=3), address)
    result = run_until(check, is_final)
    assert result.state is CheckState.FAILED and not result.passed
    assert result.checks == 3 and result.failures == 3
    # The first probe goes at once: "between 0 s" on a quiet machine, a few ms later on a busy one.
    assert re.match(r"3 consecutive health checks answered HTTP 503 between [0-9.]+ s and ",
                    result.reason)
    text = verdict_text("App Runner", result, check.spec, "app/main.py:7 in startup")
    assert text.startswith("App Runner would have failed this deployment: 3 consecutive")
    assert text.endswith("; the app was still in app/main.py:7 in startup")


def test_the_stubs_answer_is_recognised_by_its_body(http_server: Served) -> None:
    address, answers = http_server
    answers.status = 503
    answers.body = json.dumps({"status": "starting"}).encode() + b"\n"
    answers.headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    check = PlatformHealthCheck(spec(unhealthy=2), address)
    result = run_until(check, is_final)
    assert result.answered_by == "stub"
    assert "answered by the supervisor's stub" in result.reason


def test_stub_active_callable_decides_who_answered(http_server: Served) -> None:
    address, _ = http_server
    check = PlatformHealthCheck(spec(), address, stub_active=lambda: True)
    result = run_until(check, lambda r: r.passed)
    assert result.answered_by == "stub"
    text = verdict_text("App Runner", result, check.spec, None)
    assert text.startswith("App Runner would have passed this deployment: 1 consecutive")
    assert "the supervisor's stub answered" in text


def test_a_server_that_never_answers_times_out(silent_server: Address) -> None:
    check = PlatformHealthCheck(spec(unhealthy=3), silent_server)
    result = run_until(check, is_final)
    assert result.state is CheckState.FAILED
    assert result.failures == 3
    assert {p.detail for p in result.probes} == {"timed out (0.5 s)"}
    assert result.answered_by is None
    assert re.match(r"3 consecutive health checks timed out \(0\.5 s\) between [0-9.]+ s and ",
                    result.reason)


def test_tcp_check_against_a_silent_listener_passes(silent_server: Address) -> None:
    # TCP only asks for a connection, which the kernel's backlog grants.
    check = PlatformHealthCheck(spec("tcp"), silent_server)
    result = run_until(check, lambda r: r.passed)
    assert result.probes[0].detail == "connected"


@pytest.mark.parametrize("protocol", ["tcp", "http"])
def test_a_refused_port_fails_both_protocols(protocol: str, closed_port: Address) -> None:
    check = PlatformHealthCheck(spec(protocol, unhealthy=2), closed_port)
    result = run_until(check, is_final)
    assert result.state is CheckState.FAILED
    assert [p.detail for p in result.probes] == ["connection refused"] * 2
    text = verdict_text(None, result, check.spec, None)
    assert text.startswith("A platform running this health check would have failed this "
                           "deployment: 2 consecutive health checks were refused")


def test_failures_in_the_grace_period_do_not_count(closed_port: Address) -> None:
    check = PlatformHealthCheck(spec("tcp", unhealthy=2, grace_s=0.35), closed_port)
    result = run_until(check, is_final)
    uncounted = [p for p in result.probes if not p.counted]
    assert len(uncounted) >= 3  # probes at 0, 0.1, 0.2, 0.3 s
    assert all(p.at_s < 0.35 for p in uncounted)
    assert all(p.at_s >= 0.35 for p in result.decisive) and len(result.decisive) == 2
    assert result.failures == result.checks


def test_failures_after_passing_make_it_unhealthy(http_server: Served) -> None:
    address, answers = http_server
    check = PlatformHealthCheck(spec(unhealthy=2), address)

    def flip(result: HealthCheckResult) -> bool:
        if result.passed:
            answers.status = 500
        return result.final

    result = run_until(check, flip)
    assert result.state is CheckState.UNHEALTHY and not result.passed
    assert result.passed_at_s is not None
    text = verdict_text("Kubernetes", result, check.spec, None)
    assert text.startswith("Kubernetes would have replaced this instance: 2 consecutive health "
                           "checks answered HTTP 500")
    assert "after the check had passed at" in text


def test_wakeup_fd_is_readable_once_the_verdict_is_final(closed_port: Address) -> None:
    check = PlatformHealthCheck(spec("tcp", unhealthy=1), closed_port)
    check.start()
    try:
        readable, _, _ = select.select([check.wakeup_fd], [], [], 5.0)
        assert readable
        result = check.take_wakeup()
        assert result.final
        # Drained: nothing more to read until the next change, and none comes.
        readable, _, _ = select.select([check.wakeup_fd], [], [], 0.3)
        assert not readable
    finally:
        check.close()


def test_an_undecided_check_says_so(silent_server: Address) -> None:
    check = PlatformHealthCheck(spec(unhealthy=50), silent_server)
    result = run_until(check, lambda r: r.checks >= 2)
    assert result.state is CheckState.PENDING
    text = verdict_text("ECS", result, check.spec, None)
    assert text.startswith("ECS had not decided yet (HTTP /healthz every 0.1 s")


# -- against the supervisor's real stub ----------------------------------------------------


@pytest.fixture
def real_stub() -> Iterator[Callable[[int], Address]]:
    """The supervisor's own HealthStub on 127.0.0.1, its reactor turning in a thread."""
    from supervisor.health import HealthStub
    from supervisor.listener import bind_listener
    from supervisor.reactor import Reactor

    started: list[tuple[threading.Event, threading.Thread, Any]] = []

    def start(starting_status: int) -> Address:
        reactor = Reactor()
        listener = bind_listener("127.0.0.1", 0)
        stub = HealthStub(reactor, listener, starting_status=starting_status)
        stub.start()
        stopping = threading.Event()

        def turn() -> None:
            while not stopping.is_set():
                reactor.run_once(0.05)

        thread = threading.Thread(target=turn, daemon=True)
        thread.start()
        started.append((stopping, thread, (stub, reactor, listener)))
        return "127.0.0.1", int(listener.getsockname()[1])

    yield start
    for stopping, thread, (stub, reactor, listener) in started:
        stopping.set()
        thread.join(5)
        stub.close()
        reactor.close()
        listener.close()


def test_the_real_stub_answering_503_fails_the_check_and_is_named(
    real_stub: Callable[[int], Address]
) -> None:
    check = PlatformHealthCheck(spec(unhealthy=3), real_stub(503))
    result = run_until(check, is_final)
    assert result.state is CheckState.FAILED
    assert result.answered_by == "stub"
    assert {p.detail for p in result.probes} == {"HTTP 503"}
    text = verdict_text("App Runner", result, check.spec, None)
    assert "answered HTTP 503" in text and "the supervisor's stub" in text


def test_the_real_stub_answering_200_passes_the_check(
    real_stub: Callable[[int], Address]
) -> None:
    check = PlatformHealthCheck(spec(), real_stub(200))
    result = run_until(check, lambda r: r.passed)
    assert result.answered_by == "stub"


# -- what is not a clean HTTP answer ---------------------------------------------------------


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], Address]]:
    """A listener whose every connection is given to ``answer``, in a thread."""
    sockets: list[socket.socket] = []
    stopping = threading.Event()

    def start(answer: Callable[[socket.socket], None]) -> Address:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.05)
        sockets.append(listener)

        def serve() -> None:
            while not stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                sockets.append(conn)
                answer(conn)

        threading.Thread(target=serve, daemon=True).start()
        return "127.0.0.1", int(listener.getsockname()[1])

    yield start
    stopping.set()
    for sock in sockets:
        sock.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    conn.settimeout(2)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_something_that_is_not_http_is_an_error_not_a_pass(raw_server: Any) -> None:
    def answer(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        conn.close()

    result = run_until(PlatformHealthCheck(spec(unhealthy=2), raw_server(answer)), is_final)
    assert result.state is CheckState.FAILED
    assert {p.detail for p in result.probes} == {"not an HTTP answer ('SSH-2.0-OpenSSH_9.2')"}


def test_a_connection_closed_without_an_answer_fails(raw_server: Any) -> None:
    def answer(conn: socket.socket) -> None:
        _read_request(conn)
        conn.close()

    result = run_until(PlatformHealthCheck(spec(unhealthy=2), raw_server(answer)), is_final)
    assert result.state is CheckState.FAILED
    assert {p.detail for p in result.probes} == {"not an HTTP answer (closed before an answer)"}


def test_a_body_that_never_ends_times_out(raw_server: Any) -> None:
    def answer(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")

    result = run_until(PlatformHealthCheck(spec(unhealthy=2), raw_server(answer)), is_final)
    assert result.state is CheckState.FAILED
    assert {p.detail for p in result.probes} == {"timed out (0.5 s)"}


def test_the_request_is_one_get_with_a_host_on_a_fresh_connection(raw_server: Any) -> None:
    requests: list[bytes] = []

    def answer(conn: socket.socket) -> None:
        requests.append(_read_request(conn))
        conn.sendall(b"HTTP/1.0 204 No Content\r\n\r\n")
        conn.close()

    address = raw_server(answer)
    result = run_until(PlatformHealthCheck(spec(healthy=2), address), lambda r: r.passed)
    assert [p.detail for p in result.probes] == ["HTTP 204", "HTTP 204"]
    lines = requests[0].decode().split("\r\n")
    assert lines[0] == "GET /healthz HTTP/1.1"
    assert f"Host: 127.0.0.1:{address[1]}" in lines
    assert "Connection: close" in lines


def test_an_impossible_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        PlatformHealthCheck(HealthCheckSpec("tcp", "", 1, 1, 0, 1), ("127.0.0.1", 1))
