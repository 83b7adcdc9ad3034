"""The Sentry event for a crash seen from outside the app, and its bounded delivery.

Owns: turning a finished report (the dict of SPEC.md "The JSON report") into a
Sentry event, attachments and fingerprint; delivering them within a deadline and
saying what happened; sending a saved report later.
Must not know: how the cause was decided, how the report was gathered, where
the report file lives or what the supervisor prints about the outcome.

``sentry_sdk`` (about 130 ms and 19 MiB to import) is imported only inside
``deliver``, and in its worker thread, so that both the cost and any stall
count against the delivery deadline instead of start-up or exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Sequence

from supervisor.redact import Redactor

__all__ = [
    "Delivery",
    "attachments_for",
    "build_event",
    "build_warning_event",
    "deliver",
    "new_event_id",
    "send_saved_report",
]

Attachment = tuple[str, bytes, str]

MECHANISM = "supervisor"
LOGGER = "supervisor"
NO_APP_FRAME = "<no app frame>"
# Enough of the tail to read the end of a crash in Sentry servers that drop
# attachments; the whole tail still travels as an attachment.
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
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
THIRD_PARTY = re.compile(r"[/\\](?:site|dist)-packages[/\\](?P<rest>.+)\.py$")
STDLIB = re.compile(r"[/\\]lib[/\\]python\d+(?:\.\d+)?[/\\](?P<rest>.+)\.py$")


@dataclass(frozen=True)
class Delivery:
    """What became of one event: ``event_id`` is set only when Sentry took it."""

    delivered: bool
    event_id: Optional[str]
    detail: str


# ---------------------------------------------------------------- the event


def build_event(
    report: Mapping[str, Any],
    *,
    release: Optional[str],
    environment: Optional[str],
    event_id: Optional[str] = None,
) -> dict[str, Any]:
    """A ``fatal`` Sentry event for a crash report; pure apart from the hostname."""
    cause = str(report.get("cause") or "unknown")
    memory: Mapping[str, Any] = report.get("memory") or {}
    exception = report.get("exception")
    if exception:
        values = _exception_values(exception)
        if cause == "startup_timeout":
            # The stack says where it hung; the type says what went wrong.
            last = values[-1]
            last["value"] = f"{_synthetic_message(report)}; {last.get('type')}: " + str(
                last.get("value", "")
            )
            last["type"] = SYNTHETIC_TYPES["startup_timeout"]
            last.pop("module", None)
    else:
        values = [_synthetic_value(report)]
    values[-1]["mechanism"] = _mechanism(report)

    hostname = socket.gethostname()
    event: dict[str, Any] = {
        "level": "fatal",
        "platform": "python",
        "logger": LOGGER,
        "server_name": hostname,
        "exception": {"values": values},
        "tags": _tags(report),
        "contexts": {
            "memory": _memory_context(memory),
            "process": _process_context(report),
            "container": _container_context(memory, hostname),
        },
        "fingerprint": ["supervisor", cause, str(values[-1].get("type")), _innermost(values)],
        "extra": _extra(report),
    }
    breadcrumbs = _breadcrumbs(report)
    if breadcrumbs:
        event["breadcrumbs"] = {"values": breadcrumbs}
    timestamp = _epoch(report.get("ended_at"))
    if timestamp is not None:
        # The time of death, not of sending: a saved report may be sent hours later.
        event["timestamp"] = timestamp
    _set_release(event, release, environment, event_id)
    # The report is redacted already; masking again with this environment costs
    # microseconds and a leaked key costs a rotation.
    masked: dict[str, Any] = _mask(event, Redactor.from_environ(os.environ))
    return masked


def build_warning_event(
    message: str,
    memory: Mapping[str, Any],
    *,
    release: Optional[str],
    environment: Optional[str],
) -> dict[str, Any]:
    """A ``warning`` event for the memory early warning (one per run)."""
    hostname = socket.gethostname()
    event: dict[str, Any] = {
        "level": "warning",
        "platform": "python",
        "logger": LOGGER,
        "server_name": hostname,
        "message": message,
        "tags": {"warning": "memory"},
        "contexts": {
            "memory": _memory_context(memory),
            "container": _container_context(memory, hostname),
        },
        # The message carries figures; grouping on it would open an issue per run.
        "fingerprint": ["supervisor", "memory_warning"],
    }
    _set_release(event, release, environment, None)
    masked: dict[str, Any] = _mask(event, Redactor.from_environ(os.environ))
    return masked


def attachments_for(report: Mapping[str, Any]) -> list[Attachment]:
    """(filename, bytes, content type): the stderr tail, the memory samples, the report.

    The tail and the samples are left out when empty; the report is always there.
    """
    redactor = Redactor.from_environ(os.environ)
    masked = _mask(dict(report), redactor)
    out: list[Attachment] = []
    tail = masked.get("stderr_tail")
    if tail:
        out.append(("stderr-tail.txt", str(tail).encode("utf-8", "replace"), "text/plain"))
    samples = (masked.get("memory") or {}).get("samples")
    if samples:
        out.append(("memory-samples.json", _json_bytes(samples), "application/json"))
    out.append(("report.json", _json_bytes(masked), "application/json"))
    return out


def _set_release(
    event: dict[str, Any],
    release: Optional[str],
    environment: Optional[str],
    event_id: Optional[str],
) -> None:
    if release:
        event["release"] = release
    if environment:
        event["environment"] = environment
    if event_id:
        event["event_id"] = event_id


def _exception_values(exception: Mapping[str, Any]) -> list[dict[str, Any]]:
    chain = list(exception.get("chain") or [])
    return [_exception_value(item) for item in [*chain, exception]]


def _exception_value(item: Mapping[str, Any]) -> dict[str, Any]:
    exc_type = str(item.get("type") or "Error")
    value: dict[str, Any] = {"type": exc_type}
    # Tracebacks print "pkg.mod.Error" for non-builtins; an in-process capture
    # sends type "Error" and module "pkg.mod", and grouping should agree with it.
    if DOTTED_NAME.match(exc_type):
        module, _, name = exc_type.rpartition(".")
        value["type"] = name
        value["module"] = module
    text = item.get("value")
    if text:
        value["value"] = str(text)
    frames = [_frame(f) for f in item.get("frames") or []]
    if frames:
        value["stacktrace"] = {"frames": frames}
    return value


def _frame(frame: Mapping[str, Any]) -> dict[str, Any]:
    abs_path = str(frame.get("filename") or "<unknown>")
    module = frame.get("module") or _module_for(abs_path)
    in_app = frame.get("in_app")
    if in_app is None:
        in_app = not (abs_path.startswith("<") or _module_for(abs_path))
    out: dict[str, Any] = {
        "filename": _relative_filename(abs_path, module),
        "abs_path": abs_path,
        "function": str(frame.get("function") or "<unknown>"),
        "in_app": bool(in_app),
    }
    lineno = frame.get("lineno")
    if isinstance(lineno, int) and lineno >= 0:
        out["lineno"] = lineno
    if module:
        out["module"] = str(module)
    if frame.get("context_line"):
        out["context_line"] = str(frame["context_line"])
    return out


def _module_for(path: str) -> Optional[str]:
    """The module name of a third-party or standard library file, else None."""
    match = THIRD_PARTY.search(path) or STDLIB.search(path)
    if match is None:
        return None
    name = re.sub(r"[/\\]", ".", match.group("rest"))
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _relative_filename(abs_path: str, module: Optional[str]) -> str:
    # Sentry shows and groups on the path relative to the import root, so that
    # /app and /srv/app deployments of the same code read the same.
    if module:
        base = str(module).replace(".", "/")
        for candidate in (base + ".py", base + "/__init__.py"):
            if abs_path.replace("\\", "/").endswith("/" + candidate):
                return candidate
    return abs_path


def _innermost(values: Sequence[Mapping[str, Any]]) -> str:
    """'file:function' of the innermost app frame, newest exception first."""
    for value in reversed(values):
        frames = (value.get("stacktrace") or {}).get("frames") or []
        for frame in reversed(frames):
            if frame.get("in_app"):
                return f"{_stable_path(str(frame['filename']))}:{frame['function']}"
    return NO_APP_FRAME


def _stable_path(filename: str) -> str:
    # Without a module name the import root is unknown; the last two parts keep
    # /app/shop/views.py and /srv/shop/views.py in one group across images.
    if not filename.startswith(("/", "\\")) and ":" not in filename[:3]:
        return filename
    return "/".join(re.split(r"[/\\]", filename)[-2:])


def _mechanism(report: Mapping[str, Any]) -> dict[str, Any]:
    mechanism: dict[str, Any] = {"type": MECHANISM, "handled": False}
    number = _signal_number(report.get("signal"))
    if number is not None:
        mechanism["meta"] = {"signal": {"number": number, "name": str(report["signal"])}}
    return mechanism


def _synthetic_value(report: Mapping[str, Any]) -> dict[str, Any]:
    cause = str(report.get("cause") or "unknown")
    exc_type = SYNTHETIC_TYPES.get(cause, "Crash")
    if cause == "fatal_signal" and report.get("signal"):
        # Named like a native crash report, so SIGSEGV and SIGABRT group apart.
        exc_type = str(report["signal"])
    return {"type": exc_type, "value": _synthetic_message(report)}


def _synthetic_message(report: Mapping[str, Any]) -> str:
    cause = report.get("cause")
    memory: Mapping[str, Any] = report.get("memory") or {}
    summary = str(report.get("summary") or "")
    when = _when(report)
    peak = memory.get("cgroup_peak_bytes") or memory.get("peak_rss_bytes")
    limit = memory.get("cgroup_limit_bytes")
    if cause == "oom_killed":
        text = "killed by the OOM killer"
        if peak and limit:
            text += f" at {_size(peak)} of {_size(limit)}"
        elif peak:
            text += f" at {_size(peak)} (no memory limit known)"
        return f"{text} {when}"
    if cause == "killed":
        at = f" at {_size(peak)}" if peak else ""
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
            waited = _float(report.get("uptime_s"), 0.0) - _float(last.get("at_s"), 0.0)
            return f"did not exit within {waited:.1f} s of {last.get('signal')} and was killed"
        return f"did not exit within the grace period and was killed {when}"
    if cause == "startup_timeout":
        return f"not ready after {_float(report.get('uptime_s'), 0.0):.1f} s; killed"
    if cause == "fatal_signal":
        name = str(report.get("signal") or "a fatal signal")
        description = _signal_description(report.get("signal"))
        return f"killed by {name}{description} {when}"
    return summary or f"ended: {cause} {when}"


def _when(report: Mapping[str, Any]) -> str:
    uptime = report.get("uptime_s")
    text = f"after {_float(uptime, 0.0):.1f} s" if uptime is not None else ""
    if report.get("phase") == "starting":
        text += " while starting"
    return text.strip()


def _tags(report: Mapping[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {"cause": str(report.get("cause") or "unknown")}
    for name in ("phase", "exit_code", "signal"):
        # Sentry rejects null tag values; an absent tag still filters as "none".
        if report.get(name) is not None:
            tags[name] = str(report[name])
    return tags


def _memory_context(memory: Mapping[str, Any]) -> dict[str, Any]:
    # Sentry trims a context to ten keys: keep the ones that explain a death.
    peak = memory.get("cgroup_peak_bytes") or memory.get("peak_rss_bytes")
    context: dict[str, Any] = {
        "type": "memory",
        "peak": _size(peak) if peak else None,
        "limit": _size(memory["cgroup_limit_bytes"]) if memory.get("cgroup_limit_bytes") else None,
        "peak_rss_bytes": memory.get("peak_rss_bytes"),
        "cgroup_peak_bytes": memory.get("cgroup_peak_bytes"),
        "cgroup_limit_bytes": memory.get("cgroup_limit_bytes"),
        "oom_kills": memory.get("oom_kills"),
        "evidence": memory.get("oom_evidence"),
        "sample_count": len(memory.get("samples") or []),
    }
    return {k: v for k, v in context.items() if v is not None}


def _process_context(report: Mapping[str, Any]) -> dict[str, Any]:
    command = report.get("command") or []
    context: dict[str, Any] = {
        "type": "process",
        "command": " ".join(_quote(str(arg)) for arg in command),
        "pid": report.get("pid"),
        "uptime_s": report.get("uptime_s"),
        "ready_after_s": report.get("ready_after_s"),
        "started_at": report.get("started_at"),
        "ended_at": report.get("ended_at"),
        "status": report.get("status"),
        "signals_received": [s.get("signal") for s in report.get("signals_received") or []],
    }
    return {k: v for k, v in context.items() if v is not None}


def _container_context(memory: Mapping[str, Any], hostname: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "type": "container",
        "hostname": hostname,
        "cgroup_version": memory.get("cgroup_version"),
        "memory_limit_bytes": memory.get("cgroup_limit_bytes"),
        "supervisor_is_pid_1": os.getpid() == 1,
    }
    return {k: v for k, v in context.items() if v is not None}


def _extra(report: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if report.get("summary"):
        extra["summary"] = str(report["summary"])
    tail = str(report.get("stderr_tail") or "")
    if tail:
        extra["stderr_tail"] = tail[-EXTRA_TAIL_CHARS:]
    return extra


def _breadcrumbs(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Start, readiness, signals and end on one timeline, when the start is known."""
    started = _epoch(report.get("started_at"))
    if started is None:
        return []
    crumbs: list[dict[str, Any]] = [
        {"timestamp": started, "category": "process", "message": "child started"}
    ]
    ready = report.get("ready_after_s")
    if ready is not None:
        crumbs.append(
            {
                "timestamp": started + _float(ready, 0.0),
                "category": "process",
                "message": f"ready after {_float(ready, 0.0):.2f} s",
            }
        )
    for received in report.get("signals_received") or []:
        crumbs.append(
            {
                "timestamp": started + _float(received.get("at_s"), 0.0),
                "category": "signal",
                "message": f"{received.get('signal')} received and forwarded",
            }
        )
    ended = _epoch(report.get("ended_at"))
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


def _epoch(value: Any) -> Optional[float]:
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


def _signal_number(name: Any) -> Optional[int]:
    if not name:
        return None
    import signal  # about 5 ms (enum); only events with a signal pay it

    try:
        return int(signal.Signals[str(name)])
    except KeyError:
        return None


def _signal_description(name: Any) -> str:
    number = _signal_number(name)
    if number is None:
        return ""
    import signal

    text = signal.strsignal(number)
    return f" ({text})" if text else ""


def _size(value: Any) -> str:
    n = _float(value, 0.0)
    if n >= 10 * 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def _seconds(value: float) -> str:
    # "5.0" as people write it, but never "0.1" for a 50 ms deadline.
    return f"{value:.1f}" if round(value, 1) == round(value, 2) else f"{value:.2f}"


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _quote(arg: str) -> str:
    return arg if arg and re.fullmatch(r"[\w@%+=:,./-]+", arg) else json.dumps(arg)


def _mask(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, Mapping):
        return {k: _mask(v, redactor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v, redactor) for v in value]
    return value


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, default=str).encode("utf-8")


# ------------------------------------------------------------- the delivery


def deliver(
    event: dict[str, Any],
    attachments: Sequence[Attachment],
    *,
    dsn: str,
    timeout_s: float,
) -> Delivery:
    """Send one event; returns within ``timeout_s`` (plus thread overhead) and never raises.

    The work runs in a daemon thread joined with the deadline: a Sentry that
    accepts and never answers, a slow DNS or a slow import cannot hold the exit.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    attempt = _Attempt()
    try:
        worker = threading.Thread(
            target=attempt.run,
            args=(dict(event), list(attachments), dsn, deadline),
            name="supervisor-sentry",
            daemon=True,
        )
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
    except Exception as error:  # e.g. "can't start new thread" in a starved container
        return Delivery(False, None, f"could not send: {error}")
    result = attempt.result
    if result is not None:
        return result
    attempt.abort()
    return Delivery(False, None, f"timed out after {_seconds(timeout_s)} s")


def send_saved_report(path: str, *, dsn: str, timeout_s: float) -> Delivery:
    """Send a report file written when the container had no route to Sentry.

    Release and environment come from the report's ``release``/``environment``
    fields when present, else from ``SENTRY_RELEASE``/``SENTRY_ENVIRONMENT`` now.
    The report's ``sentry_event_id``, if any, is reused so that Sentry drops a
    duplicate of an event that did arrive.
    """
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        return Delivery(False, None, f"cannot read report {path}: {error}")
    if report.get("cause") == "stopped":
        return Delivery(False, None, "not sent: a clean stop is not a crash")
    event = build_event(
        report,
        release=report.get("release") or os.environ.get("SENTRY_RELEASE"),
        environment=report.get("environment") or os.environ.get("SENTRY_ENVIRONMENT"),
        event_id=report.get("sentry_event_id") or None,
    )
    return deliver(event, attachments_for(report), dsn=dsn, timeout_s=timeout_s)


class _Attempt:
    """One delivery in a worker thread; the caller may abandon it at any time."""

    def __init__(self) -> None:
        self.result: Optional[Delivery] = None
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._aborted = False

    def run(
        self,
        event: dict[str, Any],
        attachments: list[Attachment],
        dsn: str,
        deadline: float,
    ) -> None:
        try:
            self.result = self._run(event, attachments, dsn, deadline)
        except Exception as error:  # never let a bug here reach the exit path
            self.result = Delivery(False, None, f"could not send: {type(error).__name__}: {error}")

    def abort(self) -> None:
        # Unblocks a thread stuck in recv() so that it ends and frees its socket.
        with self._lock:
            self._aborted = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def _run(
        self,
        event: dict[str, Any],
        attachments: list[Attachment],
        dsn: str,
        deadline: float,
    ) -> Delivery:
        made = _make_envelope(event, attachments, dsn)
        if isinstance(made, Delivery):
            return made
        url, body, headers, event_id = made
        return self._post(url, body, headers, event_id, deadline)

    def _post(
        self,
        url: Mapping[str, Any],
        body: bytes,
        headers: Mapping[str, str],
        event_id: str,
        deadline: float,
    ) -> Delivery:
        import http.client
        import ssl

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Delivery(False, None, "timed out before sending")
        connection: http.client.HTTPConnection
        if url["scheme"] == "https":
            connection = http.client.HTTPSConnection(
                url["host"], url["port"], timeout=remaining, context=_tls_context(ssl)
            )
        else:
            connection = http.client.HTTPConnection(url["host"], url["port"], timeout=remaining)
        try:
            connection.connect()
            with self._lock:
                if self._aborted:
                    return Delivery(False, None, "timed out")
                self._sock = connection.sock
            connection.request("POST", url["path"], body=body, headers=dict(headers))
            response = connection.getresponse()
            answer = response.read(65536)
        except ConnectionRefusedError:
            return Delivery(False, None, "connection refused")
        except socket.timeout:
            return Delivery(False, None, "timed out")
        except socket.gaierror as error:
            return Delivery(False, None, f"cannot resolve {url['host']}: {error.strerror}")
        except ssl.SSLError as error:
            return Delivery(False, None, f"TLS error: {error.reason or error}")
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            return Delivery(False, None, f"network error: {reason}")
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return Delivery(True, _answered_id(answer) or event_id, "delivered")
        if response.status == 429:
            return Delivery(False, None, "HTTP 429 (rate limited)")
        return Delivery(False, None, f"HTTP {response.status}")


def _make_envelope(
    event: dict[str, Any], attachments: list[Attachment], dsn: str
) -> tuple[dict[str, Any], bytes, dict[str, str], str] | Delivery:
    """Let sentry_sdk make and serialise the envelope, so that it is valid protocol."""
    try:
        import sentry_sdk
        from sentry_sdk.attachments import Attachment as SdkAttachment
        from sentry_sdk.transport import Transport
        from sentry_sdk.utils import BadDsn, Dsn
    except ImportError:
        return Delivery(False, None, "sentry_sdk not installed")
    try:
        parsed = Dsn(dsn)
    except BadDsn as error:
        return Delivery(False, None, f"invalid DSN: {error}")

    class Recorder(Transport):
        """Keeps the envelope instead of queueing it on the SDK's own worker,
        whose HTTP outcome is never reported back (see FACTS.md, flush())."""

        def __init__(self) -> None:
            super().__init__(None)
            self.envelopes: list[Any] = []

        def capture_envelope(self, envelope: Any) -> None:
            self.envelopes.append(envelope)

    def drop_empty_release(sent: dict[str, Any], hint: Any) -> dict[str, Any]:
        if not sent.get("release"):
            sent.pop("release", None)
        return sent

    recorder = Recorder()
    # Typed loosely on purpose: the SDK's own annotations change across the
    # wide range of versions this must accept.
    make_client: Any = sentry_sdk.Client
    options: dict[str, Any] = dict(
        dsn=dsn,
        transport=recorder,
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[],
        shutdown_timeout=0,
        # Explicit, never None: a None release makes the SDK run `git rev-parse`.
        release=event.get("release") or "",
        environment=event.get("environment") or "production",
        server_name=event.get("server_name"),
        enable_backpressure_handling=False,
        sample_rate=1.0,
        before_send=drop_empty_release,
    )
    if "data_collection" not in getattr(sentry_sdk.consts, "DEFAULT_OPTIONS", {}):
        # Newer SDKs deprecate naming send_default_pii (data_collection took its
        # place) and default to the same; older ones are told explicitly.
        options["send_default_pii"] = False
    client = make_client(**options)
    hint = {
        "attachments": [
            SdkAttachment(bytes=data, filename=name, content_type=content_type)
            for name, data, content_type in attachments
        ]
    }
    event_id = client.capture_event(event, hint=hint)
    if event_id is None or not recorder.envelopes:
        return Delivery(False, None, "event dropped by sentry_sdk")

    import gzip

    body = gzip.compress(recorder.envelopes[0].serialize(), compresslevel=6)
    url = {
        "scheme": parsed.scheme,
        "host": parsed.host,
        "port": parsed.port,
        "path": f"{parsed.path}api/{parsed.project_id}/envelope/",
    }
    client_name = f"sentry.python/{sentry_sdk.VERSION}"
    auth = f"Sentry sentry_key={parsed.public_key}, sentry_version=7, sentry_client={client_name}"
    if parsed.secret_key:
        auth += f", sentry_secret={parsed.secret_key}"
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "Content-Encoding": "gzip",
        "User-Agent": client_name,
        "X-Sentry-Auth": auth,
    }
    return url, body, headers, str(event_id)


def _tls_context(ssl: Any) -> Any:
    # Slim images often lack system CA files; certifi comes with sentry_sdk.
    cafile = None
    if not os.environ.get("SSL_CERT_FILE"):
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    return ssl.create_default_context(cafile=cafile)


def _answered_id(answer: bytes) -> Optional[str]:
    try:
        value = json.loads(answer).get("id")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def new_event_id() -> str:
    """An id to write into the report before delivery is attempted."""
    import uuid

    return uuid.uuid4().hex
