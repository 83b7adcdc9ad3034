"""Deciding why the child ended: one cause word, a summary, and the exit status.

Owns: the table of causes and the order of the rules that pick one.
Must not know: how the facts were gathered; this is a pure function of them.
"""

from __future__ import annotations

import enum
import re
import signal
from dataclasses import dataclass
from typing import Optional

from .child import ExecFailure, ExitStatus
from .faultdump import FaulthandlerDump, find_faulthandler_dump
from .pid1 import signal_name
from .tracebacks import (
    Frame,
    ParsedTraceback,
    find_fatal_traceback,
    find_tracebacks,
    is_server_halt,
    split_lines,
)


class Cause(enum.Enum):
    EXEC_FAILED = "exec_failed"
    PYTHON_EXCEPTION = "python_exception"
    OOM_KILLED = "oom_killed"
    KILLED = "killed"
    FATAL_SIGNAL = "fatal_signal"
    STARTUP_TIMEOUT = "startup_timeout"
    STOP_TIMEOUT = "stop_timeout"
    PORT_IN_USE = "port_in_use"
    EXIT_CODE = "exit_code"
    EXITED = "exited"
    STOPPED = "stopped"

    @property
    def is_crash(self) -> bool:
        return self is not Cause.STOPPED


FATAL_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
)
STARTUP_TIMEOUT_STATUS = 124
# uvicorn: "[Errno 98] error while attempting to bind on address ...: address already in use"
# Lines after a traceback that still let it be the cause: uvicorn's "Application
# startup failed. Exiting.", workers' shutdown lines, a multi-line message.
TRAILING_LINES = 12
_ADDRESS_IN_USE = re.compile(r"address already in use|\[Errno (98|48)\]", re.IGNORECASE)


@dataclass(frozen=True)
class Ending:
    """Everything known when the child is gone."""

    exit: Optional[ExitStatus]  # None when it never started
    exec_failure: Optional[ExecFailure] = None
    stop_signal: Optional[int] = None  # a stop signal the supervisor forwarded
    stop_timed_out: bool = False
    startup_timed_out: bool = False
    startup_summary: str = "not ready within the startup timeout"
    oom_evidence: Optional[str] = None
    stderr_tail: str = ""
    stop_timeout_s: float = 0.0
    command: str = ""
    # The child had the terminal: a Ctrl-C went to it directly, not through us.
    terminal_interrupt: bool = False
    # Every signal the supervisor forwarded to the child during the run.
    forwarded: frozenset[int] = frozenset()
    # The supervisor stopped the child because its processes kept dying at start-up
    # with this traceback (a crash loop, or a server that would wait on regardless).
    startup_crash: Optional[ParsedTraceback] = None


@dataclass(frozen=True)
class Outcome:
    cause: Cause
    summary: str
    status: int
    traceback: Optional[ParsedTraceback] = None
    fault: Optional[FaulthandlerDump] = None

    @property
    def where(self) -> Optional[Frame]:
        """The innermost frame of the app's own code, if any stack was seen."""
        if self.traceback is not None:
            return self.traceback.innermost_app_frame()
        if self.fault is not None:
            return self.fault.innermost_app_frame()
        return None


def classify(ending: Ending) -> Outcome:
    if ending.exec_failure is not None or ending.exit is None:
        failure = ending.exec_failure or ExecFailure(0, "unknown error")
        return Outcome(
            Cause.EXEC_FAILED,
            f"cannot run {ending.command!r}: {failure.message}",
            failure.status,
        )
    exit = ending.exit
    tail = ending.stderr_tail
    if ending.startup_crash is not None:
        return Outcome(Cause.PYTHON_EXCEPTION, ending.startup_crash.summary(),
                       exit.code if exit.code else 1, traceback=ending.startup_crash)
    if ending.startup_timed_out:
        return _with_stack(Cause.STARTUP_TIMEOUT, ending.startup_summary,
                           STARTUP_TIMEOUT_STATUS, tail)
    if ending.stop_timed_out:
        stop = signal_name(ending.stop_signal or signal.SIGTERM)
        return Outcome(
            Cause.STOP_TIMEOUT,
            f"did not exit within {ending.stop_timeout_s:g} s of {stop}; "
            "its process group was killed",
            exit.status,
        )
    interrupted = exit.signal == signal.SIGINT or exit.code == 128 + signal.SIGINT
    if ending.terminal_interrupt and interrupted:
        return Outcome(Cause.STOPPED, "stopped by Ctrl-C (SIGINT from the terminal)",
                       exit.status)
    if ending.stop_signal is not None and _is_clean_stop(exit, ending.stop_signal):
        how = "exit code 0" if exit.code == 0 else f"exit status {exit.status}"
        return Outcome(
            Cause.STOPPED, f"stopped by {signal_name(ending.stop_signal)} as asked ({how})",
            exit.status,
        )
    if exit.signal is not None:
        return _by_signal(exit, ending)
    parsed = find_fatal_traceback(tail)
    if exit.code == 0:
        # hypercorn exits 0 after its worker died of the app's exception: still a crash.
        if parsed is not None and _ended_the_run(tail, parsed):
            return Outcome(Cause.PYTHON_EXCEPTION, parsed.summary(), 1, traceback=parsed)
        return Outcome(Cause.EXITED, "exited with code 0 although no stop was asked for", 0)
    after = tail
    if parsed is not None:
        after = _text_after(tail, parsed)
        # What came after the traceback decides whether it ended the program:
        # a few shutdown lines, yes; the app's normal output, no (it was logged
        # and recovered from, and something later ended the run).
        if _ended_the_run(tail, parsed):
            return Outcome(Cause.PYTHON_EXCEPTION, parsed.summary(), exit.status,
                           traceback=parsed)
    last = _last_line(tail)
    in_use = _ADDRESS_IN_USE.search(after)
    if in_use:
        start = after.rfind("\n", 0, in_use.start()) + 1
        end = after.find("\n", in_use.end())
        line = after[start : end if end >= 0 else len(after)].strip()[:300]
        return Outcome(Cause.PORT_IN_USE, line or "address already in use", exit.status)
    summary = f"exited with code {exit.code}" + (f": {last}" if last else "")
    return Outcome(Cause.EXIT_CODE, summary, exit.status)


def _by_signal(exit: ExitStatus, ending: Ending) -> Outcome:
    signum = exit.signal or 0
    name = signal_name(signum)
    if signum in FATAL_SIGNALS:
        return _with_stack(Cause.FATAL_SIGNAL, f"killed by {name}", exit.status,
                           ending.stderr_tail)
    if signum == signal.SIGKILL and ending.oom_evidence:
        return Outcome(Cause.OOM_KILLED, f"killed by the OOM killer ({ending.oom_evidence})",
                       exit.status)
    if signum == signal.SIGKILL:
        return Outcome(Cause.KILLED, "killed by SIGKILL, with no sign of the OOM killer "
                       "(sent by another process or the platform)", exit.status)
    if signum in ending.forwarded:
        return Outcome(Cause.KILLED, f"killed by {name}, which the supervisor forwarded to it",
                       exit.status)
    return Outcome(Cause.KILLED, f"killed by {name}, which the supervisor did not send",
                   exit.status)


def _text_after(tail: str, parsed: ParsedTraceback) -> str:
    """The text after the final exception's ``Type: value`` (its whole value)."""
    exception = parsed.exception
    short_type = exception.type.rpartition(".")[2]
    for kind in (exception.type, short_type):
        for needle in (f"{kind}: {exception.value}", f"{kind}: "
                       f"{exception.value.partition(chr(10))[0]}", kind):
            index = tail.rfind(needle)
            if index >= 0:
                end = tail.find("\n", index + len(needle))
                return "" if end < 0 else tail[end + 1 :]
    return ""


def _ended_the_run(tail: str, parsed: ParsedTraceback) -> bool:
    """Few lines after it: shutdown lines, and a server's own halt (gunicorn's arbiter)."""
    after = split_lines(_text_after(tail, parsed))
    for found in find_tracebacks(after):
        if is_server_halt(found.traceback):
            after[found.start : found.end] = [""] * (found.end - found.start)
    text = "\n".join(after)
    return not _ADDRESS_IN_USE.search(text) and _significant_lines(text) <= TRAILING_LINES


def _significant_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def _with_stack(cause: Cause, what: str, status: int, tail: str) -> Outcome:
    """A fatal signal or a hang: name the frame where faulthandler saw it."""
    fault = find_faulthandler_dump(tail)
    if fault is None:
        return Outcome(cause, what, status)
    frame = fault.innermost_app_frame()
    where = f" in {_frame_text(frame)}" if frame is not None else ""
    return Outcome(cause, f"{what} ({fault.error}){where}", status, fault=fault)


def _is_clean_stop(exit: ExitStatus, stop_signal: int) -> bool:
    # uvicorn re-raises SIGTERM after a graceful shutdown; shells exit 128+N.
    return exit.code == 0 or exit.signal == stop_signal or exit.code == 128 + stop_signal


def _frame_text(frame: Frame) -> str:
    return f"{frame.filename}:{frame.lineno} in {frame.function}"


def frame_text(frame: Optional[Frame]) -> Optional[str]:
    return _frame_text(frame) if frame is not None else None


def _last_line(tail: str) -> str:
    for line in reversed(tail.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""

