"""The words and contexts of a crash event: what Sentry shows around the exception.

Owns: the message of a cause that left no traceback (with its figures), the
tags, the memory, process, container and start-up contexts, the breadcrumbs
(the run's steps and the start-up's), and the exception value built from a
sampled stack when there was no traceback.
Must not know: how the event is sent, or how the report was gathered.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

EXTRA_TAIL_CHARS = 4096
# Synthetic exception types for causes that leave no traceback. They are part
# of the fingerprint, so renaming one splits existing issues.
SYNTHETIC_TYPES: Mapping[str, str] = {
    "oom_killed": "OOMKilled",
    "killed": "Killed",
    "exec_failed": "ExecFailed",
    "exit_code": "NonZeroExit",
    "exited": "UnexpectedExit",
    "stop_timeout": "StopTimeout",
    "port_in_use": "PortInUse",
    "startup_timeout": "StartupTimeout",
    "fatal_signal": "FatalSignal",
}


def synthetic_value(report: Mapping[str, Any]) -> dict[str, Any]:
    cause = str(report.get("cause") or "unknown")
    exc_type = SYNTHETIC_TYPES.get(cause, "Crash")
    if cause == "fatal_signal" and report.get("signal"):
        # Named like a native crash report, so SIGSEGV and SIGABRT group apart.
        exc_type = str(report["signal"])
    return {"type": exc_type, "value": synthetic_message(report)}


def synthetic_message(report: Mapping[str, Any]) -> str:
    cause = report.get("cause")
    memory: Mapping[str, Any] = report.get("memory") or {}
    summary = str(report.get("summary") or "")
    when = when_text(report)
    peak = memory.get("cgroup_peak_bytes") or memory.get("peak_rss_bytes")
    limit = memory.get("cgroup_limit_bytes")
    if cause == "oom_killed":
        text = "killed by the OOM killer"
        if peak and limit:
            text += f" at {size(peak)} of {size(limit)}"
        elif peak:
            text += f" at {size(peak)} (no memory limit known)"
        return f"{text} {when}"
    if cause == "killed":
        at = f" at {size(peak)}" if peak else ""
        return f"killed by SIGKILL{at} {when}, with no sign of the OOM killer"
    if cause == "exec_failed":
        argv0 = (report.get("command") or ["<command>"])[0]
        return summary or f"could not start {argv0!r} (exit {report.get('exit_code')})"
    if cause == "port_in_use":
        return summary or f"could not bind its address: address already in use {when}"
    if cause == "exit_code":
        return f"exited with code {report.get('exit_code')} {when}"
    if cause == "exited":
        return f"exited with code 0 {when} although no stop was asked for"
    if cause == "stop_timeout":
        received = report.get("signals_received") or []
        if received:
            last = received[-1]
            waited = number(report.get("uptime_s"), 0.0) - number(last.get("at_s"), 0.0)
            return f"did not exit within {waited:.1f} s of {last.get('signal')} and was killed"
        return f"did not exit within the grace period and was killed {when}"
    if cause == "startup_timeout":
        return f"not ready after {number(report.get('uptime_s'), 0.0):.1f} s; killed"
    if cause == "fatal_signal":
        name = str(report.get("signal") or "a fatal signal")
        description = signal_description(report.get("signal"))
        return f"killed by {name}{description} {when}"
    return summary or f"ended: {cause} {when}"


def when_text(report: Mapping[str, Any]) -> str:
    uptime = report.get("uptime_s")
    text = f"after {number(uptime, 0.0):.1f} s" if uptime is not None else ""
    if report.get("phase") == "starting":
        text += " while starting"
    return text.strip()


def tags(report: Mapping[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {"cause": str(report.get("cause") or "unknown")}
    for name in ("phase", "exit_code", "signal"):
        # Sentry rejects null tag values; an absent tag still filters as "none".
        if report.get(name) is not None:
            tags[name] = str(report[name])
    return tags


def memory_context(memory: Mapping[str, Any]) -> dict[str, Any]:
    # Sentry trims a context to ten keys: keep the ones that explain a death.
    peak = memory.get("cgroup_peak_bytes") or memory.get("peak_rss_bytes")
    context: dict[str, Any] = {
        "type": "memory",
        "peak": size(peak) if peak else None,
        "limit": size(memory["cgroup_limit_bytes"]) if memory.get("cgroup_limit_bytes") else None,
        "peak_rss_bytes": memory.get("peak_rss_bytes"),
        "cgroup_peak_bytes": memory.get("cgroup_peak_bytes"),
        "cgroup_limit_bytes": memory.get("cgroup_limit_bytes"),
        "oom_kills": memory.get("oom_kills"),
        "evidence": memory.get("oom_evidence"),
        "sample_count": len(memory.get("samples") or []),
    }
    return {k: v for k, v in context.items() if v is not None}


def process_context(report: Mapping[str, Any]) -> dict[str, Any]:
    command = report.get("command") or []
    context: dict[str, Any] = {
        "type": "process",
        "command": " ".join(quote(str(arg)) for arg in command),
        "pid": report.get("pid"),
        "uptime_s": report.get("uptime_s"),
        "ready_after_s": report.get("ready_after_s"),
        "started_at": report.get("started_at"),
        "ended_at": report.get("ended_at"),
        "status": report.get("status"),
        "signals_received": [s.get("signal") for s in report.get("signals_received") or []],
    }
    return {k: v for k, v in context.items() if v is not None}


def container_context(memory: Mapping[str, Any], hostname: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "type": "container",
        "hostname": hostname,
        "cgroup_version": memory.get("cgroup_version"),
        "memory_limit_bytes": memory.get("cgroup_limit_bytes"),
        "supervisor_is_pid_1": os.getpid() == 1,
    }
    return {k: v for k, v in context.items() if v is not None}


def extra_data(report: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if report.get("summary"):
        extra["summary"] = str(report["summary"])
    tail = str(report.get("stderr_tail") or "")
    if tail:
        extra["stderr_tail"] = tail[-EXTRA_TAIL_CHARS:]
    return extra


def breadcrumbs(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Start, readiness, signals and end on one timeline, when the start is known."""
    started = epoch(report.get("started_at"))
    if started is None:
        return []
    crumbs: list[dict[str, Any]] = [
        {"timestamp": started, "category": "process", "message": "child started"}
    ]
    ready = report.get("ready_after_s")
    if ready is not None:
        crumbs.append(
            {
                "timestamp": started + number(ready, 0.0),
                "category": "process",
                "message": f"ready after {number(ready, 0.0):.2f} s",
            }
        )
    for received in report.get("signals_received") or []:
        crumbs.append(
            {
                "timestamp": started + number(received.get("at_s"), 0.0),
                "category": "signal",
                "message": f"{received.get('signal')} received and forwarded",
            }
        )
    crumbs += startup_breadcrumbs(report, started)
    ended = epoch(report.get("ended_at"))
    if ended is not None:
        crumbs.append(
            {
                "timestamp": ended,
                "category": "process",
                "level": "fatal",
                "message": str(report.get("summary") or report.get("cause") or "ended"),
            }
        )
    crumbs.sort(key=lambda c: float(c["timestamp"]))
    return crumbs


def startup_breadcrumbs(report: Mapping[str, Any], started: float) -> list[dict[str, Any]]:
    """The start-up's steps: interpreter, imports, uvicorn's lifespan, the stack samples."""
    startup: Mapping[str, Any] = report.get("startup") or {}
    steps: list[tuple[Any, str]] = []
    if startup.get("interpreter_ready_s") is not None:
        steps.append((startup["interpreter_ready_s"], "interpreter ready"))
    last = startup.get("last_import")
    if last:
        slowest = ", ".join(
            f"{item.get('module')} {number(item.get('cumulative_s'), 0.0):.2f} s"
            for item in (startup.get("slowest_imports") or [])[:3]
        )
        text = (f"{startup.get('import_count')} imports, "
                f"{number(startup.get('import_total_s'), 0.0):.2f} s; last {last.get('module')}")
        steps.append((last.get("at_s"), text + (f"; slowest {slowest}" if slowest else "")))
    for name, at in (startup.get("milestones") or {}).items():
        steps.append((at, MILESTONE_WORDS.get(name, name)))
    stack = report.get("last_stack")
    if stack and stack.get("frames"):
        frame = stack["frames"][-1]
        steps.append((stack.get("at_s"), f"stack sampled ({stack.get('why')}): "
                      f"{frame.get('function')} at {frame.get('filename')}:{frame.get('lineno')}"))
    return [
        {"timestamp": started + number(at, 0.0), "category": "startup", "message": text}
        for at, text in steps if at is not None
    ]


MILESTONE_WORDS = {
    "server_process": "uvicorn: server process started",
    "lifespan_start": "uvicorn: app loaded, lifespan startup begins",
    "lifespan_done": "uvicorn: lifespan startup complete",
}


def startup_context(report: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The ``startup`` context: the import profile's summary and the last stack sample."""
    startup: Mapping[str, Any] = report.get("startup") or {}
    stack: Mapping[str, Any] = report.get("last_stack") or {}
    if not startup and not stack:
        return None
    last = startup.get("last_import") or {}
    context: dict[str, Any] = {
        "type": "startup",
        "import_count": startup.get("import_count"),
        "import_total_s": startup.get("import_total_s"),
        "slowest_imports": [
            f"{item.get('module')} {number(item.get('cumulative_s'), 0.0):.3f} s"
            for item in startup.get("slowest_imports") or []
        ] or None,
        "last_import": last.get("module"),
        "open_imports": startup.get("open_imports") or None,
        "interpreter_ready_s": startup.get("interpreter_ready_s"),
        "ready_after_s": report.get("ready_after_s"),
        "stack_sampled_at_s": stack.get("at_s"),
        "stack_sampling": startup.get("stack_sampling"),
    }
    return {k: v for k, v in context.items() if v is not None}


def sampled_stacktrace(report: Mapping[str, Any]) -> Optional[tuple[list[dict[str, Any]], str]]:
    """(frames oldest first, how old) of the last stack sample, when there is one."""
    stack: Mapping[str, Any] = report.get("last_stack") or {}
    frames = [dict(frame) for frame in stack.get("frames") or []]
    if not frames:
        return None
    age = stack.get("age_s")
    when = f"{number(age, 0.0):.1f} s before the end" if age is not None else "before the end"
    return frames, f"stack sampled by py-spy {when}"


def epoch(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        # fromisoformat on 3.9/3.10 does not take the "Z" suffix.
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def signal_number(name: Any) -> Optional[int]:
    if not name:
        return None
    import signal  # about 5 ms (enum); only events with a signal pay it

    try:
        return int(signal.Signals[str(name)])
    except KeyError:
        return None


def signal_description(name: Any) -> str:
    number = signal_number(name)
    if number is None:
        return ""
    import signal

    text = signal.strsignal(number)
    return f" ({text})" if text else ""


def size(value: Any) -> str:
    n = number(value, 0.0)
    if n >= 10 * 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def quote(arg: str) -> str:
    return arg if arg and re.fullmatch(r"[\w@%+=:,./-]+", arg) else json.dumps(arg)
