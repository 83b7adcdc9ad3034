"""The crash report: built once from the outcome, shown to people and machines.

Owns: the report's fields (the JSON contract), the human block on stderr,
and writing the JSON file atomically.
Must not know: how the cause was decided or how the report is delivered.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .causes import Outcome, frame_text
from .tracebacks import Frame, ParsedException

# Lines of the tail repeated under the block: the full text was relayed above it.
HUMAN_TAIL_LINES = 8
# The innermost frames of a sampled stack shown in the block (the report has them all).
STACK_LINES = 6


@dataclass(frozen=True)
class SignalRecord:
    name: str
    at_s: float


@dataclass(frozen=True)
class Report:
    cause: str
    summary: str
    phase: str
    exit_code: Optional[int]
    signal: Optional[str]
    status: int
    command: tuple[str, ...]
    pid: Optional[int]
    started_at: float
    ended_at: float
    uptime_s: float
    ready_after_s: Optional[float]
    signals_received: tuple[SignalRecord, ...]
    exception: Optional[dict[str, Any]]
    stderr_tail: str
    where: Optional[str] = None
    memory: Optional[dict[str, Any]] = None
    memory_line: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)
    sentry_event_id: Optional[str] = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "cause": self.cause,
            "summary": self.summary,
            "phase": self.phase,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "status": self.status,
            "command": list(self.command),
            "pid": self.pid,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "uptime_s": round(self.uptime_s, 3),
            "ready_after_s": None if self.ready_after_s is None else round(self.ready_after_s, 3),
            "signals_received": [{"signal": s.name, "at_s": s.at_s} for s in self.signals_received],
            "memory": self.memory or _empty_memory(),
            "exception": self.exception,
            "where": self.where,
            "stderr_tail": self.stderr_tail,
            "sentry_event_id": self.sentry_event_id,
        }
        data.update(self.extra)
        return data


def _empty_memory() -> dict[str, Any]:
    return {
        "peak_rss_bytes": None,
        "cgroup_peak_bytes": None,
        "cgroup_limit_bytes": None,
        "oom_kills": None,
        "samples": [],
    }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def _frame_json(frame: Frame) -> dict[str, Any]:
    return {
        "filename": frame.filename,
        "lineno": frame.lineno,
        "function": frame.function,
        "context_line": frame.context_line,
        "in_app": frame.is_app(),
        "module": frame.module,
    }


def _exception_json(exc: ParsedException) -> dict[str, Any]:
    return {
        "type": exc.type,
        "value": exc.value,
        "frames": [_frame_json(f) for f in exc.frames],
    }


def exception_json(outcome: Outcome) -> Optional[dict[str, Any]]:
    if outcome.traceback is not None:
        data = _exception_json(outcome.traceback.exception)
        data["chain"] = [_exception_json(e) for e in outcome.traceback.chain]
        return data
    if outcome.fault is not None:
        data = _exception_json(outcome.fault.as_exception())
        data["chain"] = []
        return data
    return None


def where_text(outcome: Outcome) -> Optional[str]:
    return frame_text(outcome.where)


def human_block(
    report: Report, report_file: Optional[str], verdict: Optional[str] = None,
    report_error: Optional[str] = None, startup: Sequence[str] = (),
    hypotheses: Sequence[str] = (), advice: Sequence[str] = (),
) -> list[str]:
    """The lines a person reads on stderr; the caller adds the prefix.

    ``startup`` is the start-up waterfall (``importprofile.waterfall``).
    """
    if report.ready_after_s is not None:
        ready = f"ready after {report.ready_after_s:.2f} s"
    elif report.extra.get("handoff") == "none":
        ready = "readiness not tracked without a socket hand-off"
    else:
        ready = "never ready"
    if report.signal is not None:
        how = f"killed by {report.signal}"
    elif report.cause == "exec_failed":
        how = "did not start"
    else:
        how = f"exit code {report.exit_code}"
    lines = [
        f"==== the app ended: {report.cause} ====",
        f"summary:  {report.summary}",
    ]
    if report.where:
        lines.append(f"where:    {report.where}")
    lines += [
        f"phase:    {report.phase} ({ready})",
        f"status:   {how}; supervisor exits {report.status}",
        f"uptime:   {report.uptime_s:.2f} s",
    ]
    if report.signals_received:
        received = ", ".join(f"{s.name} at {s.at_s:.2f} s" for s in report.signals_received)
        lines.append(f"signals:  {received}")
    if report.memory_line:
        lines.append(f"memory:   {report.memory_line}")
    lines += [f"{'start-up:' if i == 0 else '':<10}{text}" for i, text in enumerate(startup)]
    stack = report.extra.get("last_stack") or {}
    if stack.get("frames"):
        lines.append(f"last stack (sampled {stack.get('age_s', 0.0):.1f} s before the end):")
        # importlib's own frames between the modules say nothing to a reader.
        shown = [f for f in stack["frames"] if not str(f["filename"]).startswith("<frozen ")]
        lines += [f"  {f['filename']}:{f['lineno']} in {f['function']}"
                  for f in shown[-STACK_LINES:]]
    tail = [line for line in report.stderr_tail.splitlines() if line.strip()]
    shown_tail, heading = _tail_to_show(tail)
    if shown_tail:
        lines.append(heading)
        lines += [f"  | {line[:300]}" for line in shown_tail]
    if report.extra.get("stderr_tail_kept") is False:
        lines.append("stderr:   not kept (the app wrote to the terminal itself)")
    if report_file and report_error:
        lines.append(f"report:   not written to {report_file}: {report_error}")
    elif report_file:
        lines.append(f"report:   {report_file}")
    lines += hypotheses
    if verdict:
        lines.append(f"verdict:  {verdict}")
    lines += advice
    lines.append("=" * 12)
    return lines


def _tail_to_show(tail: list[str]) -> tuple[list[str], str]:
    """The tail's last lines; for a faulthandler dump, the crashing thread's innermost frames.

    faulthandler prints the most recent call first and then the list of
    extension modules, so the last lines of the tail would be the outermost
    frames (click, uvicorn) and that list; where it hung or crashed is at the top.
    """
    for index in range(len(tail) - 1, -1, -1):
        line = tail[index]
        if line.startswith(("Current thread", "Thread 0x")) and "most recent call first" in line:
            frames = [entry for entry in tail[index + 1:] if entry.startswith("  File ")]
            if frames:
                return ([line, *frames[:HUMAN_TAIL_LINES - 1]],
                        "where it was (faulthandler, innermost first):")
    return tail[-HUMAN_TAIL_LINES:], "last lines of stderr:"


def write_report_file(path: str, data: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a report."""
    directory = os.path.dirname(os.path.abspath(path))
    # A volume's subdirectory may not exist yet: the report must not be lost to that.
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=directory)
    try:
        # mkstemp makes it private; a log shipper or sidecar must be able to read it.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
