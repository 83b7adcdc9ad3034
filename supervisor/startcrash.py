"""Processes that die at start-up with a traceback while the server waits on.

Owns: telling, from the child's stderr while it starts, that the app's
processes keep dying of an exception: uvicorn's ``--workers`` master
restarts a worker that fails to import, for ever, and a reloader waits for
a change. A death is a traceback that the interpreter printed on the way out
(not one a server logged and survived, not one ``logger.exception`` wrote).
After ``DEATHS`` deaths, or ``WINDOW_S`` after the start once one died (and
never sooner than ``AFTER_FIRST_DEATH_S`` after the first), the run is
concluded: ``on_conclude`` gets the last traceback (the loop stops the
server). A reloading command is told each crash (``on_crash``) and left to
wait for the fix.
Must not know: processes, signals or the report.
"""

from __future__ import annotations

# Not tracebacks at the top: most apps start without one, and the supervisor
# would hold the parser (and re) for the app's whole life.
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, List, Optional

    from .reactor import Reactor, Timer
    from .tracebacks import ParsedTraceback

DEATHS = 3
# Concluded this long after the start at the latest, once something died...
WINDOW_S = 10.0
# ...but never sooner than this after the first death.
AFTER_FIRST_DEATH_S = 2.0
# A traceback comes in a burst: it is read once the stream has been quiet this long.
QUIET_S = 0.15
MAX_WAIT_S = 1.0
# What is kept of the stream to find a traceback in (a deep stack with source is long).
MAX_PENDING_LINES = 4000
_MARKERS = ("Traceback (most recent call last)", "\u256d")


class StartupCrashWatch:
    """Counts the deaths at start-up in the child's stderr; call ``stop()`` once ready."""

    def __init__(
        self,
        reactor: Reactor,
        *,
        reloads: bool,
        started: float,
        on_conclude: Callable[[ParsedTraceback, int], None],
        on_crash: Callable[[ParsedTraceback], None],
    ) -> None:
        self._reactor = reactor
        self._reloads = reloads
        self._started = started
        self._on_conclude = on_conclude
        self._on_crash = on_crash
        self._lines: List[str] = []
        self._partial = ""
        self._marked_at: Optional[float] = None
        self._quiet: Optional[Timer] = None
        self._window: Optional[Timer] = None
        self.deaths = 0
        self.last: Optional[ParsedTraceback] = None
        self.watching = True

    def chunk(self, data: bytes) -> None:
        """A piece of the child's stderr."""
        if not self.watching:
            return
        text = self._partial + data.decode("utf-8", "replace")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        *complete, self._partial = text.split("\n")
        self._lines.extend(complete)
        if len(self._lines) > MAX_PENDING_LINES:
            del self._lines[: len(self._lines) - MAX_PENDING_LINES]
        now = self._reactor.clock()
        if self._marked_at is None and any(marker in line for line in complete
                                           for marker in _MARKERS):
            self._marked_at = now
        if self._marked_at is not None:
            # Read once the stream is quiet, and at the latest MAX_WAIT_S after the mark.
            if self._quiet is not None and now - self._marked_at < MAX_WAIT_S:
                self._quiet.cancel()
                self._quiet = None
            if self._quiet is None:
                self._quiet = self._reactor.call_later(QUIET_S, self._read)

    def stop(self) -> None:
        self.watching = False
        for timer in (self._quiet, self._window):
            if timer is not None:
                timer.cancel()

    def _read(self) -> None:
        """Count the deaths in what came since the last one, and keep the rest."""
        self._quiet = None
        if not self.watching:
            return
        from .tracebacks import find_tracebacks, split_lines

        lines = split_lines("\n".join([*self._lines, self._partial]))
        consumed = 0
        for found in find_tracebacks(lines):
            if found.handled or found.logged:
                consumed = found.end
                continue
            consumed = found.end
            self.deaths += 1
            self.last = found.traceback
            if self._reloads:
                self._on_crash(found.traceback)
            elif self.deaths == 1:
                # A server that exits by itself after its worker's death gets the time to.
                delay = max(AFTER_FIRST_DEATH_S, self._started + WINDOW_S - self._reactor.clock())
                self._window = self._reactor.call_later(delay, self._conclude)
        self._lines = self._lines[min(consumed, len(self._lines)) :]
        pending = any(marker in line for line in self._lines for marker in _MARKERS)
        self._marked_at = self._reactor.clock() if pending else None
        if not self._reloads and self.deaths >= DEATHS:
            self._conclude()

    def _conclude(self) -> None:
        if self.watching and self.last is not None:
            self.stop()
            self._on_conclude(self.last, self.deaths)
