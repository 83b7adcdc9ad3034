"""What the loop saw of one run, frozen once the child is gone.

Owns: ``RunFacts``, the one value that leaves the loop. ``causes`` decides the
cause from it (through ``ending()``) and ``finish`` builds the report from it.
Must not know: how the facts were gathered (that is the loop's job) or how
they are shown (that is the report's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .causes import Ending

if TYPE_CHECKING:
    from .child import ExecFailure, ExitStatus
    from .memory import MemoryFacts


@dataclass(frozen=True)
class RunFacts:
    """Everything known when the child is gone (or never started)."""

    command: tuple[str, ...]  # what the user asked to run
    argv: tuple[str, ...]  # what the child ran, after the hand-off rewrote it
    handoff: str  # the hand-off mode's name
    pid: Optional[int]
    started_at: float  # wall clock, for the report's timestamps
    ended_at: float
    uptime_s: float  # on the loop's clock
    phase: str  # the phase the child was in when it ended
    ready_after_s: Optional[float]
    signals: tuple[tuple[str, float], ...]  # (name, seconds after start) as received
    forwarded: frozenset[int]  # every signal forwarded to the child
    stop_signal: Optional[int]  # the stop signal that started the grace, if any
    stop_timeout_s: float
    stop_timed_out: bool
    startup_timed_out: bool
    startup_summary: str  # why start-up was cut short, when it was
    exit: Optional[ExitStatus]  # None when the command never started
    exec_failure: Optional[ExecFailure]
    memory: Optional[MemoryFacts]
    stderr_tail: str
    interactive: bool  # the child had the terminal (Ctrl-C reached it directly)

    def ending(self) -> Ending:
        return Ending(
            exit=self.exit,
            exec_failure=self.exec_failure,
            stop_signal=self.stop_signal,
            stop_timed_out=self.stop_timed_out,
            startup_timed_out=self.startup_timed_out,
            startup_summary=self.startup_summary,
            oom_evidence=self.memory.oom_evidence if self.memory is not None else None,
            stderr_tail=self.stderr_tail,
            stop_timeout_s=self.stop_timeout_s,
            command=self.command[0],
            terminal_interrupt=self.interactive,
            forwarded=self.forwarded,
        )
