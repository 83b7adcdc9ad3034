"""The reactor: timers on an injected clock, fds on real pipes, results from real threads.

Timers run on a fake clock that the test moves (or that the reactor moves
itself when idle, given ``advance``), so that a 25 s stop grace is tested
without waiting 25 s. Readers and writers watch real pipes and sockets.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Callable, Iterator

import pytest

from supervisor.reactor import Reactor
from tests.conftest import VirtualClock

GENEROUS_S = 30.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def reactor(clock: VirtualClock) -> Iterator[Reactor]:
    loop = Reactor(clock=clock)
    yield loop
    loop.close()


@pytest.fixture
def real_reactor() -> Iterator[Reactor]:
    loop = Reactor()
    yield loop
    loop.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def run_until(reactor: Reactor, done: Callable[[], bool]) -> None:
    """Dispatch on the real clock until ``done()``; fail after a generous deadline."""
    reactor.run_until(done, reactor.clock() + GENEROUS_S)
    assert done(), f"not done within {GENEROUS_S} s"


# -- timers on a fake clock ---------------------------------------------------------


def test_a_timer_fires_when_its_time_comes_and_not_before(
    reactor: Reactor, clock: VirtualClock
) -> None:
    fired: list[float] = []
    reactor.call_later(5.0, lambda: fired.append(clock()))
    reactor.run_once(max_wait=0)
    clock.advance(4.999)
    reactor.run_once(max_wait=0)
    assert fired == []
    clock.advance(0.001)
    reactor.run_once(max_wait=0)
    assert fired == [1005.0]


def test_timers_fire_in_time_order_and_ties_in_the_order_they_were_set(
    reactor: Reactor, clock: VirtualClock
) -> None:
    order: list[str] = []
    reactor.call_later(2.0, lambda: order.append("b"))
    reactor.call_at(clock() + 1.0, lambda: order.append("a"))
    reactor.call_later(2.0, lambda: order.append("c"))
    reactor.call_later(0.0, lambda: order.append("now"))
    clock.advance(10)
    reactor.run_once(max_wait=0)
    assert order == ["now", "a", "b", "c"]


def test_a_cancelled_timer_never_fires(reactor: Reactor, clock: VirtualClock) -> None:
    fired: list[str] = []
    timer = reactor.call_later(1.0, lambda: fired.append("cancelled"))
    reactor.call_later(1.0, lambda: fired.append("kept"))
    timer.cancel()
    clock.advance(1.0)
    reactor.run_once(max_wait=0)
    assert fired == ["kept"]


def test_a_timer_set_by_a_timer_for_now_runs_in_the_same_turn(
    reactor: Reactor, clock: VirtualClock
) -> None:
    fired: list[str] = []
    reactor.call_later(1.0, lambda: reactor.call_later(0, lambda: fired.append("second")))
    clock.advance(1.0)
    reactor.run_once(max_wait=0)
    assert fired == ["second"]


def test_call_every_repeats_while_the_callback_says_so(
    reactor: Reactor, clock: VirtualClock
) -> None:
    ticks: list[float] = []

    def tick() -> bool:
        ticks.append(clock())
        return len(ticks) < 3

    reactor.call_every(0.5, tick)
    for _ in range(10):
        clock.advance(0.5)
        reactor.run_once(max_wait=0)
    assert ticks == [1000.5, 1001.0, 1001.5]


def test_with_advance_an_idle_loop_jumps_to_the_next_timer() -> None:
    clock = VirtualClock()
    reactor = Reactor(clock=clock, advance=clock.advance)
    try:
        stopped: list[float] = []
        # The stop grace, then the kill: 25 s of virtual time in one idle wait.
        reactor.call_later(25.0, lambda: stopped.append(clock()))
        turns = 0
        while not stopped and turns < 10:
            reactor.run_once()
            turns += 1
        assert stopped == [1025.0]
        assert turns == 1
    finally:
        reactor.close()


def test_run_until_stops_when_done_or_at_its_deadline() -> None:
    clock = VirtualClock()
    reactor = Reactor(clock=clock, advance=clock.advance)
    try:
        fired: list[float] = []
        reactor.call_later(0.2, lambda: fired.append(clock()))
        reactor.call_later(120.0, lambda: fired.append(clock()))
        reactor.run_until(lambda: bool(fired), clock() + 1.0)
        assert fired == [pytest.approx(1000.2)]
        reactor.run_until(lambda: False, clock() + 0.5)
        assert clock() >= 1000.7
        assert len(fired) == 1  # the late timer is not due yet
    finally:
        reactor.close()


def test_run_until_returns_at_once_when_already_done(reactor: Reactor, clock: VirtualClock) -> None:
    fired: list[bool] = []
    reactor.call_later(0, lambda: fired.append(True))
    reactor.run_until(lambda: True, clock() + 5)
    assert fired == []  # nothing dispatched


# -- errors in callbacks ------------------------------------------------------------


def test_without_a_handler_an_error_in_a_timer_propagates(
    reactor: Reactor, clock: VirtualClock
) -> None:
    def boom() -> None:
        raise RuntimeError("bug in a part")

    reactor.call_later(0, boom)
    with pytest.raises(RuntimeError, match="bug in a part"):
        reactor.run_once(max_wait=0)


def test_a_handler_that_declines_lets_the_error_propagate(reactor: Reactor) -> None:
    seen: list[BaseException] = []

    def decline(error: BaseException, callback: Callable[[], None]) -> bool:
        seen.append(error)
        return False

    reactor.on_error = decline
    reactor.call_later(0, lambda: [][1])  # type: ignore[func-returns-value]
    with pytest.raises(IndexError):
        reactor.run_once(max_wait=0)
    assert len(seen) == 1


def test_a_raising_timer_goes_to_the_handler_and_the_other_timers_still_run(
    reactor: Reactor, clock: VirtualClock
) -> None:
    handled: list[tuple[str, Callable[[], None]]] = []
    fired: list[str] = []

    def boom() -> None:
        raise ValueError("memory sampler broke")

    reactor.on_error = lambda error, callback: handled.append((str(error), callback)) or True
    reactor.call_later(1.0, boom)
    reactor.call_later(1.0, lambda: fired.append("after"))
    clock.advance(1.0)
    reactor.run_once(max_wait=0)
    assert handled == [("memory sampler broke", boom)]
    assert fired == ["after"]


def test_a_raising_reader_is_switched_off_and_the_others_go_on(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    other_read, other_write = os.pipe()
    try:
        calls: list[str] = []

        def broken() -> None:
            calls.append("broken")
            raise OSError("reader broke")

        def healthy() -> None:
            calls.append("healthy")
            os.read(other_read, 100)

        reactor.on_error = lambda error, callback: True
        reactor.add_reader(read_fd, broken)
        reactor.add_reader(other_read, healthy)
        os.write(write_fd, b"x")
        os.write(other_write, b"y")
        reactor.run_once(max_wait=0)
        assert sorted(calls) == ["broken", "healthy"]
        os.write(other_write, b"z")  # read_fd still has its unread byte
        reactor.run_once(max_wait=0)
        assert sorted(calls) == ["broken", "healthy", "healthy"]
    finally:
        os.close(other_read)
        os.close(other_write)


# -- readers and writers on real pipes ------------------------------------------------


def test_a_reader_is_called_when_its_pipe_has_data(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    received: list[bytes] = []
    reactor.add_reader(read_fd, lambda: received.append(os.read(read_fd, 100)))
    reactor.run_once(max_wait=0)
    assert received == []
    os.write(write_fd, b"hello")
    run_until(reactor, lambda: received == [b"hello"])


def test_a_removed_reader_is_not_called(reactor: Reactor, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    received: list[bytes] = []
    reactor.add_reader(read_fd, lambda: received.append(b"called"))
    reactor.remove_reader(read_fd)
    reactor.remove_reader(read_fd)  # twice is fine
    os.write(write_fd, b"hello")
    reactor.run_once(max_wait=0)
    assert received == []


def test_a_reader_replaced_on_the_same_fd_calls_the_new_callback(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    calls: list[str] = []
    reactor.add_reader(read_fd, lambda: calls.append("old"))
    reactor.add_reader(read_fd, lambda: calls.append("new") or os.read(read_fd, 100))
    os.write(write_fd, b"x")
    run_until(reactor, lambda: bool(calls))
    assert calls == ["new"]


def test_a_writer_waits_while_its_pipe_is_full(reactor: Reactor, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    try:
        while True:
            os.write(write_fd, b"x" * 65536)
    except BlockingIOError:
        pass  # the pipe is full
    writable: list[bool] = []
    reactor.add_writer(write_fd, lambda: writable.append(True))
    reactor.run_once(max_wait=0)
    assert writable == []
    while True:  # the consumer catches up
        try:
            if not os.read(read_fd, 1 << 20):
                break
        except BlockingIOError:
            break
    run_until(reactor, lambda: bool(writable))
    reactor.remove_writer(write_fd)


def test_reader_and_writer_on_one_socket_are_kept_apart(reactor: Reactor) -> None:
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        calls: list[str] = []
        reactor.add_writer(ours.fileno(), lambda: calls.append("write"))
        reactor.add_reader(ours.fileno(), lambda: calls.append("read") or ours.recv(100))
        theirs.sendall(b"ping")
        run_until(reactor, lambda: {"read", "write"} <= set(calls))
        reactor.remove_writer(ours.fileno())
        calls.clear()
        theirs.sendall(b"again")
        run_until(reactor, lambda: bool(calls))
        assert set(calls) == {"read"}  # the reader outlives the removed writer
        reactor.remove_reader(ours.fileno())
        calls.clear()
        theirs.sendall(b"more")
        reactor.run_once(max_wait=0)
        assert calls == []
    finally:
        ours.close()
        theirs.close()


# -- other threads --------------------------------------------------------------------


def test_work_started_in_a_thread_reports_back_in_the_loops_thread(
    real_reactor: Reactor,
) -> None:
    results: list[tuple[str, int]] = []
    loop_thread = threading.get_ident()

    def work() -> None:
        value = sum(range(1000))  # the blocking part, off the loop
        real_reactor.call_soon_threadsafe(
            lambda: results.append((str(value), threading.get_ident())))

    thread = real_reactor.start_thread(work, name="test-work")
    run_until(real_reactor, lambda: bool(results))
    thread.join(GENEROUS_S)
    assert results == [("499500", loop_thread)]
    assert thread.name == "test-work" and thread.daemon


def test_call_soon_threadsafe_wakes_a_loop_that_waits_without_a_timeout(
    real_reactor: Reactor,
) -> None:
    started = threading.Event()
    real_reactor.start_thread(started.set, name="enable")
    run_until(real_reactor, started.is_set)
    results: list[int] = []
    release = threading.Event()

    def from_a_plain_thread() -> None:
        release.wait(GENEROUS_S)
        for number in range(100):
            real_reactor.call_soon_threadsafe(lambda number=number: results.append(number))

    thread = threading.Thread(target=from_a_plain_thread, daemon=True)
    thread.start()
    release.set()
    # No timer and no max_wait: only the wake-up pipe can end this wait.
    while len(results) < 100:
        real_reactor.run_once()
    thread.join(GENEROUS_S)
    assert results == list(range(100))


def test_an_error_in_a_thread_callback_goes_to_the_handler(real_reactor: Reactor) -> None:
    handled: list[str] = []
    real_reactor.on_error = lambda error, callback: handled.append(str(error)) or True

    def deliver() -> None:
        def boom() -> None:
            raise RuntimeError("delivery result broke")

        real_reactor.call_soon_threadsafe(boom)

    real_reactor.start_thread(deliver, name="deliver")
    run_until(real_reactor, lambda: bool(handled))
    assert handled == ["delivery result broke"]
