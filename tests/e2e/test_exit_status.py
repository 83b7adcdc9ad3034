"""The supervisor exits with the child's status, and names the cause."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Callable

import psutil
import pytest

from tests.conftest import PYTHON, Run, child, free_port, supervisor_lines, wait_for


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


def test_unrequested_exit_zero_is_reported_as_exited(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "true")
    code, _, err = run.finish()
    assert code == 0
    assert json.loads(report.read_text())["cause"] == "exited"
    # A one-shot command (no socket handed over) that did its job gets no block.
    assert not any("the app ended" in line for line in supervisor_lines(err))


@pytest.mark.parametrize("with_stub", [False, True], ids=["no-socket", "stub"])
def test_a_one_shot_with_no_report_asked_ends_as_one_with_a_report(
    supervise: Callable[..., Run], tmp_path: Path, with_stub: bool
) -> None:
    # A one-shot that exits 0 skips the report's imports when nothing asks for
    # one: that shortcut must never change the verdict. This script prints a
    # traceback last and exits 0, which is judged a crash.
    script = tmp_path / "prints_a_traceback.py"
    script.write_text("import traceback\ntry:\n    raise ValueError('at the end')\n"
                      "except ValueError:\n    traceback.print_exc()\n")
    stub = ["--host", "127.0.0.1", "--port", str(free_port())] if with_stub else []
    report = tmp_path / "report.json"
    quiet_code, _, quiet_err = supervise(*stub, "--", PYTHON, str(script)).finish()
    full_code, _, full_err = supervise(*stub, "--report-file", str(report), "--",
                                       PYTHON, str(script)).finish()
    assert json.loads(report.read_text())["cause"] == "python_exception"
    assert quiet_code == full_code == 1
    for err in (quiet_err, full_err):
        assert any("the app ended: python_exception" in line for line in supervisor_lines(err))


def test_a_server_that_exits_zero_gets_the_block(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    run = supervise("--handoff", "systemd", "--host", "127.0.0.1", "--port", str(free_port()),
                    "--", "true")
    code, _, err = run.finish()
    assert code == 0
    assert any("the app ended: exited" in line for line in supervisor_lines(err))


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


def test_a_missing_report_directory_is_created_and_the_report_is_readable(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "volume" / "not-yet" / "report.json"
    code, _, err = supervise("--report-file", str(report), PYTHON, child("exit_with.py"),
                             "4").finish()
    assert code == 4
    assert json.loads(report.read_text())["cause"] == "exit_code"
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert f"[supervisor] report:   {report}" in err.decode()


def test_an_unwritable_report_is_said_in_the_block(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = supervise("--report-file", str(blocker / "report.json"), PYTHON,
                             child("exit_with.py"), "4").finish()
    assert code == 4
    assert "[supervisor] report:   not written to" in err.decode()


def test_a_traceback_logged_and_recovered_from_is_not_the_cause(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    script = (
        "import logging, sys\n"
        "try:\n"
        "    raise ConnectionError('redis not reachable')\n"
        "except ConnectionError:\n"
        "    logging.exception('retrying in a moment')\n"
        "for attempt in range(20):\n"
        "    print(f'INFO: connected, serving ({attempt})', file=sys.stderr)\n"
        "print(\"ERROR: [Errno 98] error while attempting to bind on address \"\n"
        "      \"('0.0.0.0', 8000): address already in use\", file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    code, _, _ = supervise("--report-file", str(report), PYTHON, "-c", script).finish()
    assert code == 1
    data = json.loads(report.read_text())
    assert data["cause"] == "port_in_use"
    assert "address already in use" in data["summary"]


def test_a_long_exception_message_still_names_the_exception(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    # Settings validation errors print one or two lines per field.
    report = tmp_path / "report.json"
    script = (
        "fields = '\\n'.join(f'FIELD_{n}\\n  Field required [type=missing]' for n in range(30))\n"
        "raise ValueError('30 validation errors for Settings\\n' + fields)\n"
    )
    supervise("--report-file", str(report), PYTHON, "-c", script).finish()
    data = json.loads(report.read_text())
    assert data["cause"] == "python_exception"
    assert data["summary"] == "ValueError: 30 validation errors for Settings"


def test_a_death_by_a_forwarded_signal_says_it_was_forwarded(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), PYTHON, "-c",
                    "import time; print('ready', flush=True); time.sleep(60)")
    assert run.read_stdout_line() == "ready\n"
    run.signal(signal.SIGHUP)
    code, _, _ = run.finish()
    assert code == 128 + signal.SIGHUP
    data = json.loads(report.read_text())
    assert data["cause"] == "killed"
    assert "forwarded" in data["summary"]


def test_what_is_left_of_the_childs_group_is_stopped_when_it_ends(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code, _, err = supervise("sh", "-c", f"sleep 300 & echo $! > {pid_file}; exit 1").finish()
    assert code == 1
    grandchild = int(pid_file.read_text())
    wait_for(lambda: not psutil.pid_exists(grandchild)
             or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE,
             timeout=60, what="the grandchild to be stopped")
    assert "stopping what is left of process group" in err.decode()
