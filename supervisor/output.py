"""The supervisor's own stdout and stderr, written without ever blocking the loop.

Owns: turning fd 1 or 2 into a non-blocking writer with a bounded buffer, so
that a stalled log consumer slows the child (back-pressure through its pipe)
but never the loop, which must keep forwarding signals and answering health.
Must not know: what is written.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable

    from .reactor import Reactor

# Above this many buffered bytes, relays stop reading from the child until the
# consumer catches up; the child then blocks in write() as it would writing directly.
HIGH_WATER = 1 << 20
# At the end, how long the last lines may wait for a stalled log consumer.
FINAL_FLUSH_S = 5.0

_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


def _nonblocking_writer(fd: int) -> tuple[int, Callable[[memoryview], int]]:
    """A writer for ``fd`` that never blocks, without changing ``fd`` itself.

    Setting O_NONBLOCK on an inherited fd would change the open file
    description that the child shares (its stdout is often the same pipe or
    tty) and make the child's own writes fail with EAGAIN. A pipe or tty is
    therefore reopened through /proc as a new description; a socket (journald)
    is written with MSG_DONTWAIT; a regular file never blocks for long.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return fd, lambda data: os.write(fd, data)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        try:
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            new_fd = os.open(f"/proc/self/fd/{fd}", flags)
        except OSError:
            pass
        else:
            if stat.S_ISFIFO(mode):
                # A larger pipe to the log collector: fewer wake-ups for both
                # sides when the app writes fast (the kernel caps the size).
                from .child import enlarge_pipe

                enlarge_pipe(new_fd)
            return new_fd, lambda data: os.write(new_fd, data)
    if stat.S_ISSOCK(mode):
        import socket

        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            pass
        else:
            return sock.fileno(), lambda data: sock.send(data, socket.MSG_DONTWAIT)
    return fd, lambda data: os.write(fd, data)


class Sink:
    """A buffered, non-blocking writer of one of the supervisor's own streams."""

    def __init__(self, reactor: Reactor, fd: int) -> None:
        self._reactor = reactor
        self._fd, self._write = _nonblocking_writer(fd)
        self._buffer = bytearray()
        self._broken = False
        self._drain_callbacks: list[Callable[[], None]] = []

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def congested(self) -> bool:
        return len(self._buffer) >= HIGH_WATER

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the buffer falls below the high-water mark."""
        self._drain_callbacks.append(callback)

    def write(self, data: bytes | memoryview) -> None:
        if self._broken or not data:
            return
        if self._buffer:
            self._buffer += data
            return
        written = self._try_write(memoryview(data))
        if written < len(data):
            self._buffer += data[written:]
            self._reactor.add_writer(self._fd, self._on_writable)

    def _try_write(self, data: memoryview) -> int:
        try:
            return self._write(data)
        except OSError as error:
            if error.errno in _RETRY:
                return 0
            # EPIPE, EBADF...: nobody reads our output any more. Keep running
            # the child regardless; the report file and Sentry still work.
            self._broken = True
            return len(data)

    def _on_writable(self) -> None:
        with memoryview(self._buffer) as view:
            written = self._try_write(view)
        if self._broken:
            self._buffer.clear()
        else:
            del self._buffer[:written]
        if not self._buffer:
            self._reactor.remove_writer(self._fd)
        if len(self._buffer) < HIGH_WATER and self._drain_callbacks:
            callbacks, self._drain_callbacks = self._drain_callbacks, []
            for callback in callbacks:
                callback()

    def flush(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> bool:
        """Write out the buffer, waiting at most until ``deadline``; True when empty."""
        while self._buffer and not self._broken:
            remaining = deadline - clock()
            if remaining <= 0:
                return False
            try:
                select.select([], [self._fd], [], remaining)
            except (OSError, ValueError):
                return False
            self._on_writable()
        self._reactor.remove_writer(self._fd)
        return True


def write_direct(fd: int, data: bytes) -> None:
    """Best-effort blocking write for the moments before a loop exists."""
    try:
        os.write(fd, data)
    except OSError:
        pass
