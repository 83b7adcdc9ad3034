"""The supervisor exits with the child's status, and names the cause."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Callable

import pytest

from .conftest import PYTHON, Run, child, supervisor_lines


@pytest.mark.parametrize(
    ("what", "status", "cause"),
    [
        ("0", 0, "exited"),
        ("1", 1, "exit_code"),
        ("3", 3, "exit_code"),
        ("SIGKILL", 137, "killed"),
        ("SIGSEGV", 139, "fatal_signal"),
        ("SIGABRT", 134, "fatal_signal"),
        ("SIGTERM", 143, "killed"),
    ],
)
def test_exit_status_is_the_childs_code_or_128_plus_signal(
    supervise: Callable[..., Run], tmp_path: Path, what: str, status: int, cause: str
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--", PYTHON, child("exit_with.py"), what)
    code, _, _ = run.finish()
    assert code == status
    data = json.loads(report.read_text())
    assert data["cause"] == cause
    assert data["status"] == status
    if what.startswith("SIG"):
        assert data["signal"] == what
        assert data["exit_code"] is None
    else:
        assert data["exit_code"] == int(what)
        assert data["signal"] is None


def test_command_not_found_exits_127_with_the_errno_text(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "no-such-command-anywhere", "arg")
    code, _, _ = run.finish()
    assert code == 127
    assert "No such file or directory" in run.text
    data = json.loads(report.read_text())
    assert data["cause"] == "exec_failed"
    assert data["pid"] is None


def test_command_not_executable_exits_126(supervise: Callable[..., Run], tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    run = supervise(str(script))
    code, _, _ = run.finish()
    assert code == 126
    assert "Permission denied" in run.text


def test_import_error_is_a_python_exception_naming_the_nested_module(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), PYTHON, child("crash_import.py"))
    code, _, err = run.finish()
    assert code == 1
    # The child's traceback is relayed untouched before the supervisor's block.
    assert b"ModuleNotFoundError: No module named 'twilio_client_missing_for_tests'" in err
    data = json.loads(report.read_text())
    assert data["cause"] == "python_exception"
    assert data["summary"] == (
        "ModuleNotFoundError: No module named 'twilio_client_missing_for_tests'"
    )
    assert data["exception"]["type"] == "ModuleNotFoundError"
    innermost = data["exception"]["frames"][-1]
    assert innermost["filename"].endswith(os.path.join("services", "sms.py"))
    assert innermost["function"] == "<module>"
    assert data["where"].startswith(innermost["filename"] + ":1 in <module>")
    lines = supervisor_lines(err)
    assert any("python_exception" in line for line in lines)
    assert any("sms.py:1 in <module>" in line for line in lines)


def test_segfault_names_the_function_from_faulthandlers_dump(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), PYTHON, child("segfault.py"))
    code, _, _ = run.finish()
    assert code == 128 + signal.SIGSEGV
    data = json.loads(report.read_text())
    assert data["cause"] == "fatal_signal"
    assert "read_null_pointer" in data["summary"]
    # The innermost frame is ctypes' own; the innermost app frame is ours.
    assert data["exception"]["frames"][-1]["function"] == "string_at"
    assert "segfault.py:7 in read_null_pointer" in data["where"]


def test_unrequested_exit_zero_is_reported_as_exited(supervise: Callable[..., Run]) -> None:
    run = supervise("true")
    code, _, err = run.finish()
    assert code == 0
    assert any("exited" in line for line in supervisor_lines(err))


def test_report_file_has_the_contract_fields(supervise: Callable[..., Run], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), PYTHON, child("exit_with.py"), "5")
    run.finish()
    data = json.loads(report.read_text())
    for field in (
        "cause", "summary", "phase", "exit_code", "signal", "status", "command", "pid",
        "started_at", "ended_at", "uptime_s", "ready_after_s", "signals_received", "memory",
        "exception", "stderr_tail", "sentry_event_id",
    ):
        assert field in data, field
    assert data["command"] == [PYTHON, child("exit_with.py"), "5"]
    # No socket is handed to a plain command, so readiness is not tracked.
    assert data["phase"] == "running"
    assert data["handoff"] == "none"
    assert not list(tmp_path.glob(".report-*")), "the temporary file was renamed away"
