"""The Sentry event and its delivery, over real crashing children and a real receiver.

Each crash is produced by a real Python child. A small runner (standing in for
uvicorn) imports the app and, when an exception ends it, writes the exception
as JSON (``traceback.extract_tb`` plus module names) before the interpreter
prints the usual traceback; fatal signals are read from faulthandler's dump on
the real stderr. The report dict is then assembled as the supervisor writes it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import pytest
from sentry_relay.processing import StoreNormalizer

from supervisor.redact import Redactor
from supervisor.sentry_delivery import Delivery, deliver, send_saved_report
from supervisor.sentry_event import attachments_for, build_event, build_warning_event
from tests.sentry_receiver import Envelope, Receiver, refused_dsn

REPO = Path(__file__).resolve().parent.parent.parent
RELEASE = "shop@1.4.2"
ENVIRONMENT = "staging"
SECRET = "sk_live_51HqLyjWDarjtT1zdp7dcXYZsecret"

RUNNER = r"""
import json, os, sys, traceback

ROOT = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(ROOT, "app") + os.sep


def qualified(exc):
    t = type(exc)
    if t.__module__ in ("builtins", "__main__"):
        return t.__qualname__
    return t.__module__ + "." + t.__qualname__


def describe(exc):
    modules = [frame.f_globals.get("__name__") for frame, _ in traceback.walk_tb(exc.__traceback__)]
    frames = [
        {"filename": f.filename, "lineno": f.lineno, "function": f.name, "context_line": f.line,
         "in_app": f.filename.startswith(APP), "module": module}
        for f, module in zip(traceback.extract_tb(exc.__traceback__), modules)
    ]
    return {"type": qualified(exc), "value": str(exc), "frames": frames}


def hook(kind, exc, tb):
    data, chain, current = describe(exc), [], exc
    while True:
        implicit = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or implicit
        if current is None:
            break
        chain.insert(0, describe(current))  # oldest first
    data["chain"] = chain
    with open(os.environ["EXCEPTION_OUT"], "w") as f:
        json.dump(data, f)
    sys.__excepthook__(kind, exc, tb)


sys.excepthook = hook
sys.path.insert(0, ROOT)
module = __import__(sys.argv[1], fromlist=["_"])
if len(sys.argv) > 2:
    getattr(module, sys.argv[2])()
"""


# ------------------------------------------------------------------ helpers


class Crash:
    """One real child run: its argv, environment, status, stderr and rusage."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        status: int,
        stderr: str,
        maxrss: int,
        uptime: float,
        exception_file: Path,
    ) -> None:
        self.argv, self.env, self.status, self.stderr = argv, env, status, stderr
        self.maxrss, self.uptime, self.exception_file = maxrss, uptime, exception_file

    def exception(self) -> Optional[dict[str, Any]]:
        if self.exception_file.exists():
            data: dict[str, Any] = json.loads(self.exception_file.read_text())
            return data
        return parse_faulthandler(self.stderr, app_root=str(self.exception_file.parent / "app"))


def write_app(root: Path, files: Mapping[str, str]) -> None:
    (root / "runner.py").write_text(RUNNER)
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def run_child(
    root: Path,
    args: list[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    faulthandler: bool = True,
    timeout: float = 30.0,
) -> Crash:
    out = root / "exception.json"
    if out.exists():
        out.unlink()
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EXCEPTION_OUT": str(out)}
    child_env["PYTHONUNBUFFERED"] = "1"
    if faulthandler:
        child_env["PYTHONFAULTHANDLER"] = "1"
    child_env.update(env or {})
    argv = [sys.executable, str(root / "runner.py"), *args]
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=child_env, stderr=subprocess.PIPE, cwd=root)
    assert proc.stderr is not None
    try:
        stderr = proc.stderr.read().decode("utf-8", "replace")
        # wait4 gives the real peak RSS of the child, as the supervisor records it.
        _, wait_status, rusage = os.wait4(proc.pid, 0)
    finally:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    assert time.monotonic() - started < timeout
    return Crash(
        argv,
        child_env,
        proc.returncode,
        stderr,
        rusage.ru_maxrss * 1024,
        time.monotonic() - started,
        out,
    )


FAULT_FRAME = re.compile(r'^\s+File "(?P<file>.+)", line (?P<line>\d+) in (?P<func>.+)$')


def parse_faulthandler(stderr: str, *, app_root: str) -> Optional[dict[str, Any]]:
    """The crashing thread of a faulthandler dump, frames oldest first."""
    match = re.search(r"^Fatal Python error: (?P<what>.+)$", stderr, re.MULTILINE)
    if match is None:
        return None
    frames: list[dict[str, Any]] = []
    for line in stderr[match.end() :].splitlines():
        if frames and not line.strip():
            break
        found = FAULT_FRAME.match(line)
        if found:
            frames.append(
                {
                    "filename": found["file"],
                    "lineno": int(found["line"]),
                    "function": found["func"],
                    "context_line": None,
                    "in_app": found["file"].startswith(app_root + os.sep),
                    "module": None,
                }
            )
    name = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT"}.get(match["what"], "Fatal")
    return {
        "type": name,
        "value": f"Fatal Python error: {match['what']}",
        "frames": frames[::-1],
        "chain": [],
    }


def make_report(
    crash: Crash,
    *,
    cause: str,
    phase: str = "starting",
    summary: Optional[str] = None,
    memory: Optional[dict[str, Any]] = None,
    command: Optional[list[str]] = None,
    signals_received: Optional[list[dict[str, Any]]] = None,
    with_exception: bool = True,
) -> dict[str, Any]:
    """The report as the supervisor writes it, redacted with the child's environment."""
    redact = Redactor.from_environ(crash.env)
    status = crash.status if crash.status >= 0 else 128 - crash.status
    signame = signal.Signals(-crash.status).name if crash.status < 0 else None
    exception = crash.exception() if with_exception else None
    if exception is not None:
        for item in [exception, *exception["chain"]]:
            item["value"] = redact.text(item["value"])
            for frame in item["frames"]:
                if frame["context_line"]:
                    frame["context_line"] = redact.text(frame["context_line"])
    if summary is None:
        summary = (
            f"{exception['type']}: {exception['value']}" if exception else crash.stderr.strip()
        )
    now = time.time()
    return {
        "cause": cause,
        "summary": redact.text(summary),
        "phase": phase,
        "exit_code": crash.status if crash.status >= 0 else None,
        "signal": signame,
        "status": status,
        "command": redact.argv(command or crash.argv),
        "pid": 7,
        "started_at": _iso(now - crash.uptime),
        "ended_at": _iso(now),
        "uptime_s": round(crash.uptime, 3),
        "ready_after_s": None if phase == "starting" else 0.4,
        "signals_received": signals_received or [],
        "memory": memory
        or {
            "peak_rss_bytes": crash.maxrss,
            "cgroup_peak_bytes": None,
            "cgroup_limit_bytes": None,
            "oom_kills": 0,
            "samples": [[0.0, crash.maxrss // 2], [round(crash.uptime, 3), crash.maxrss]],
        },
        "exception": exception,
        "stderr_tail": redact.text(crash.stderr[-8192:]),
        "sentry_event_id": None,
    }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def assert_valid(event: dict[str, Any]) -> None:
    """Sentry's own ingestion normaliser accepts it without a single error."""
    normalized = StoreNormalizer().normalize_event(event)
    assert not normalized.get("errors"), normalized.get("errors")


def send(report: dict[str, Any], receiver: Receiver) -> tuple[Delivery, Envelope]:
    event = build_event(report, release=RELEASE, environment=ENVIRONMENT)
    delivery = deliver(event, attachments_for(report), dsn=receiver.dsn, timeout_s=5.0)
    assert delivery.delivered, delivery
    (envelope,) = receiver.wait_for(1)
    assert_valid(envelope.event())
    return delivery, envelope


def final(event: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = event["exception"]["values"][-1]
    return value


def functions(value: Mapping[str, Any]) -> list[str]:
    return [f["function"] for f in value["stacktrace"]["frames"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


# ----------------------------------------------------- crashes with a stack


def test_import_error_in_nested_module_arrives_as_a_fatal_exception(
    tmp_path: Path, receiver: Receiver
) -> None:
    write_app(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/main.py": "from app.integrations import sms\napp = object()\n",
            "app/integrations/__init__.py": "",
            "app/integrations/sms.py": "from twilio.http.http_client import TwilioHttpClient\n",
        },
    )
    crash = run_child(tmp_path, ["app.main"])
    assert crash.status == 1 and "ModuleNotFoundError" in crash.stderr
    report = make_report(crash, cause="python_exception")

    delivery, envelope = send(report, receiver)
    event = envelope.event()

    assert delivery.event_id == envelope.headers["event_id"] == event["event_id"]
    assert event["level"] == "fatal"
    assert event["release"] == RELEASE and event["environment"] == ENVIRONMENT
    assert event["platform"] == "python" and event["logger"] == "supervisor"
    value = final(event)
    assert value["type"] == "ModuleNotFoundError"
    assert value["value"] == "No module named 'twilio'"
    assert value["mechanism"] == {"type": "supervisor", "handled": False}
    frames = value["stacktrace"]["frames"]
    # Oldest first: the runner's import, then the app's modules, innermost last.
    assert frames[0]["abs_path"].endswith("runner.py") and frames[0]["in_app"] is False
    assert frames[-1]["filename"] == "app/integrations/sms.py"
    assert frames[-1]["module"] == "app.integrations.sms"
    assert frames[-1]["in_app"] is True and frames[-1]["lineno"] == 1
    assert "TwilioHttpClient" in frames[-1]["context_line"]
    assert event["tags"] == {"cause": "python_exception", "phase": "starting", "exit_code": "1"}
    assert event["fingerprint"] == [
        "supervisor",
        "python_exception",
        "ModuleNotFoundError",
        "app/integrations/sms.py:<module>",
    ]
    attachments = envelope.attachments()
    assert set(attachments) == {"stderr-tail.txt", "memory-samples.json", "report.json"}
    assert attachments["stderr-tail.txt"].headers["content_type"] == "text/plain"
    assert b"No module named 'twilio'" in attachments["stderr-tail.txt"].payload
    assert attachments["memory-samples.json"].json() == report["memory"]["samples"]
    assert attachments["report.json"].json() == report
    assert event["contexts"]["memory"]["peak_rss_bytes"] == crash.maxrss
    assert event["contexts"]["process"]["command"].endswith("runner.py app.main")
    assert event["contexts"]["container"]["hostname"] == socket.gethostname()
    assert envelope.request_headers["content-encoding"] == "gzip"
    assert "sentry_key=" in envelope.request_headers["x-sentry-auth"]


def test_missing_env_var_keyerror_points_at_the_app_frame_not_os(
    tmp_path: Path, receiver: Receiver
) -> None:
    write_app(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/settings.py": """
            import os

            def load():
                return {"db": os.environ["DATABASE_URL"]}
        """,
            "app/main.py": "from app.settings import load\nsettings = load()\n",
        },
    )
    crash = run_child(tmp_path, ["app.main"])
    report = make_report(crash, cause="python_exception")

    _, envelope = send(report, receiver)
    event = envelope.event()

    value = final(event)
    assert (value["type"], value["value"]) == ("KeyError", "'DATABASE_URL'")
    frames = value["stacktrace"]["frames"]
    # The innermost frame is the standard library's os module, not the app's.
    assert frames[-1]["in_app"] is False and frames[-1]["function"] == "__getitem__"
    assert event["fingerprint"][-1] == "app/settings.py:load"
    assert functions(value)[-2:] == ["load", "__getitem__"]


def test_chained_exceptions_are_sent_oldest_first(tmp_path: Path, receiver: Receiver) -> None:
    write_app(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/lifespan.py": """
            import json

            class StartupFailed(Exception):
                pass

            def read_config():
                return json.loads("{not json")

            def startup():
                try:
                    read_config()
                except ValueError as error:
                    raise StartupFailed("configuration unreadable") from error
        """,
        },
    )
    crash = run_child(tmp_path, ["app.lifespan", "startup"])
    report = make_report(crash, cause="python_exception")

    _, envelope = send(report, receiver)
    values = envelope.event()["exception"]["values"]

    assert [v["type"] for v in values] == ["JSONDecodeError", "StartupFailed"]
    assert values[0]["module"] == "json.decoder" and values[1]["module"] == "app.lifespan"
    assert "mechanism" not in values[0]
    assert functions(values[0])[-1] == "raw_decode"
    assert envelope.event()["fingerprint"] == [
        "supervisor",
        "python_exception",
        "StartupFailed",
        "app/lifespan.py:startup",
    ]


@pytest.mark.parametrize(
    ("source", "signame", "what"),
    [
        (
            "import ctypes\n\ndef crash():\n    ctypes.string_at(0)\n",
            "SIGSEGV",
            "Segmentation fault",
        ),
        ("import os\n\ndef crash():\n    os.abort()\n", "SIGABRT", "Aborted"),
    ],
)
def test_fatal_signal_with_faulthandler_dump_keeps_the_python_stack(
    tmp_path: Path, receiver: Receiver, source: str, signame: str, what: str
) -> None:
    write_app(tmp_path, {"app/__init__.py": "", "app/native.py": source})
    crash = run_child(tmp_path, ["app.native", "crash"])
    assert crash.status == -getattr(signal, signame)
    assert f"Fatal Python error: {what}" in crash.stderr
    report = make_report(
        crash, cause="fatal_signal", phase="running", summary=f"killed by {signame}"
    )

    _, envelope = send(report, receiver)
    event = envelope.event()

    value = final(event)
    assert value["type"] == signame
    assert value["mechanism"]["meta"]["signal"] == {
        "number": int(getattr(signal, signame)),
        "name": signame,
    }
    assert "crash" in functions(value)
    assert event["tags"] == {"cause": "fatal_signal", "phase": "running", "signal": signame}
    assert event["fingerprint"] == ["supervisor", "fatal_signal", signame, "app/native.py:crash"]


# ------------------------------------------------------------------ secrets


def test_a_secret_printed_by_the_app_never_reaches_sentry(
    tmp_path: Path, receiver: Receiver
) -> None:
    write_app(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/billing.py": """
            import os

            def charge():
                key = os.environ["STRIPE_API_KEY"]
                raise PermissionError(f"Stripe rejected key {key}")
        """,
        },
    )
    crash = run_child(tmp_path, ["app.billing", "charge"], env={"STRIPE_API_KEY": SECRET})
    assert SECRET in crash.stderr  # the app really printed it
    command = [*crash.argv, f"--stripe-key={SECRET}"]
    report = make_report(crash, cause="python_exception", command=command)

    _, envelope = send(report, receiver)

    assert SECRET.encode() not in envelope.raw
    assert all(SECRET not in v for v in envelope.request_headers.values())
    assert final(envelope.event())["value"] == "Stripe rejected key [redacted]"
    assert b"[redacted]" in envelope.attachments()["stderr-tail.txt"].payload


def test_build_event_masks_secrets_the_report_missed(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    monkeypatch.setenv("PAYMENT_TOKEN", SECRET)
    report = synthetic_report("exec_failed", summary=f"could not start 'run --token {SECRET}'")
    report["command"] = ["run", "--token", SECRET]
    report["stderr_tail"] = f"token={SECRET}\n"
    event = build_event(report, release=None, environment=None)
    delivery = deliver(event, attachments_for(report), dsn=receiver.dsn, timeout_s=5.0)
    assert delivery.delivered
    (envelope,) = receiver.wait_for(1)
    assert SECRET.encode() not in envelope.raw
    assert "release" not in envelope.event() and "environment" in envelope.event()


# ------------------------------------------------- causes without a stack


def synthetic_report(cause: str, **fields: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "cause": cause,
        "summary": cause,
        "phase": "running",
        "exit_code": None,
        "signal": None,
        "status": 1,
        "command": ["uvicorn", "app.main:app", "--fd", "3"],
        "pid": 7,
        "started_at": _iso(time.time() - 42.0),
        "ended_at": _iso(time.time()),
        "uptime_s": 42.0,
        "ready_after_s": 1.5,
        "signals_received": [],
        "memory": {
            "peak_rss_bytes": 300 << 20,
            "cgroup_peak_bytes": None,
            "cgroup_limit_bytes": None,
            "oom_kills": 0,
            "samples": [[0.0, 1 << 20]],
        },
        "exception": None,
        "stderr_tail": "",
        "sentry_event_id": None,
    }
    report.update(fields)
    return report


def real_exit(code: int) -> dict[str, Any]:
    started = time.monotonic()
    status = subprocess.run([sys.executable, "-c", f"import sys; sys.exit({code})"]).returncode
    cause = "exit_code" if code else "exited"
    return synthetic_report(
        cause, exit_code=status, status=status, uptime_s=round(time.monotonic() - started, 3)
    )


def real_kill() -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()
    status = proc.wait(10)
    return synthetic_report("killed", signal=signal.Signals(-status).name, status=128 - status)


def real_exec_failure() -> dict[str, Any]:
    try:
        subprocess.Popen(["/nonexistent/bin/uvicorn", "app:app"])
    except FileNotFoundError as error:
        summary = f"could not start '/nonexistent/bin/uvicorn': {error.strerror}"
    return synthetic_report(
        "exec_failed",
        summary=summary,
        exit_code=127,
        status=127,
        phase="starting",
        command=["/nonexistent/bin/uvicorn", "app:app"],
    )


def real_port_in_use() -> dict[str, Any]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code = f"import socket; socket.socket().bind(('127.0.0.1', {port}))"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    last = result.stderr.strip().splitlines()[-1]
    return synthetic_report(
        "port_in_use",
        summary=last,
        exit_code=result.returncode,
        status=result.returncode,
        phase="starting",
        stderr_tail=result.stderr,
    )


def real_segfault_without_dump() -> dict[str, Any]:
    code = "import ctypes; ctypes.string_at(0)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    status = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode
    return synthetic_report(
        "fatal_signal", signal=signal.Signals(-status).name, status=128 - status
    )


SYNTHETIC = {
    "oom_killed": (
        lambda: synthetic_report(
            "oom_killed",
            signal="SIGKILL",
            status=137,
            memory={
                "peak_rss_bytes": 490 << 20,
                "cgroup_peak_bytes": 511 << 20,
                "cgroup_limit_bytes": 512 << 20,
                "oom_kills": 1,
                "cgroup_version": 2,
                "oom_evidence": "memory.events oom_kill 0 -> 1",
                "samples": [],
            },
        ),
        "OOMKilled",
        "killed by the OOM killer at 511 MiB of 512 MiB after 42.0 s",
    ),
    "killed": (real_kill, "Killed", "killed by SIGKILL at 300 MiB after 42.0 s, with no sign"),
    "exec_failed": (
        real_exec_failure,
        "ExecFailed",
        "could not start '/nonexistent/bin/uvicorn': No such file or directory",
    ),
    "exit_code": (lambda: real_exit(3), "NonZeroExit", "exited with code 3 after 0."),
    "exited": (lambda: real_exit(0), "UnexpectedExit", "exited with code 0 after 0."),
    "stop_timeout": (
        lambda: synthetic_report(
            "stop_timeout",
            phase="stopping",
            signal="SIGKILL",
            status=137,
            signals_received=[{"signal": "SIGTERM", "at_s": 17.0}],
        ),
        "StopTimeout",
        "did not exit within 25.0 s of SIGTERM and was killed",
    ),
    "port_in_use": (real_port_in_use, "PortInUse", "OSError: [Errno 98] Address already in use"),
    "startup_timeout": (
        lambda: synthetic_report(
            "startup_timeout",
            phase="starting",
            signal="SIGKILL",
            status=124,
            uptime_s=120.02,
            ready_after_s=None,
        ),
        "StartupTimeout",
        "not ready after 120.0 s; killed",
    ),
    "fatal_signal": (
        real_segfault_without_dump,
        "SIGSEGV",
        "killed by SIGSEGV (Segmentation fault) after 42.0 s",
    ),
}


@pytest.mark.parametrize("cause", sorted(SYNTHETIC))
def test_causes_without_a_traceback_get_a_synthetic_exception_with_figures(
    cause: str, receiver: Receiver
) -> None:
    make, exc_type, message = SYNTHETIC[cause]
    report = make()

    _, envelope = send(report, receiver)
    event = envelope.event()

    value = final(event)
    assert value["type"] == exc_type
    assert value["value"].startswith(message)
    assert value["mechanism"]["type"] == "supervisor" and value["mechanism"]["handled"] is False
    assert event["level"] == "fatal" and event["tags"]["cause"] == cause
    assert event["fingerprint"] == ["supervisor", cause, exc_type, "<no app frame>"]


@pytest.mark.timeout(30)
def test_startup_timeout_with_a_stack_groups_on_where_it_hung(
    tmp_path: Path, receiver: Receiver
) -> None:
    # What the supervisor does on a startup timeout: SIGABRT, faulthandler dumps the stack.
    write_app(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/slow.py": """
            import sys, time

            def warm_cache():
                print("warming", file=sys.stderr, flush=True)
                time.sleep(60)
        """,
        },
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONFAULTHANDLER": "1",
        "EXCEPTION_OUT": str(tmp_path / "exception.json"),
    }
    argv = [sys.executable, str(tmp_path / "runner.py"), "app.slow", "warm_cache"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stderr is not None
    try:
        # Blocks only until the child is inside warm_cache; the timeout below bounds it.
        first = proc.stderr.readline()
        assert first == b"warming\n"
        proc.send_signal(signal.SIGABRT)
        rest = proc.stderr.read()
        proc.wait(10)
    finally:
        proc.kill()
        proc.stderr.close()
    crash = Crash(
        argv, env, proc.returncode, (first + rest).decode(), 0, 0.6, tmp_path / "exception.json"
    )
    report = make_report(crash, cause="startup_timeout")

    _, envelope = send(report, receiver)
    event = envelope.event()

    value = final(event)
    assert value["type"] == "StartupTimeout"
    assert value["value"].startswith("not ready after 0.6 s; killed; SIGABRT: Fatal Python error")
    assert functions(value)[-1] == "warm_cache"
    assert event["fingerprint"] == [
        "supervisor",
        "startup_timeout",
        "StartupTimeout",
        "app/slow.py:warm_cache",
    ]


def test_memory_figures_never_split_an_issue() -> None:
    small = synthetic_report(
        "oom_killed", memory={"cgroup_peak_bytes": 255 << 20, "cgroup_limit_bytes": 256 << 20}
    )
    large = synthetic_report(
        "oom_killed",
        uptime_s=3.0,
        memory={"cgroup_peak_bytes": 2047 << 20, "cgroup_limit_bytes": 2048 << 20},
    )
    first = build_event(small, release=None, environment=None)
    second = build_event(large, release=None, environment=None)
    assert final(first)["value"] != final(second)["value"]
    assert first["fingerprint"] == second["fingerprint"]
    assert not any(re.search(r"\d", part) for part in first["fingerprint"])


# ------------------------------------------------------ delivery outcomes


@pytest.mark.parametrize(
    ("mode", "detail"), [("500", "HTTP 500"), ("hang", "timed out after 1.0 s")]
)
def test_a_misbehaving_receiver_is_reported_within_the_deadline(mode: str, detail: str) -> None:
    report = synthetic_report("killed", signal="SIGKILL")
    event = build_event(report, release=RELEASE, environment=ENVIRONMENT)
    with Receiver(mode) as receiver:
        started = time.monotonic()
        delivery = deliver(event, attachments_for(report), dsn=receiver.dsn, timeout_s=1.0)
        elapsed = time.monotonic() - started
        # An abandoned attempt has its socket shut down, so its thread ends too.
        deadline = time.monotonic() + 2.0
        while sending_threads() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a thread's end; bounded by the deadline
        assert sending_threads() == []
    assert delivery == Delivery(False, None, detail)
    # Bounded by the 1 s timeout, not by the SDK's 30 s socket timeout (speed is in bench/).
    assert elapsed < 1.0 + 10


def sending_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "supervisor-sentry" and t.is_alive()]


def test_connection_refused_is_reported_at_once() -> None:
    event = build_event(synthetic_report("killed"), release=None, environment=None)
    with refused_dsn() as dsn:
        started = time.monotonic()
        delivery = deliver(event, [], dsn=dsn, timeout_s=1.0)
    assert delivery == Delivery(False, None, "connection refused")
    assert time.monotonic() - started < 1.0 + 10  # bounded, not the 30 s socket timeout


def test_a_bad_dsn_is_an_outcome_not_an_exception() -> None:
    event = build_event(synthetic_report("killed"), release=None, environment=None)
    delivery = deliver(event, [], dsn="https://sentry.example/not-a-project", timeout_s=1.0)
    assert delivery.delivered is False and delivery.detail.startswith("invalid DSN")


def run_fresh(code: str) -> Any:
    """Run code in a fresh interpreter (nothing imported yet); it prints JSON."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


DELIVER_FRESH = """
import json, sys, time
started = time.monotonic()
from supervisor.sentry_delivery import deliver
d = deliver({{"level": "fatal", "message": "x"}}, [], dsn={dsn!r}, timeout_s={timeout})
print(json.dumps([d.delivered, d.detail, time.monotonic() - started]))
"""


def test_the_deadline_includes_importing_sentry_sdk() -> None:
    # 50 ms is shorter than the SDK's own import: the call must still return.
    with Receiver("hang") as receiver:
        delivered, detail, elapsed = run_fresh(DELIVER_FRESH.format(dsn=receiver.dsn, timeout=0.05))
    assert (delivered, detail) == (False, "timed out after 0.05 s")
    assert elapsed < 0.05 + 10  # bounded by the timeout; bench/sentry.py measures it


def test_without_sentry_sdk_delivery_says_so() -> None:
    code = "import sys; sys.modules['sentry_sdk'] = None\n" + DELIVER_FRESH.format(
        dsn="http://k@127.0.0.1:9/1", timeout=1.0
    )
    delivered, detail, _ = run_fresh(code)
    assert (delivered, detail) == (False, "sentry_sdk not installed")


def test_importing_the_module_is_cheap() -> None:
    heavy = ["sentry_sdk", "httpx", "urllib3", "http.client", "ssl", "gzip"]
    loaded = run_fresh(
        "import sys, json, supervisor.sentry_delivery, supervisor.sentry_event\n"
        f"print(json.dumps([m for m in {heavy!r} "
        "if m in sys.modules]))"
    )
    assert loaded == []


# ------------------------------------------------------ saved reports, warning


def test_a_saved_report_is_sent_later_under_its_recorded_id(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_RELEASE", RELEASE)
    monkeypatch.delenv("SENTRY_ENVIRONMENT", raising=False)
    report = real_exit(3)
    report["sentry_event_id"] = "5f3c0bd2a8b64c8e9d36a1a2b3c4d5e6"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))

    delivery = send_saved_report(str(path), dsn=receiver.dsn, timeout_s=5.0)

    assert delivery == Delivery(True, report["sentry_event_id"], "delivered")
    (envelope,) = receiver.wait_for(1)
    event = envelope.event()
    assert_valid(event)
    assert event["event_id"] == report["sentry_event_id"]
    assert event["release"] == RELEASE
    assert final(event)["type"] == "NonZeroExit"
    assert envelope.attachments()["report.json"].json() == report


def test_an_unreadable_saved_report_is_an_outcome(tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text("{truncated")
    delivery = send_saved_report(str(bad), dsn="http://k@127.0.0.1:9/1", timeout_s=1.0)
    assert delivery.delivered is False and delivery.detail.startswith("cannot read report")
    stopped = tmp_path / "stopped.json"
    stopped.write_text(json.dumps(synthetic_report("stopped")))
    delivery = send_saved_report(str(stopped), dsn="http://k@127.0.0.1:9/1", timeout_s=1.0)
    assert delivery.detail == "not sent: a clean stop is not a crash"


def test_memory_warning_is_a_warning_event(receiver: Receiver) -> None:
    memory = {
        "peak_rss_bytes": 470 << 20,
        "cgroup_peak_bytes": 466 << 20,
        "cgroup_limit_bytes": 512 << 20,
        "oom_kills": 0,
        "samples": [],
    }
    event = build_warning_event(
        "memory at 91% of the limit (466 MiB of 512 MiB)",
        memory,
        release=RELEASE,
        environment=ENVIRONMENT,
    )
    delivery = deliver(event, [], dsn=receiver.dsn, timeout_s=5.0)
    assert delivery.delivered
    (envelope,) = receiver.wait_for(1)
    sent = envelope.event()
    assert_valid(sent)
    assert sent["level"] == "warning" and sent["release"] == RELEASE
    assert sent["fingerprint"] == ["supervisor", "memory_warning"]
    assert sent["contexts"]["memory"]["limit"] == "512 MiB"


# ---------------------------------------------------------- the receiver


@pytest.mark.parametrize("algo", ["br", "gzip"])
def test_receiver_decodes_the_sdks_own_envelopes(algo: str, receiver: Receiver) -> None:
    # sentry_sdk's own transport compresses with brotli when it can, else gzip.
    import sentry_sdk

    client = sentry_sdk.Client(
        dsn=receiver.dsn,
        default_integrations=False,
        release="x",
        shutdown_timeout=0,
        _experiments={"transport_compression_algo": algo},
    )
    client.capture_event({"message": "hello", "level": "info"})
    client.close(timeout=5)
    (envelope,) = receiver.wait_for(1)
    assert envelope.request_headers["content-encoding"] == algo
    assert envelope.event()["message"] == "hello"


# ------------------------------------------------- start-up forensics


def forensic_report(tmp_path: Path) -> dict[str, Any]:
    """A real child that imports, waits in a known function and is SIGKILLed after a
    real py-spy sample; its real import profile and sample go into the report."""
    from supervisor.importprofile import ImportProfile
    from supervisor.stacks import find_py_spy, parse_dump

    py_spy = find_py_spy(os.environ.get("PATH"))
    if py_spy is None:
        pytest.skip("py-spy is not installed")
    write_app(tmp_path, {
        "app/__init__.py": "",
        "app/main.py": """\
            import decimal, sys, time

            def load_model():
                print("loaded", flush=True)
                time.sleep(60)

            load_model()
        """,
    })
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPROFILEIMPORTTIME": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "import app.main"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline() == b"loaded\n"
        sampled_at = time.monotonic() - started
        dumped = subprocess.run([py_spy, "dump", "--pid", str(proc.pid), "--nonblocking",
                                 "--json"], capture_output=True, text=True, timeout=60)
        proc.kill()
        status = proc.wait(10)
        stderr = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    ended = time.monotonic() - started
    profile = ImportProfile()
    for line in stderr.splitlines():
        profile.add_line(line, 0.05)
    startup = profile.startup().as_json()
    sample = parse_dump(dumped.stdout, proc.pid, sampled_at)
    return synthetic_report(
        "killed", signal=signal.Signals(-status).name, status=128 - status, phase="starting",
        ready_after_s=None, uptime_s=round(ended, 3), startup=startup,
        last_stack=sample.as_json(ended_s=ended),
    )


def test_a_sampled_stack_becomes_the_stacktrace_marked_as_a_sample(
    tmp_path: Path, receiver: Receiver
) -> None:
    report = forensic_report(tmp_path)
    _, envelope = send(report, receiver)
    event = envelope.event()
    value = final(event)
    assert value["type"] == "Killed"
    assert functions(value)[-1] == "load_model"
    assert functions(value)[-2] == "<module>"
    assert value["stacktrace"]["frames"][-1]["filename"].endswith("app/main.py")
    assert "stack sampled by py-spy" in value["value"] and "s before the end" in value["value"]
    assert value["mechanism"]["data"] == {"stacktrace": "sampled", "source": "py-spy dump"}
    # A sample says where the app was last seen, not where it died: it never splits issues.
    assert event["fingerprint"] == ["supervisor", "killed", "Killed", "<no app frame>"]


def test_startup_steps_context_and_import_profile_reach_sentry(
    tmp_path: Path, receiver: Receiver
) -> None:
    report = forensic_report(tmp_path)
    _, envelope = send(report, receiver)
    event = envelope.event()
    context = event["contexts"]["startup"]
    assert context["type"] == "startup"
    assert context["import_count"] == report["startup"]["import_count"] > 10
    assert context["last_import"] == "decimal"
    assert context["open_imports"] == 1  # app.main never completed
    assert len(context["slowest_imports"]) == 10
    crumbs = [c for c in event["breadcrumbs"]["values"] if c["category"] == "startup"]
    messages = [c["message"] for c in crumbs]
    assert any(m.startswith("interpreter ready") for m in messages)
    assert any("imports" in m and "last decimal" in m for m in messages)
    assert any(m.startswith("stack sampled (starting): load_model at ") for m in messages)
    profile = envelope.attachments()["import-profile.txt"].payload.decode()
    assert profile.startswith("# The child's imports")
    assert profile.rstrip().splitlines()[-1].endswith("|   decimal")
    assert len(profile.splitlines()) == report["startup"]["import_count"] + 3


def test_a_report_without_forensics_has_no_startup_parts() -> None:
    event = build_event(real_exit(3), release=None, environment=None)
    assert "startup" not in event["contexts"]
    assert all(c["category"] != "startup" for c in event["breadcrumbs"]["values"])
    assert "stacktrace" not in final(event)
    assert_valid(event)
