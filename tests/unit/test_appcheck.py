"""The look at the app after hand-off: one real request over loopback, on the reactor."""

from __future__ import annotations

import socket
import threading
from typing import Iterator, Optional

import pytest

from supervisor.appcheck import StatusRequest, status_in
from supervisor.reactor import Reactor
from tests.conftest import EVENTUALLY_S, VirtualClock


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A listener on 127.0.0.1; the test decides what each connection gets."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener, []
    listener.close()


def answer_once(listener: socket.socket, reply: Optional[bytes], seen: list[bytes]) -> None:
    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            seen.append(connection.recv(4096))
            if reply is not None:
                connection.sendall(reply)
            else:
                connection.recv(1)  # silent until the client gives up and closes

    threading.Thread(target=serve, daemon=True).start()


def status_from(address: tuple[str, int], reactor: Reactor) -> int:
    got: list[int] = []
    StatusRequest(reactor, address, "/healthz", got.append).start()
    reactor.run_until(lambda: bool(got), reactor.clock() + EVENTUALLY_S)
    assert got, "no status was reported"
    return got[0]


def test_a_404_is_read_from_the_status_line(server: tuple[socket.socket, list[bytes]]) -> None:
    listener, seen = server
    answer_once(listener, b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", seen)
    reactor = Reactor()
    try:
        assert status_from(listener.getsockname()[:2], reactor) == 404
    finally:
        reactor.close()
    assert seen[0].startswith(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:")


def test_a_status_line_in_pieces_is_read_whole(server: tuple[socket.socket, list[bytes]]) -> None:
    listener, seen = server

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            seen.append(connection.recv(4096))
            connection.sendall(b"HTTP/1.1 2")
            connection.sendall(b"00 OK\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    reactor = Reactor()
    try:
        assert status_from(listener.getsockname()[:2], reactor) == 200
    finally:
        reactor.close()


def test_nobody_listening_is_no_answer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = taken.getsockname()[:2]
    reactor = Reactor()
    try:
        assert status_from(address, reactor) == 0
    finally:
        reactor.close()


def test_an_app_that_never_answers_is_given_up_on(
    server: tuple[socket.socket, list[bytes]],
) -> None:
    listener, seen = server
    answer_once(listener, None, seen)
    clock = VirtualClock()
    reactor = Reactor(clock=clock, advance=clock.advance)
    try:
        started = clock()
        assert status_from(listener.getsockname()[:2], reactor) == 0
        assert clock() - started >= 5.0  # it waited its whole ANSWER_WITHIN_S
    finally:
        reactor.close()


def test_the_status_is_found_in_a_response_head() -> None:
    assert status_in(b"HTTP/1.1 404 Not Found\r\nx: y") == 404
    assert status_in(b"HTTP/1.0 200") == 200
    assert status_in(b"") == 0
    assert status_in(b"garbage") == 0
