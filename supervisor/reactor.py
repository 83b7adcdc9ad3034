"""The single-threaded event loop: file descriptors and timers, nothing else.

Owns: readiness callbacks for fds (via ``selectors``) and a heap of timers.
Must not know: processes, signals, HTTP or reports. Every other module plugs
into one ``Reactor`` so that no part of the supervisor can block another.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import selectors
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional

    Callback = Callable[[], None]


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
    """Dispatches fd readiness and timers until ``stop()`` is called.

    Callbacks run one at a time in the loop's thread; a callback that raises
    propagates out of ``run()`` (a bug in the supervisor should be loud).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._selector = selectors.DefaultSelector()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._stopped = False
        self.clock = clock
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

    def is_reading(self, fd: int) -> bool:
        return fd in self._readers

    def _update(self, fd: int) -> None:
        events = 0
        if fd in self._readers:
            events |= selectors.EVENT_READ
        if fd in self._writers:
            events |= selectors.EVENT_WRITE
        try:
            registered = self._selector.get_key(fd).events
        except KeyError:
            registered = 0
        if events == registered:
            return
        if not registered:
            self._selector.register(fd, events)
        elif not events:
            self._selector.unregister(fd)
        else:
            self._selector.modify(fd, events)

    # -- timers -------------------------------------------------------------
    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.clock() + delay, callback)

    # -- other threads ------------------------------------------------------
    def call_soon_threadsafe(self, callback: Callback) -> None:
        """Run ``callback`` in the loop's thread; callable from any thread."""
        self._from_threads.append(callback)
        if self._wake_write is not None:
            try:
                os.write(self._wake_write, b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full or closed: the loop is awake anyway

    def enable_threads(self) -> None:
        """Create the wake-up pipe; call once, in the loop's thread, before any thread starts."""
        if self._wake_read is not None:
            return
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self.add_reader(self._wake_read, self._run_from_threads)

    def _run_from_threads(self) -> None:
        assert self._wake_read is not None
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while self._from_threads:
            self._from_threads.popleft()()

    # -- running ------------------------------------------------------------
    def stop(self) -> None:
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    def run(self) -> None:
        self._stopped = False
        while not self._stopped:
            self.run_once()

    def run_once(self, max_wait: Optional[float] = None) -> None:
        """Wait for at most one batch of events and dispatch it."""
        timeout = self._run_due_timers()
        if self._stopped:
            return
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        for key, events in self._selector.select(timeout):
            fd = key.fd
            if events & selectors.EVENT_WRITE:
                writer = self._writers.get(fd)
                if writer is not None:
                    writer()
            if events & selectors.EVENT_READ:
                reader = self._readers.get(fd)
                if reader is not None:
                    reader()
        self._run_due_timers()

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
            timer.callback()
            if self._stopped:
                return 0.0
        return None

    def close(self) -> None:
        self._selector.close()
        for fd in (self._wake_read, self._wake_write):
            if fd is not None:
                os.close(fd)
