"""Sentry through the real supervisor: one event per crash, bounded, no secrets."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from sentry_relay.processing import StoreNormalizer

from tests.conftest import PYTHON, Run, child, free_port, supervisor_lines, wait_for
from tests.sentry_receiver import Receiver, refused_dsn

SENTRY_ENV = {"SENTRY_RELEASE": "shop@1.2.3", "SENTRY_ENVIRONMENT": "staging"}


def assert_valid_protocol(event: dict[str, Any]) -> None:
    normalized = StoreNormalizer().normalize_event(event)
    assert not normalized.get("errors"), normalized.get("errors")


def test_import_error_becomes_a_fatal_event_with_frames_tags_and_attachments(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    with Receiver() as receiver:
        run = supervise("--sentry-dsn", receiver.dsn, "--report-file", str(report),
                        PYTHON, child("crash_import.py"), env=SENTRY_ENV)
        code, _, err = run.finish()
        envelope = receiver.wait_for(1)[0]
    assert code == 1
    event = envelope.event()
    assert_valid_protocol(event)
    assert event["level"] == "fatal"
    assert event["release"] == "shop@1.2.3"
    assert event["environment"] == "staging"
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ModuleNotFoundError"
    assert exception["stacktrace"]["frames"][-1]["function"] == "<module>"
    assert exception["stacktrace"]["frames"][-1]["filename"].endswith("sms.py")
    assert event["tags"]["cause"] == "python_exception"
    assert event["tags"]["exit_code"] == "1"
    assert event["fingerprint"][1] == "python_exception"
    assert set(envelope.attachments()) >= {"stderr-tail.txt", "report.json"}
    data = json.loads(report.read_text())
    assert data["sentry_event_id"] == event["event_id"]
    assert data["sentry"] == {"delivered": True, "detail": "delivered"}
    assert any(f"delivered event {event['event_id']}" in line for line in supervisor_lines(err))


def test_sigkill_sends_a_synthetic_killed_event(
    supervise: Callable[..., Run],
) -> None:
    with Receiver() as receiver:
        run = supervise("--sentry-dsn", receiver.dsn, PYTHON, child("ignore_sigterm.py"))
        assert run.read_stdout_line() == "ready\n"
        psutil.Process(run.pid).children()[0].kill()
        assert run.finish()[0] == 137
        event = receiver.wait_for(1)[0].event()
    assert_valid_protocol(event)
    assert event["tags"]["cause"] == "killed"
    assert event["tags"]["signal"] == "SIGKILL"


def test_a_clean_stop_sends_no_event(supervise: Callable[..., Run], tmp_path: Path) -> None:
    received = tmp_path / "received.txt"
    with Receiver() as receiver:
        run = supervise("--sentry-dsn", receiver.dsn, PYTHON, child("signal_log.py"),
                        str(received))
        assert run.read_stdout_line() == "ready\n"
        run.signal(signal.SIGTERM)
        assert run.finish()[0] == 0
        assert receiver.envelopes == []


@pytest.mark.parametrize("mode", ["500", "hang", "refused"])
def test_a_misbehaving_sentry_never_holds_the_exit(
    supervise: Callable[..., Run], tmp_path: Path, mode: str
) -> None:
    report = tmp_path / "report.json"

    def crash(dsn: str) -> tuple[float, int, bytes]:
        run = supervise("--sentry-dsn", dsn, "--sentry-timeout", "1s",
                        "--report-file", str(report), PYTHON, child("exit_with.py"), "3")
        started = time.monotonic()
        code, _, err = run.finish()
        return time.monotonic() - started, code, err

    if mode == "refused":
        with refused_dsn() as dsn:
            elapsed, code, err = crash(dsn)
    else:
        with Receiver(mode) as receiver:
            elapsed, code, err = crash(receiver.dsn)
    assert code == 3
    # Unbounded, a hanging Sentry holds a send for the SDK's 30 s socket timeout; the
    # bound here only tells the two apart (bench/sentry.py measures how close to 1 s).
    assert elapsed < 15.0
    data = json.loads(report.read_text())
    assert data["cause"] == "exit_code"
    assert data["sentry"]["delivered"] is False
    assert data["sentry_event_id"] is None
    assert any("sentry: not delivered" in line for line in supervisor_lines(err))
    # The human block came first and is complete.
    assert any("==== the app ended: exit_code ====" in line for line in supervisor_lines(err))


def test_a_secret_printed_by_the_app_reaches_neither_sentry_nor_the_report(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    report = tmp_path / "report.json"
    script = (
        "import os\n"
        "key = os.environ['STRIPE_API_KEY']\n"
        "raise RuntimeError(f'payment provider rejected key {key}')\n"
    )
    with Receiver() as receiver:
        run = supervise("--sentry-dsn", receiver.dsn, "--report-file", str(report),
                        PYTHON, "-c", script, env={"STRIPE_API_KEY": secret})
        code, _, err = run.finish()
        envelope = receiver.wait_for(1)[0]
    assert code == 1
    assert secret.encode() in err  # the app's own output is relayed untouched
    assert secret.encode() not in envelope.raw
    assert secret not in report.read_text()
    block = "\n".join(supervisor_lines(err))
    assert secret not in block


def test_a_saved_report_can_be_sent_later(supervise: Callable[..., Run], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    with refused_dsn() as dsn:
        supervise("--sentry-dsn", dsn, "--sentry-timeout", "1s", "--report-file", str(report),
                  PYTHON, child("crash_import.py")).finish()
    assert json.loads(report.read_text())["sentry"]["delivered"] is False
    with Receiver() as receiver:
        code, _, err = supervise("--send-report", str(report), "--sentry-dsn",
                                 receiver.dsn).finish()
        event = receiver.wait_for(1)[0].event()
    assert code == 0
    assert event["exception"]["values"][-1]["type"] == "ModuleNotFoundError"
    assert any("delivered event" in line for line in supervisor_lines(err))


def test_a_malformed_sentry_dsn_variable_switches_sentry_off_but_runs_the_app(
    supervise: Callable[..., Run],
) -> None:
    code, _, err = supervise(PYTHON, child("exit_with.py"), "4",
                             env={"SENTRY_DSN": "not a dsn"}).finish()
    assert code == 4
    assert any("crash events will not be sent" in line for line in supervisor_lines(err))


def test_a_malformed_sentry_dsn_flag_is_a_usage_error(supervise: Callable[..., Run]) -> None:
    code, _, err = supervise("--sentry-dsn", "nope", "true").finish()
    assert code == 2
    assert "--sentry-dsn" in err.decode()


CHILDREN = str(Path(child("e2e_hang.py")).parent)
CRASHES = {
    # name: (command after the supervisor's options, expected cause, exception type)
    "missing_env_var": ([PYTHON, "-c", "import os\nURL = os.environ['DATABASE_URL']"],
                        "python_exception", "KeyError"),
    "exit_3": ([PYTHON, child("exit_with.py"), "3"], "exit_code", "NonZeroExit"),
    "segfault": ([PYTHON, child("segfault.py")], "fatal_signal", None),
    "abort": ([PYTHON, "-c", "import os\ndef give_up():\n    os.abort()\ngive_up()"],
              "fatal_signal", None),
    "exec_failure": (["no-such-command-for-sentry"], "exec_failed", "ExecFailed"),
    "lifespan_error": ([PYTHON, "-m", "uvicorn", "--app-dir", CHILDREN,
                        "e2e_lifespan_error:app", "--lifespan", "on", "--host", "127.0.0.1",
                        "--port", "{port}"], "python_exception", "RuntimeError"),
    "startup_timeout": (["--startup-timeout", "1s", PYTHON, "-m", "uvicorn", "--app-dir",
                         CHILDREN, "e2e_hang:app",
                         "--host", "127.0.0.1", "--port", "{port}"],
                        "startup_timeout", "StartupTimeout"),
}


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_every_crash_cause_sends_one_valid_fatal_event(
    supervise: Callable[..., Run], name: str
) -> None:
    template, cause, exception_type = CRASHES[name]
    port = str(free_port())
    command = [arg.replace("{port}", port) for arg in template]
    with Receiver() as receiver:
        code, _, _ = supervise("--sentry-dsn", receiver.dsn, *command,
                               env=SENTRY_ENV).finish(timeout=60)
        envelopes = receiver.wait_for(1)
    assert code != 0
    assert len(envelopes) == 1
    event = envelopes[0].event()
    assert_valid_protocol(event)
    assert event["level"] == "fatal"
    assert event["tags"]["cause"] == cause
    values = event["exception"]["values"]
    if exception_type is not None:
        assert values[-1]["type"] == exception_type
    assert event["fingerprint"][:2] == ["supervisor", cause]


def test_an_oom_kill_in_a_real_cgroup_sends_an_oomkilled_event(
    supervise: Callable[..., Run],
) -> None:
    from tests.cgroups import join, memory_cgroup, unusable_reason

    reason = unusable_reason()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup: {reason}")
    with Receiver() as receiver, memory_cgroup(96 << 20) as group:
        code, _, _ = supervise("--sentry-dsn", receiver.dsn, PYTHON, child("mem_grow.py"),
                               "--step-mb", "4", env=SENTRY_ENV,
                               preexec_fn=join(group)).finish(timeout=60)
        # The memory warning (90 % of the limit) may come first: take the crash event.
        wait_for(lambda: any(e.event()["level"] == "fatal" for e in receiver.envelopes),
                 what="the crash event")
        (event,) = [e.event() for e in receiver.envelopes if e.event()["level"] == "fatal"]
    assert code == 137
    assert_valid_protocol(event)
    assert event["tags"]["cause"] == "oom_killed"
    assert event["exception"]["values"][-1]["type"] == "OOMKilled"
    assert "96 MiB" in event["exception"]["values"][-1]["value"]
