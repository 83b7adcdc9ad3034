"""The last resort when the loop itself cannot go on: what tini would still do.

Owns: carrying on after an error out of the loop once the child runs:
forwarding (the signal handlers still do it), reaping, copying the child's
output, the exit status, and a short report. It leans on as little as it can:
``pid1``, ``child`` and, for the report file, ``report.write_report_file``; it
is imported with the loop, since without a free fd no module can be imported.
Must not know: causes beyond the few an exit status tells by itself.
"""

from __future__ import annotations

import os
import signal
import time

from .child import ExitStatus
from .pid1 import STOP_SIGNALS, signal_name, wait_for_child

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional

    from .log import Logger
    from .loop import Supervisor
    from .pid1 import Reaped, SignalInbox

FATAL_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)


def carry_on(
    error: BaseException,
    *,
    inbox: SignalInbox,
    pid: int,
    reaped: Optional[Reaped],
    copies: Mapping[int, int],
    keep: Optional[Callable[[bytes], None]],
    log: Logger,
    report_file: Optional[str],
    report: Callable[[], dict[str, Any]],
    stop_signal: Optional[int],
) -> int:
    """Wait for the child as tini would; return its status and leave what report we can.

    ``report`` gives what the loop knew (command, phase, signals, tail), each
    part already redacted; it may raise, and the report is then shorter.
    """
    log.error(
        f"internal error, the supervisor's loop cannot go on ({type(error).__name__}: {error}); "
        f"switched off: the health stub, the relay's tail, memory watching and Sentry. "
        f"Signals are still forwarded to pid {pid}, zombies reaped, and its exit status kept"
        + traceback_text(error)
    )
    received: list[tuple[int, bool]] = []
    if reaped is None:
        reaped, received = wait_for_child(inbox, pid, copies, keep)
    exit = ExitStatus.from_wait_status(reaped.wait_status)
    stopped = stop_signal is not None or any(
        forwarded and signum in STOP_SIGNALS for signum, forwarded in received
    )
    cause, summary = short_cause(exit, stopped)
    data: dict[str, Any] = {}
    try:
        data = report()
    except Exception as failure:  # the loop's state may be what broke
        data = {"report_error": f"{type(failure).__name__}: {failure}"}
    data.update(
        cause=cause,
        summary=f"{summary} (the supervisor's loop failed, so this report is short)",
        exit_code=exit.code,
        signal=None if exit.signal is None else signal_name(exit.signal),
        status=exit.status,
        pid=pid,
        ended_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        supervisor_error=f"{type(error).__name__}: {error}",
    )
    data.setdefault("signals_received", [])
    data["signals_received"] += [{"signal": signal_name(signum), "at_s": None}
                                 for signum, _ in received]
    written = _write(report_file, data)
    log.block([
        f"==== the app ended: {cause} ====",
        f"summary:  {data['summary']}",
        f"status:   {_how(exit)}; supervisor exits {exit.status}",
        *([written] if written else []),
        "=" * 12,
    ], level="info" if cause in ("stopped", "exited") else "error", cause=cause)
    return exit.status


def traceback_text(error: BaseException) -> str:
    """``":\n"`` and the traceback; "" when there is no fd or memory left to import it."""
    try:
        import traceback

        lines = traceback.format_exception(type(error), error, error.__traceback__)
    except Exception:  # EMFILE: even an import opens a file
        return ""
    return ":\n" + "".join(lines).rstrip()


def short_cause(exit: ExitStatus, stopped: bool) -> tuple[str, str]:
    """The cause an exit status tells by itself, without the tail or memory figures."""
    if exit.signal is None:
        if stopped:
            return "stopped", f"exited with code {exit.code} after a stop signal"
        if exit.code == 0:
            return "exited", "exited with code 0 although no stop was asked for"
        return "exit_code", f"exited with code {exit.code}"
    name = signal_name(exit.signal)
    if stopped and exit.signal in STOP_SIGNALS:
        return "stopped", f"ended by the forwarded {name}"
    if exit.signal in FATAL_SIGNALS:
        return "fatal_signal", f"killed by {name}"
    return "killed", f"killed by {name}"


def _how(exit: ExitStatus) -> str:
    if exit.signal is None:
        return f"exit code {exit.code}"
    return f"killed by {signal_name(exit.signal)}"


def _write(report_file: Optional[str], data: dict[str, Any]) -> str:
    """Write the report if asked; the block's line about it ("" when not asked)."""
    if not report_file:
        return ""
    try:
        from .report import write_report_file

        write_report_file(report_file, data)
    except Exception as failure:  # an OSError, or the report module itself
        return f"report:   not written to {report_file}: {failure}"
    return f"report:   {report_file}"


def direct_writer(fd: int) -> Callable[[bytes], None]:
    """Blocking writes for the supervisor's own lines: no loop will flush a buffer now."""

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except InterruptedError:
                continue
            except OSError:
                return

    return write


def carry_on_after(sup: Supervisor, error: Exception) -> int:
    """The loop failed while the child runs: carry on with what the loop had set up."""
    for sink in sup.sinks:  # what is buffered, then the lines go out directly
        try:
            sink.flush(time.monotonic() + 1.0)
        except Exception:  # it may be what broke: go on without it
            pass
    sup.log.set_writer(direct_writer(2))
    # Each open pipe (the relay closes its own at EOF) goes on where it went.
    pipes = [(fd, to) for fd, to in zip(sup._pipes, (2, 1)) if fd is not None]
    copies = {fd: to for n, (fd, to) in enumerate(pipes)
              if n >= len(sup.relays) or not sup.relays[n].closed}
    assert sup.pid is not None
    tail = sup.tail

    def report() -> dict[str, object]:
        text = tail.text() if tail is not None else ""
        return {"command": sup.redact.argv(sup.plan.argv), "phase": sup.phase.value,
                "uptime_s": round(sup.uptime(), 3), "ready_after_s": sup.ready_after_s,
                "signals_received": [{"signal": name, "at_s": at} for name, at in sup.signals],
                "stderr_tail": sup.redact.text(text)}

    if sup.bind_trap is not None and not sup.bind_trap.closed:
        sup.bind_trap.close()  # a bind after this would wait forever for an answer
    return carry_on(
        error, inbox=sup.inbox, pid=sup.pid, reaped=sup.reaped, copies=copies,
        keep=tail.append if tail is not None else None, log=sup.log,
        report_file=sup.config.report_file, report=report, stop_signal=sup.stop_signal,
    )
