"""The usual guesses about a failed start, each confirmed or ruled out by this run.

Owns: the seven hypotheses people reach for when a deployment fails (out of
memory, a start-up too slow for the health check, an import error, missing
configuration, the network needed at start-up, a native crash, a kill from
outside), each with a finding ("confirmed", "ruled out", "no evidence") and
one line of evidence from this run; and their lines for the human block.
Must not know: how the facts were gathered. Pure: the input is the report's
JSON, the output values; the same report always gives the same findings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

_MIB = 1024 * 1024
FATAL_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT")
_IMPORT_ERRORS = ("ModuleNotFoundError", "ImportError")
_CONFIG_ERRORS = ("EnvError", "ImproperlyConfigured", "MissingEnvironmentVariable")
# Exception types (their last dotted part) that say a connection could not be made.
_NETWORK_ERRORS = (
    "ConnectionRefusedError", "ConnectionResetError", "ConnectionAbortedError",
    "ConnectionError", "TimeoutError", "timeout", "gaierror", "herror", "ConnectError",
    "ConnectTimeout", "ClientConnectorError", "URLError", "NewConnectionError",
    "MaxRetryError", "OperationalError",
)
_NETWORK_WORDS = (
    "Network is unreachable", "Name or service not known", "Temporary failure in name "
    "resolution", "Connection refused", "could not connect", "No route to host",
)
# Frames in these files are the network stack itself: a hang or an error there.
_NETWORK_FILES = ("socket.py", "ssl.py", "/httpx/", "/httpcore/", "/urllib3/", "/requests/",
                  "/aiohttp/", "/asyncpg/", "/psycopg", "/redis/", "/botocore/")


class Finding(enum.Enum):
    CONFIRMED = "confirmed"
    RULED_OUT = "ruled out"
    NO_EVIDENCE = "no evidence"


@dataclass(frozen=True)
class Hypothesis:
    name: str
    finding: Finding
    evidence: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "finding": self.finding.value, "evidence": self.evidence}


@dataclass(frozen=True)
class _Exception:
    type: str
    value: str
    frames: tuple[Mapping[str, Any], ...]

    @property
    def short_type(self) -> str:
        return self.type.rpartition(".")[2]

    def text(self) -> str:
        """``Type: value``, the value's first line only (pydantic's go on for pages)."""
        first = self.value.splitlines()[0] if self.value else ""
        return f"{self.type}: {first}" if first else self.type


@dataclass(frozen=True)
class RunEvidence:
    """The facts the hypotheses read, taken from a report."""

    cause: str
    exit_code: Optional[int]
    signal: Optional[str]
    ready_after_s: Optional[float]
    uptime_s: float
    oom_kills: Optional[int]
    oom_evidence: Optional[str]
    peak_bytes: Optional[int]
    limit_bytes: Optional[int]
    exceptions: tuple[_Exception, ...]  # the one that ended it first, then its chain
    stack: tuple[Mapping[str, Any], ...]  # the last sampled stack of the main thread
    stderr_tail: str
    network_cut: bool
    # (what, seconds): the deadline a start had, the platform's check's or --startup-timeout.
    budget: Optional[tuple[str, float]]
    signals_received: tuple[str, ...]

    @classmethod
    def from_report(cls, data: Mapping[str, Any]) -> RunEvidence:
        memory = data.get("memory") or {}
        conditions = data.get("conditions") or {}
        limits = conditions.get("limits") or {}
        limit = memory.get("cgroup_limit_bytes") or limits.get("memory_bytes")
        # Without a limit the cgroup is a shared one (the machine's, the
        # container's): its peak is not the app's.
        peaks = [v for v in (memory.get("peak_rss_bytes"),
                             memory.get("cgroup_peak_bytes") if limit else None)
                 if v is not None]
        exception = data.get("exception")
        exceptions: list[_Exception] = []
        if exception:
            for item in (exception, *(exception.get("chain") or ())):
                exceptions.append(_Exception(str(item.get("type") or ""),
                                             str(item.get("value") or ""),
                                             tuple(item.get("frames") or ())))
        return cls(
            cause=str(data.get("cause")),
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            ready_after_s=data.get("ready_after_s"),
            uptime_s=float(data.get("uptime_s") or 0.0),
            oom_kills=memory.get("oom_kills"),
            oom_evidence=data.get("oom_evidence") or memory.get("oom_evidence"),
            peak_bytes=max(peaks) if peaks else None,
            limit_bytes=limit,
            exceptions=tuple(exceptions),
            stack=_main_stack(data.get("last_stack")),
            stderr_tail=str(data.get("stderr_tail") or ""),
            network_cut=conditions.get("network") == "cut",
            budget=start_budget(conditions),
            signals_received=tuple(s.get("signal", "") for s in data.get("signals_received") or ()),
        )


def _main_stack(sample: Optional[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    if not sample:
        return ()
    threads = sample.get("threads") or ()
    for thread in threads:
        if thread.get("name") == "MainThread":
            return tuple(thread.get("frames") or ())
    return tuple(threads[0].get("frames") or ()) if threads else ()


def start_budget(conditions: Mapping[str, Any]) -> Optional[tuple[str, float]]:
    """How long a start may take: the platform's check, else ``--startup-timeout``."""
    spec_text = conditions.get("health_check")
    if spec_text:
        from .config import parse_health_check

        spec = parse_health_check(str(spec_text))
        from .advice import allowed_s

        seconds = allowed_s(spec)
        return "the health check", seconds
    timeout = conditions.get("startup_timeout_s")
    if timeout:
        return "--startup-timeout", float(timeout)
    return None


def hypotheses(run: RunEvidence) -> tuple[Hypothesis, ...]:
    return (
        _out_of_memory(run),
        _too_slow(run),
        _import_error(run),
        _missing_configuration(run),
        _network(run),
        _native_crash(run),
        _killed_from_outside(run),
    )


def hypothesis_lines(found: Sequence[Hypothesis]) -> list[str]:
    """One line each, aligned, for the human block (which adds the prefix)."""
    width = max((len(h.name) for h in found), default=0)
    lines = ["hypotheses:"]
    for h in found:
        lines.append(f"  {h.name:<{width}}  {h.finding.value:<11}  {h.evidence}")
    return lines


# -- the seven ------------------------------------------------------------------------


def _s(value: float) -> str:
    from .config import seconds_text

    return seconds_text(value)


def _mib(value: int) -> str:
    mib = value / _MIB
    return f"{mib:.1f} MiB" if mib < 10 else f"{mib:.0f} MiB"


def _peak(run: RunEvidence) -> str:
    if run.peak_bytes is None:
        return "peak unknown"
    text = f"peak {_mib(run.peak_bytes)}"
    return text + (f" of {_mib(run.limit_bytes)}" if run.limit_bytes else ", no limit")


def _ended(run: RunEvidence) -> str:
    if run.exit_code is not None:
        return f"exit {run.exit_code}"
    return f"killed by {run.signal}" if run.signal else "it never started"


def _out_of_memory(run: RunEvidence) -> Hypothesis:
    name = "out of memory"
    counter = (
        "the OOM counter did not rise" if run.oom_kills == 0
        else "no OOM counter to read" if run.oom_kills is None
        else f"the OOM counter rose by {run.oom_kills}"
    )
    if run.cause == "oom_killed":
        return Hypothesis(name, Finding.CONFIRMED,
                          f"SIGKILL (137) and {run.oom_evidence or counter}; {_peak(run)}")
    if run.exit_code is not None:
        return Hypothesis(name, Finding.RULED_OUT,
                          f"exit {run.exit_code} is not an OOM kill (that would be SIGKILL, 137, "
                          f"with the counter risen); {counter}; {_peak(run)}")
    if run.signal == "SIGKILL":
        finding = Finding.RULED_OUT if run.oom_kills == 0 else Finding.NO_EVIDENCE
        return Hypothesis(name, finding, f"SIGKILL, but {counter}; {_peak(run)}")
    if run.signal:
        return Hypothesis(name, Finding.RULED_OUT,
                          f"killed by {run.signal}, not SIGKILL; {_peak(run)}")
    return Hypothesis(name, Finding.NO_EVIDENCE, "the command never started")


def _too_slow(run: RunEvidence) -> Hypothesis:
    name = "start-up too slow"
    budget = run.budget
    if run.cause == "startup_timeout":
        what = f"; {budget[0]} allows {_s(budget[1])}" if budget else ""
        return Hypothesis(name, Finding.CONFIRMED, f"not ready after {_s(run.uptime_s)}{what}")
    if budget is None:
        return Hypothesis(name, Finding.NO_EVIDENCE, "no deadline was set for this run")
    what, seconds = budget
    if run.ready_after_s is not None:
        ready = f"ready after {_s(run.ready_after_s)}"
        if run.ready_after_s > seconds:
            return Hypothesis(name, Finding.CONFIRMED, f"{ready}; {what} allows {_s(seconds)}")
        return Hypothesis(name, Finding.RULED_OUT, f"{ready}, within the {_s(seconds)} "
                                                   f"{what} allows")
    if run.cause in ("stopped", "stop_timeout"):
        if run.uptime_s > seconds:
            return Hypothesis(name, Finding.CONFIRMED,
                              f"still starting after {_s(run.uptime_s)}; {what} allows "
                              f"{_s(seconds)}")
        return Hypothesis(name, Finding.NO_EVIDENCE,
                          f"stopped while starting, at {_s(run.uptime_s)}")
    return Hypothesis(name, Finding.RULED_OUT,
                      f"it ended ({_ended(run)}) at {_s(run.uptime_s)}, before the "
                      f"{_s(seconds)} {what} allows: it did not run out of time")


def _import_error(run: RunEvidence) -> Hypothesis:
    name = "import error"
    for exc in run.exceptions:
        if exc.short_type in _IMPORT_ERRORS:
            return Hypothesis(name, Finding.CONFIRMED, exc.text())
    if "Error loading ASGI app" in run.stderr_tail:
        line = next(ln for ln in run.stderr_tail.splitlines() if "Error loading ASGI app" in ln)
        return Hypothesis(name, Finding.CONFIRMED, line.strip())
    return _not_it(name, run, "its imports had completed")


def _not_it(name: str, run: RunEvidence, when_ready: str) -> Hypothesis:
    if run.ready_after_s is not None:
        return Hypothesis(name, Finding.RULED_OUT,
                          f"the app became ready after {_s(run.ready_after_s)}: {when_ready}")
    if run.exceptions:
        return Hypothesis(name, Finding.RULED_OUT,
                          f"the traceback ends in {run.exceptions[0].text()}")
    return Hypothesis(name, Finding.NO_EVIDENCE, "no traceback")


def _missing_configuration(run: RunEvidence) -> Hypothesis:
    name = "missing configuration"
    for exc in run.exceptions:
        if exc.short_type == "KeyError" and _reads_environ(exc):
            return Hypothesis(name, Finding.CONFIRMED, f"{exc.text()}, read from os.environ")
        if exc.short_type.endswith("ValidationError"):
            fields = validation_fields(run.stderr_tail)
            named = f" (fields: {', '.join(fields)})" if fields else ""
            return Hypothesis(name, Finding.CONFIRMED, f"{exc.text()}{named}")
        if exc.short_type in _CONFIG_ERRORS:
            return Hypothesis(name, Finding.CONFIRMED, exc.text())
    return _not_it(name, run, "its settings had loaded")


def _reads_environ(exc: _Exception) -> bool:
    """A KeyError from os.environ, or for a name written like a setting (``DATABASE_URL``)."""
    innermost = exc.frames[-1] if exc.frames else {}
    filename = str(innermost.get("filename") or "")
    from_os = innermost.get("module") == "os" or filename.endswith(("/os.py", "<frozen os>"))
    key = exc.value.strip("'\"")
    looks_like_setting = key.isupper() and all(c.isalnum() or c == "_" for c in key)
    return from_os or looks_like_setting


def validation_fields(tail: str) -> list[str]:
    """The fields pydantic names under "N validation error(s) for Model"."""
    lines = tail.splitlines()
    fields: list[str] = []
    for index, line in enumerate(lines):
        if "validation error" in line and " for " in line:
            for follow in lines[index + 1:]:
                if not follow.strip() or follow.startswith(("Traceback", "For further")):
                    break
                if not follow.startswith((" ", "\t")):
                    fields.append(follow.strip())
    return list(dict.fromkeys(fields))


def _network(run: RunEvidence) -> Hypothesis:
    name = "network needed at start-up"
    cut = "; --no-network was in force" if run.network_cut else ""
    for exc in run.exceptions:
        frame = _network_frame(exc.frames)
        if exc.short_type in _NETWORK_ERRORS or any(w in exc.value for w in _NETWORK_WORDS):
            where = f" in {_frame_text(frame)}" if frame else ""
            return Hypothesis(name, Finding.CONFIRMED, f"{exc.text()}{where}{cut}")
    frame = _network_frame(run.stack)
    if frame is not None and run.ready_after_s is None:
        return Hypothesis(name, Finding.CONFIRMED,
                          f"the last stack sample was in {_frame_text(frame)}{cut}")
    if run.ready_after_s is not None:
        return Hypothesis(name, Finding.RULED_OUT,
                          f"the app became ready after {_s(run.ready_after_s)}{cut}")
    if run.exceptions:
        return Hypothesis(name, Finding.RULED_OUT,
                          f"no socket or DNS frame in the traceback ({run.exceptions[0].text()})")
    return Hypothesis(name, Finding.NO_EVIDENCE, f"no traceback and no stack sample{cut}")


def _network_frame(frames: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The innermost frame in the network stack (socket, ssl, an HTTP or database client)."""
    for index in range(len(frames) - 1, -1, -1):
        filename = str(frames[index].get("filename") or "")
        if filename.endswith(("/socket.py", "/ssl.py")) or any(
            part in filename for part in _NETWORK_FILES if part.startswith("/")
        ):
            return frames[index]
    return None


def _frame_text(frame: Mapping[str, Any]) -> str:
    return f"{frame.get('filename')}:{frame.get('lineno')} in {frame.get('function')}"


def _native_crash(run: RunEvidence) -> Hypothesis:
    name = "native crash"
    if run.cause == "fatal_signal":
        first = run.exceptions[0].text() if run.exceptions else "no faulthandler dump"
        return Hypothesis(name, Finding.CONFIRMED, f"{run.signal}: {first}")
    if run.signal == "SIGABRT" and run.cause == "startup_timeout":
        return Hypothesis(name, Finding.RULED_OUT,
                          "the SIGABRT was the supervisor's, for a stack dump")
    if run.exit_code is not None:
        return Hypothesis(name, Finding.RULED_OUT,
                          f"exit {run.exit_code}: the process ended itself, no fatal signal")
    if run.signal:
        return Hypothesis(name, Finding.RULED_OUT, f"killed by {run.signal}, not a crash signal")
    return Hypothesis(name, Finding.NO_EVIDENCE, "the command never started")


def _killed_from_outside(run: RunEvidence) -> Hypothesis:
    name = "killed from outside"
    received = [s for s in run.signals_received if s]
    if run.cause == "killed":
        return Hypothesis(name, Finding.CONFIRMED,
                          "SIGKILL without OOM evidence, and not from the supervisor")
    if run.cause in ("stopped", "stop_timeout"):
        return Hypothesis(name, Finding.CONFIRMED,
                          f"{', '.join(received) or 'a stop signal'} reached the supervisor and "
                          "was forwarded: a stop, not a crash")
    if run.cause == "oom_killed":
        return Hypothesis(name, Finding.RULED_OUT, "the kernel's OOM killer ended it")
    if run.cause == "startup_timeout":
        return Hypothesis(name, Finding.RULED_OUT,
                          "the supervisor stopped it: not ready in time")
    if run.signal and run.signal not in FATAL_SIGNALS:
        return Hypothesis(name, Finding.CONFIRMED,
                          f"killed by {run.signal}, sent to it directly, not by the supervisor")
    if run.exit_code is not None:
        return Hypothesis(name, Finding.RULED_OUT, f"exit {run.exit_code}: it ended itself")
    if run.signal:
        return Hypothesis(name, Finding.RULED_OUT, f"{run.signal} comes from the process itself")
    return Hypothesis(name, Finding.NO_EVIDENCE, "the command never started")
