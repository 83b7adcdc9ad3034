"""The Sentry event for a crash seen from outside the app, built from the report.

Owns: turning a finished report (the dict of the JSON report) into a Sentry
event (the exception interface from the parsed traceback or a sampled stack,
the fingerprint, release and environment) and its attachments (stderr tail,
memory samples, import profile, the report), with secrets masked.
Must not know: how the cause was decided, how the report was gathered, where
the report file lives, or how the event is delivered (``sentry_delivery``).
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any, Mapping, Optional, Sequence

from supervisor.redact import Redactor
from supervisor.sentry_context import (
    SYNTHETIC_TYPES,
    breadcrumbs,
    container_context,
    epoch,
    extra_data,
    memory_context,
    process_context,
    sampled_stacktrace,
    signal_number,
    startup_context,
    synthetic_message,
    synthetic_value,
    tags,
)

Attachment = tuple[str, bytes, str]

MECHANISM = "supervisor"
LOGGER = "supervisor"
NO_APP_FRAME = "<no app frame>"
PROFILE_HEADER = (
    "# The child's imports as PYTHONPROFILEIMPORTTIME printed them, in the order they\n"
    "# completed (children before their parent), with when each line arrived.\n"
    "# arrived   |  self [us] | cumulative | imported package\n"
)
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
THIRD_PARTY = re.compile(r"[/\\](?:site|dist)-packages[/\\](?P<rest>.+)\.py$")
STDLIB = re.compile(r"[/\\]lib[/\\]python\d+(?:\.\d+)?[/\\](?P<rest>.+)\.py$")


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
            last["value"] = f"{synthetic_message(report)}; {last.get('type')}: " + str(
                last.get("value", "")
            )
            last["type"] = SYNTHETIC_TYPES["startup_timeout"]
            last.pop("module", None)
    else:
        values = [synthetic_value(report)]
        sampled = sampled_stacktrace(report)
        if sampled is not None:
            # Not where it died but where it was last seen: said in the value and
            # the mechanism, and kept out of the fingerprint (samples vary).
            frames, how = sampled
            values[-1]["stacktrace"] = {"frames": [_frame(f) for f in frames]}
            values[-1]["value"] = f"{values[-1]['value']} ({how})"
    values[-1]["mechanism"] = _mechanism(report)
    if not exception and values[-1].get("stacktrace"):
        values[-1]["mechanism"]["data"] = {"stacktrace": "sampled", "source": "py-spy dump"}
    where = NO_APP_FRAME if not exception else _innermost(values)

    hostname = socket.gethostname()
    event: dict[str, Any] = {
        "level": "fatal",
        "platform": "python",
        "logger": LOGGER,
        "server_name": hostname,
        "exception": {"values": values},
        "tags": tags(report),
        "contexts": {
            "memory": memory_context(memory),
            "process": process_context(report),
            "container": container_context(memory, hostname),
        },
        "fingerprint": ["supervisor", cause, str(values[-1].get("type")), where],
        "extra": extra_data(report),
    }
    startup = startup_context(report)
    if startup is not None:
        event["contexts"]["startup"] = startup
    crumbs = breadcrumbs(report)
    if crumbs:
        event["breadcrumbs"] = {"values": crumbs}
    timestamp = epoch(report.get("ended_at"))
    if timestamp is not None:
        # The time of death, not of sending: a saved report may be sent hours later.
        event["timestamp"] = timestamp
    _set_release(event, release, environment, event_id)
    # The report is redacted already; masking again with this environment costs
    # microseconds and a leaked key costs a rotation.
    masked: dict[str, Any] = Redactor.from_environ(os.environ).json(event)
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
            "memory": memory_context(memory),
            "container": container_context(memory, hostname),
        },
        # The message carries figures; grouping on it would open an issue per run.
        "fingerprint": ["supervisor", "memory_warning"],
    }
    _set_release(event, release, environment, None)
    masked: dict[str, Any] = Redactor.from_environ(os.environ).json(event)
    return masked


def attachments_for(report: Mapping[str, Any]) -> list[Attachment]:
    """(filename, bytes, content type): stderr tail, memory samples, import profile, report.

    The tail, the samples and the profile are left out when empty; the report is always there.
    """
    redactor = Redactor.from_environ(os.environ)
    masked = redactor.json(dict(report))
    out: list[Attachment] = []
    tail = masked.get("stderr_tail")
    if tail:
        out.append(("stderr-tail.txt", str(tail).encode("utf-8", "replace"), "text/plain"))
    samples = (masked.get("memory") or {}).get("samples")
    if samples:
        out.append(("memory-samples.json", _json_bytes(samples), "application/json"))
    profile = (masked.get("startup") or {}).get("import_profile")
    if profile:
        text = PROFILE_HEADER + "\n".join(str(line) for line in profile) + "\n"
        out.append(("import-profile.txt", text.encode("utf-8", "replace"), "text/plain"))
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
    number = signal_number(report.get("signal"))
    if number is not None:
        mechanism["meta"] = {"signal": {"number": number, "name": str(report["signal"])}}
    return mechanism


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, default=str).encode("utf-8")
