"""Relaying the child's output byte for byte, and keeping a bounded tail.

Owns: reading the child's pipes, coalescing small writes, back-pressure when
our own output is congested, the tail kept for the report, and taking the
import profile's ``import time:`` lines out of the stream when the supervisor
asked the child for them (they never reach the user's log or the tail).
Must not know: what the bytes mean (``tracebacks`` parses the tail,
``importprofile`` the ``import time:`` lines).
"""

from __future__ import annotations

import os

from .output import Sink

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional, Union

    from .importprofile import ImportProfile
    from .reactor import Reactor, Timer

    Piece = Union[bytes, memoryview]

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


class ImportLineFilter:
    """Takes CPython's ``import time:`` lines out of a stream, keeping all else in order.

    Everything else passes at once, in the pieces it came in, except a line
    start that could still become ``import time:`` (at most that many bytes,
    held until the next read). An ``import time:`` line is held until its
    newline, up to ``MAX_LINE`` bytes: longer, it is the app's text and passes.
    A 100 MB line costs nothing but the searches; invalid UTF-8 is just bytes.
    It also notes uvicorn's start-up lines (``MILESTONES``) in the first
    ``WATCH_BYTES`` of output.
    """

    WATCH_BYTES = 4 << 20

    def __init__(
        self, on_line: Callable[[bytes], None],
        on_mark: Optional[Callable[[str], None]] = None,
    ) -> None:
        from .importprofile import MARKER, MAX_LINE, MILESTONES, is_import_line

        self._on_line = on_line
        self._on_mark = on_mark
        self._marker = MARKER
        self._newline_marker = b"\n" + MARKER
        self._max_line = MAX_LINE
        self._is_import_line = is_import_line
        self._watch = list(MILESTONES) if on_mark is not None else []
        self._watched = 0
        self._held = b""
        self._at_line_start = True

    def feed(self, data: bytes | bytearray, n: int, emit: Callable[[Piece], None]) -> None:
        """Pass ``data[:n]`` to ``emit`` without the import lines, in order."""
        if self._held:
            data = self._held + data[:n]
            n = len(data)
            self._held = b""
        if self._watch:
            self._look_for_milestones(data, n)
        with memoryview(data) as view:
            start = self._scan(data, n, view, emit)
            if start < n:
                with view[start:n] as rest:
                    emit(rest)

    def _scan(
        self, data: bytes | bytearray, n: int, view: memoryview, emit: Callable[[Piece], None]
    ) -> int:
        """Emit up to each import line and hand the line over; return where output resumes.

        Every import line has a ``|``, a byte most output lacks: ``find`` of one
        byte runs at memory speed, and only lines with a bar are looked at.
        """
        marker, max_line = self._marker, self._max_line
        start = floor = 0  # output resumes at start; lines begin at or after floor
        if not self._at_line_start:
            newline = data.find(b"\n", 0, n)
            if newline < 0:
                return 0  # all of it continues a line that was not an import line
            floor = newline + 1
        pos = floor
        while True:
            bar = data.find(b"|", pos, n)
            if bar < 0:
                break
            line_start = data.rfind(b"\n", pos, bar) + 1 or pos
            newline = data.find(b"\n", bar, n)
            if not data.startswith(marker, line_start, n):
                if newline < 0:
                    break
                pos = newline + 1
                continue
            if newline < 0:
                if n - line_start <= max_line:
                    return self._hold(data, n, line_start, start, view, emit)
                self._at_line_start = False  # too long for an import line: the app's text
                return start
            if newline - line_start <= max_line:
                line = bytes(data[line_start:newline])
                if self._is_import_line(line):
                    if line_start > start:
                        with view[start:line_start] as before:
                            emit(before)
                    self._on_line(line)
                    start = newline + 1
            pos = newline + 1
        # The last line, unfinished: it may still become an import line.
        last = data.rfind(b"\n", floor, n)
        tail = last + 1 if last >= 0 else floor
        if tail < n and n - tail <= max_line and tail >= start:
            head = bytes(data[tail:min(n, tail + len(marker))])
            if marker.startswith(head) or head.startswith(marker):
                return self._hold(data, n, tail, start, view, emit)
        self._at_line_start = tail >= n
        return start

    def _hold(
        self, data: bytes | bytearray, n: int, pos: int, start: int, view: memoryview,
        emit: Callable[[Piece], None],
    ) -> int:
        """Keep ``data[pos:n]`` (a possible import line's start) for the next read."""
        if pos > start:
            with view[start:pos] as before:
                emit(before)
        self._held = bytes(data[pos:n])
        self._at_line_start = True
        return n

    def flush(self) -> bytes:
        """What is held back, at the end of the stream: it was not an import line."""
        held, self._held = self._held, b""
        return held

    def _look_for_milestones(self, data: bytes | bytearray, n: int) -> None:
        assert self._on_mark is not None
        for item in list(self._watch):
            if data.find(item[1], 0, n) >= 0:
                self._watch.remove(item)
                self._on_mark(item[0])
        self._watched += n
        if self._watched > self.WATCH_BYTES:
            self._watch = []


def import_filter(
    profile: ImportProfile, clock: Callable[[], float], started: float
) -> ImportLineFilter:
    """A filter that feeds ``profile``, each line stamped with its arrival after ``started``."""
    return ImportLineFilter(
        on_line=lambda line: profile.add_line(line, clock() - started),
        on_mark=lambda name: profile.mark(name, clock() - started),
    )


class Relay:
    """Copies one pipe from the child to one of our streams, as it comes."""

    def __init__(
        self, reactor: Reactor, source_fd: int, sink: Sink, tail: Optional[Tail] = None,
        line_filter: Optional[ImportLineFilter] = None,
    ) -> None:
        self._reactor = reactor
        self._fd = source_fd
        self._sink = sink
        self._tail = tail
        self._filter = line_filter
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
        if self._filter is not None:
            self._filter.feed(self._buffer, count, self._pass)
        else:
            with memoryview(self._buffer)[:count] as chunk:
                self._pass(chunk)
        return count

    def _pass(self, chunk: Piece) -> None:
        self._sink.write(chunk)
        if self._tail is not None:
            self._tail.append(chunk)
        if self.on_chunk is not None:
            self.on_chunk(bytes(chunk))

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
        if self._filter is not None:
            held = self._filter.flush()
            if held:
                self._pass(held)
        self.closed = True
        self._reactor.remove_reader(self._fd)
        os.close(self._fd)
