"""``output.Sink``: the supervisor's own output never blocks its loop.

Real pipes (one filled to the brim), a real pty, a socket pair, a file, and a
reader that goes away. The inherited fd itself is never made non-blocking:
the child shares it.
"""

from __future__ import annotations

import os
import pty
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from supervisor.output import HIGH_WATER, Sink, write_direct
from supervisor.reactor import Reactor

GENEROUS_S = 60.0


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    loop = Reactor()
    yield loop
    loop.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def drain(fd: int) -> bytes:
    """Everything that can be read from ``fd`` now, without waiting."""
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, blocking)
    return b"".join(chunks)


def pump(reactor: Reactor, read_fd: int, until: Callable[[bytes], bool]) -> bytes:
    """Read ``read_fd`` as a log collector would while the loop runs, until ``until(data)``."""
    received = bytearray()
    deadline = time.monotonic() + GENEROUS_S
    while not until(bytes(received)):
        assert time.monotonic() < deadline, f"only {len(received)} bytes in {GENEROUS_S} s"
        received += drain(read_fd)
        reactor.run_once(max_wait=0.01)
    return bytes(received)


def test_a_write_on_a_free_pipe_goes_straight_through(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    sink = Sink(reactor, write_fd)
    sink.write(b"[supervisor] hello\n")
    sink.write(b"")
    assert sink.pending == 0
    assert drain(read_fd) == b"[supervisor] hello\n"


def test_the_inherited_fd_stays_blocking(reactor: Reactor, pipe: tuple[int, int]) -> None:
    _, write_fd = pipe
    Sink(reactor, write_fd)
    assert os.get_blocking(write_fd)  # the child's writes must not fail with EAGAIN


def test_a_full_pipe_buffers_then_delivers_everything_in_order(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    sink = Sink(reactor, write_fd)
    data = b"".join(f"line {n:07d}\n".encode() for n in range(400_000))  # 5.2 MB
    for start in range(0, len(data), 4096):
        sink.write(data[start : start + 4096])  # never blocks: nobody reads yet
    assert sink.pending > 0
    assert sink.congested
    drained: list[int] = []
    sink.on_drain(lambda: drained.append(sink.pending))
    received = pump(reactor, read_fd, lambda got: len(got) >= len(data))
    assert received == data
    assert sink.pending == 0
    assert len(drained) == 1 and drained[0] < HIGH_WATER


def test_flush_writes_out_the_buffer_while_a_reader_reads(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    sink = Sink(reactor, write_fd)
    data = os.urandom(3 << 20)
    sink.write(data)
    assert sink.pending > 0
    import threading

    received = bytearray()

    def read_all() -> None:
        while len(received) < len(data):
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    assert sink.flush(time.monotonic() + GENEROUS_S) is True
    reader.join(GENEROUS_S)
    assert bytes(received) == data


def test_flush_gives_up_at_its_deadline_when_nobody_reads(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    _, write_fd = pipe
    sink = Sink(reactor, write_fd)
    sink.write(os.urandom(3 << 20))
    pending = sink.pending
    assert pending > 0
    # A clock that passes the deadline at its second reading: one short real wait.
    readings = iter([0.999, 10.0, 10.0, 10.0])
    assert sink.flush(1.0, clock=lambda: next(readings)) is False
    assert sink.pending == pending  # kept, not lost: a later flush may still write it


def test_a_reader_that_goes_away_breaks_the_sink_quietly(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    sink = Sink(reactor, write_fd)
    sink.write(os.urandom(3 << 20))
    assert sink.pending > 0
    os.close(read_fd)
    reactor.run_once(max_wait=1.0)  # writable (EPIPE): the buffer is dropped
    assert sink.pending == 0
    sink.write(b"more")  # ignored, no error
    assert sink.pending == 0
    assert sink.flush(time.monotonic() + 1.0) is True


def test_a_socket_is_written_without_blocking_and_stays_blocking(reactor: Reactor) -> None:
    ours, theirs = socket.socketpair()
    try:
        sink = Sink(reactor, ours.fileno())
        assert ours.getblocking()
        sink.write(b"journald line\n")
        assert theirs.recv(100) == b"journald line\n"
        data = os.urandom(8 << 20)  # more than the socket buffers hold
        sink.write(data)
        assert sink.pending > 0
        theirs.setblocking(False)
        received = bytearray()
        deadline = time.monotonic() + GENEROUS_S
        while len(received) < len(data):
            assert time.monotonic() < deadline
            try:
                received += theirs.recv(1 << 20)
            except BlockingIOError:
                pass
            reactor.run_once(max_wait=0.01)
        assert bytes(received) == data
    finally:
        ours.close()
        theirs.close()


def test_a_terminal_gets_the_lines(reactor: Reactor) -> None:
    controller, terminal = pty.openpty()
    try:
        sink = Sink(reactor, terminal)
        assert os.get_blocking(terminal)
        sink.write(b"on the terminal\n")
        received = b""
        deadline = time.monotonic() + GENEROUS_S
        while b"on the terminal" not in received:
            assert time.monotonic() < deadline
            received += os.read(controller, 1024)
    finally:
        os.close(controller)
        os.close(terminal)


def test_a_regular_file_gets_every_byte(reactor: Reactor, tmp_path: Path) -> None:
    path = tmp_path / "supervisor.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        sink = Sink(reactor, fd)
        sink.write(b"one\n")
        sink.write(memoryview(b"two\n"))
        assert sink.flush(time.monotonic() + 1.0)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"one\ntwo\n"


def test_write_direct_writes_and_never_raises(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    write_direct(write_fd, b"before the loop\n")
    assert drain(read_fd) == b"before the loop\n"
    os.close(read_fd)
    write_direct(write_fd, b"nobody reads")  # EPIPE, swallowed
    write_direct(9999, b"no such fd")  # EBADF, swallowed
