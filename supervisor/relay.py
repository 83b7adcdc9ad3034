"""Relaying the child's output byte for byte, and keeping a bounded tail.

Owns: reading the child's pipes, coalescing small writes, back-pressure when
our own output is congested, and the tail kept for the report.
Must not know: what the bytes mean (``tracebacks`` parses the tail).
"""

from __future__ import annotations

import os

from .output import Sink

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .reactor import Reactor, Timer

READ_SIZE = 1 << 20
# A read shorter than this means the child writes in small pieces: wait a
# moment so that the next read carries many of them (one syscall pair, not
# thousands). The delay is far below what a person or a log shipper notices.
COALESCE_BELOW = 64 * 1024
COALESCE_DELAY_S = 0.002
TAIL_BYTES = 64 * 1024
TAIL_LINES = 200


class Tail:
    """The last ``TAIL_BYTES`` bytes of a stream; ``text()`` gives its last lines."""

    def __init__(self, max_bytes: int = TAIL_BYTES, max_lines: int = TAIL_LINES) -> None:
        self._data = bytearray()
        self._max_bytes = max_bytes
        self._max_lines = max_lines

    def append(self, chunk: bytes | memoryview) -> None:
        if len(chunk) >= self._max_bytes:
            self._data[:] = chunk[-self._max_bytes :]
            return
        self._data += chunk
        excess = len(self._data) - self._max_bytes
        if excess > 0:
            del self._data[:excess]

    def text(self) -> str:
        text = self._data.decode("utf-8", "replace")
        lines = text.split("\n")
        if len(lines) > self._max_lines + 1:
            lines = lines[-(self._max_lines + 1) :]
        return "\n".join(lines)


class Relay:
    """Copies one pipe from the child to one of our streams, as it comes."""

    def __init__(
        self, reactor: Reactor, source_fd: int, sink: Sink, tail: Optional[Tail] = None
    ) -> None:
        self._reactor = reactor
        self._fd = source_fd
        self._sink = sink
        self._tail = tail
        self._buffer = bytearray(READ_SIZE)
        self._resume_timer: Optional[Timer] = None
        self.closed = False
        # Sees each chunk as it passes (readiness from log lines where /proc cannot tell).
        self.on_chunk: Optional[Callable[[bytes], None]] = None
        os.set_blocking(source_fd, False)
        reactor.add_reader(source_fd, self._on_readable)

    def _on_readable(self) -> None:
        if self._sink.congested:
            # Stop reading: the pipe fills and the child blocks in write(),
            # exactly as if it wrote to the stalled consumer itself.
            self._reactor.remove_reader(self._fd)
            self._sink.on_drain(self._resume)
            return
        count = self._read_once()
        if count is not None and 0 < count < COALESCE_BELOW:
            self._reactor.remove_reader(self._fd)
            self._resume_timer = self._reactor.call_later(COALESCE_DELAY_S, self._resume)

    def _read_once(self) -> Optional[int]:
        """Move one read's worth; None when nothing was there, 0 at EOF."""
        try:
            count = os.readv(self._fd, [self._buffer])
        except BlockingIOError:
            return None
        except InterruptedError:
            return None
        if count == 0:
            self._close()
            return 0
        with memoryview(self._buffer)[:count] as chunk:
            self._sink.write(chunk)
            if self._tail is not None:
                self._tail.append(chunk)
            if self.on_chunk is not None:
                self.on_chunk(bytes(chunk))
        return count

    def _resume(self) -> None:
        self._resume_timer = None
        if not self.closed:
            self._reactor.add_reader(self._fd, self._on_readable)

    def drain(self) -> None:
        """After the child ended: move what is already in the pipe, then stop.

        Not until EOF: an orphaned grandchild may hold the pipe open forever.
        """
        if self._resume_timer is not None:
            self._resume_timer.cancel()
        while not self.closed:
            count = self._read_once()
            if not count:
                break
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._reactor.remove_reader(self._fd)
        os.close(self._fd)
