"""The single-threaded event loop: file descriptors, timers and worker threads.

Owns: readiness callbacks for fds (epoll itself, or poll where there is no
epoll: ``selectors`` would add its imports and a layer to every wake-up, the
signal's among them), a heap of timers on an
injected clock, the hand-back of results from worker threads, and what
happens when a callback raises.
Must not know: processes, signals, HTTP or reports. Every other module plugs
into one ``Reactor`` so that no part of the supervisor can block another.

The clock is injected so that tests can drive every timeout (the stop grace,
the startup timeout, the reap safety net) on virtual time: with ``advance``
given, an idle wait does not sleep but moves the clock to the next timer.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import os
import select
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import threading
    from typing import Callable, Optional

    Callback = Callable[[], None]
    # Told which callback raised; returns True when the part was switched off
    # and the loop may go on, False to let the error end the loop.
    ErrorHandler = Callable[[BaseException, Callback], bool]

# With a virtual clock, how long one idle wait really lasts: long enough for a
# real child's exit or signal to come in, short enough to keep tests quick.
VIRTUAL_IDLE_WAIT_S = 0.001

_EPOLL = hasattr(select, "epoll")
# POLLIN/POLLOUT and EPOLLIN/EPOLLOUT are the same bits.
READ = select.POLLIN
WRITE = select.POLLOUT


class Timer:
    """A handle to a scheduled callback; ``cancel()`` makes it a no-op."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    """Dispatches fd readiness and timers, one callback at a time.

    A callback that raises goes to ``on_error``: the supervisor logs it and
    switches that part off (its reader, writer or timer is dropped), so that a
    bug in an optional part never takes the app down. Without a handler, or
    when the handler declines, the error propagates out of ``run_once()``.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        advance: Optional[Callable[[float], None]] = None,
    ) -> None:
        self._poller = select.epoll() if _EPOLL else select.poll()
        self._registered: dict[int, int] = {}  # fd -> the events asked for
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self.clock = clock
        self._advance = advance
        self.on_error: Optional[ErrorHandler] = None
        # Other threads (Sentry delivery, probes) hand results to the loop
        # through this queue and wake it through the pipe.
        self._from_threads: collections.deque[Callback] = collections.deque()
        self._wake_read: Optional[int] = None
        self._wake_write: Optional[int] = None

    # -- file descriptors -------------------------------------------------
    def add_reader(self, fd: int, callback: Callback) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callback) -> None:
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def _update(self, fd: int) -> None:
        events = (READ if fd in self._readers else 0) | (WRITE if fd in self._writers else 0)
        registered = self._registered.get(fd, 0)
        if events == registered:
            return
        if not events:
            del self._registered[fd]
            try:
                self._poller.unregister(fd)
            except (OSError, KeyError):
                pass  # closed already: the kernel forgot it with its last reference
            return
        self._registered[fd] = events
        if registered:
            try:
                self._poller.modify(fd, events)
                return
            except OSError as error:
                if error.errno != errno.ENOENT:
                    raise
                # Closed and its number reused since: a new registration.
        try:
            self._poller.register(fd, events)
        except FileExistsError:
            self._poller.modify(fd, events)

    # -- timers -------------------------------------------------------------
    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.clock() + delay, callback)

    def call_every(self, interval: float, callback: Callable[[], bool]) -> None:
        """Call ``callback`` every ``interval`` seconds for as long as it returns True."""

        def tick() -> None:
            if callback():
                self.call_later(interval, tick)

        self.call_later(interval, tick)

    # -- other threads ------------------------------------------------------
    def call_soon_threadsafe(self, callback: Callback) -> None:
        """Run ``callback`` in the loop's thread; callable from any thread."""
        self._from_threads.append(callback)
        if self._wake_write is not None:
            try:
                os.write(self._wake_write, b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full or closed: the loop is awake anyway

    def start_thread(self, work: Callback, name: str) -> threading.Thread:
        """Run blocking work off the loop; it reports back with ``call_soon_threadsafe``.

        Raises OSError (no pipe: EMFILE) or RuntimeError (no thread: a pids
        limit, ENOMEM): the caller switches its part off and the loop goes on.
        """
        import threading

        self._enable_threads()
        thread = threading.Thread(target=work, daemon=True, name=name)
        thread.start()
        return thread

    def _enable_threads(self) -> None:
        if self._wake_read is not None:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._wake_read, self._wake_write = read_fd, write_fd
        self.add_reader(read_fd, self._run_from_threads)

    def _run_from_threads(self) -> None:
        assert self._wake_read is not None
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while self._from_threads:
            self._dispatch(self._from_threads.popleft())

    # -- running ------------------------------------------------------------
    def run_until(self, done: Callable[[], bool], deadline: float) -> None:
        """Keep dispatching until ``done()`` or the deadline (on this reactor's clock)."""
        while not done() and self.clock() < deadline:
            left = max(0.0, deadline - self.clock())
            # On a virtual clock an idle wait jumps straight to the deadline.
            self.run_once(max_wait=left if self._advance is not None else min(0.05, left))

    def run_once(self, max_wait: Optional[float] = None) -> None:
        """Wait for at most one batch of events and dispatch it."""
        timeout = self._run_due_timers()
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        wait = timeout
        if self._advance is not None and timeout is not None:
            wait = min(timeout, VIRTUAL_IDLE_WAIT_S)
        events = self._wait(wait)
        if not events and self._advance is not None and timeout is not None:
            self._advance(timeout)  # idle: jump to the next timer
        for fd, mask in events:
            # An error or hang-up wakes both sides: the callback's read or write
            # then says what happened (as ``selectors`` does).
            if mask & ~READ and fd in self._writers:
                self._dispatch(self._writers[fd], fd, self._writers)
            if mask & ~WRITE and fd in self._readers:
                self._dispatch(self._readers[fd], fd, self._readers)
        self._run_due_timers()

    def _wait(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        if _EPOLL:
            return self._poller.poll(-1 if timeout is None else max(timeout, 0.0))
        # poll counts milliseconds: round up, or a timer 0.4 ms away spins.
        return self._poller.poll(None if timeout is None else max(0, -int(-timeout * 1000)))

    def _dispatch(
        self, callback: Callback, fd: int = -1, table: Optional[dict[int, Callback]] = None
    ) -> None:
        try:
            callback()
        except Exception as error:
            if self.on_error is None or not self.on_error(error, callback):
                raise
            if table is not None and table.get(fd) is callback:
                table.pop(fd)  # switched off: it raised and would raise again
                self._update(fd)

    def _run_due_timers(self) -> Optional[float]:
        """Run every due timer; return seconds until the next one, or None."""
        while self._timers:
            when, _, timer = self._timers[0]
            if timer.cancelled:
                heapq.heappop(self._timers)
                continue
            delay = when - self.clock()
            if delay > 0:
                return delay
            heapq.heappop(self._timers)
            self._dispatch(timer.callback)
        return None

    def close(self) -> None:
        close = getattr(self._poller, "close", None)  # poll objects hold no fd
        if close is not None:
            close()
        for fd in (self._wake_read, self._wake_write):
            if fd is not None:
                os.close(fd)
