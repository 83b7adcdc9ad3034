"""``causes.classify``: every cause and every tie-break between the rules.

The facts are real: wait statuses from children that really exited or were
really killed (read with ``waitpid``), tracebacks and faulthandler dumps that
a real Python printed, exec failures from a real ``fork``/``exec``. Only the
supervisor's own observations (a stop was asked, a timeout passed, the OOM
killer left evidence) are given as they would be recorded.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pytest

from supervisor.causes import TRAILING_LINES, Cause, Ending, classify, frame_text
from supervisor.child import ChildSpec, ExecFailure, ExitStatus, start
from tests.conftest import CHILDREN, run_for_wait_status

PYTHON = sys.executable
OOM_EVIDENCE = "memory.events oom_kill 0 -> 1"


SCRIPTS = Path(tempfile.mkdtemp(prefix="test-causes-"))
atexit.register(shutil.rmtree, SCRIPTS, True)


def script(code: str) -> Path:
    """``code`` as an app file: its frames are the app's own (``-c``'s are ``<string>``)."""
    path = SCRIPTS / f"app_{hashlib.sha1(code.encode()).hexdigest()[:12]}.py"
    path.write_text(code)
    return path


@functools.cache
def python(code: str, faulthandler: bool = True) -> tuple[ExitStatus, str]:
    """Run ``code`` in a real Python; how it ended and what it wrote on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if faulthandler:
        env["PYTHONFAULTHANDLER"] = "1"
    status, stderr = run_for_wait_status([PYTHON, str(script(code))], env=env)
    return ExitStatus.from_wait_status(status), stderr


def exited(code: int) -> ExitStatus:
    status, _ = python(f"import sys\nsys.exit({code})\n")
    assert status.code == code
    return status


def killed_by(signum: int) -> ExitStatus:
    reset = "" if signum == signal.SIGKILL else f"signal.signal({signum}, signal.SIG_DFL)\n"
    status, _ = python(f"import os, signal\n{reset}os.kill(os.getpid(), {signum})\n"
                       "signal.pause()\n", faulthandler=False)
    assert status.signal == signum
    return status


HANG = ("import time\n"
        "\n"
        "def fetch_remote_config():\n"
        "    print('hanging', flush=True)\n"
        "    time.sleep(60)  # HANG\n"
        "\n"
        "fetch_remote_config()\n")


@functools.cache
def hung_then_aborted() -> tuple[ExitStatus, str]:
    """A child that hangs in a function of its own, then gets SIGABRT (the startup timeout)."""
    process = subprocess.Popen(
        [PYTHON, str(script(HANG))], env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"hanging\n"
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGABRT
    return ExitStatus(code=None, signal=-process.returncode), stderr.decode("utf-8", "replace")


def exec_failure(argv: list[str]) -> ExecFailure:
    started = start(ChildSpec(argv=tuple(argv), env=dict(os.environ)))
    result = started if isinstance(started, ExecFailure) else started.outcome()
    if isinstance(result, int):  # pragma: no cover - it started after all
        os.kill(result, signal.SIGKILL)
        os.waitpid(result, 0)
        raise AssertionError(f"{argv} started")
    return result


def classify_run(exit: Optional[ExitStatus], tail: str = "", **facts: object) -> tuple[
        Cause, str, int]:
    outcome = classify(Ending(exit=exit, stderr_tail=tail, **facts))  # type: ignore[arg-type]
    return outcome.cause, outcome.summary, outcome.status


# -- the command never ran ---------------------------------------------------------


def test_a_command_that_is_not_there_is_exec_failed_127() -> None:
    failure = exec_failure(["/nonexistent/server", "--port", "8000"])
    outcome = classify(Ending(exit=None, exec_failure=failure, command="/nonexistent/server"))
    assert outcome.cause is Cause.EXEC_FAILED
    assert outcome.status == 127
    assert outcome.summary == "cannot run '/nonexistent/server': No such file or directory"


def test_a_file_that_is_not_executable_is_exec_failed_126(tmp_path: Path) -> None:
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    failure = exec_failure([str(script)])
    outcome = classify(Ending(exit=None, exec_failure=failure, command=str(script)))
    assert (outcome.cause, outcome.status) == (Cause.EXEC_FAILED, 126)
    assert "Permission denied" in outcome.summary


def test_no_exit_and_no_failure_is_still_exec_failed() -> None:
    cause, summary, status = classify_run(None, command="app")
    assert (cause, status) == (Cause.EXEC_FAILED, 126)
    assert summary == "cannot run 'app': unknown error"


def test_an_exec_failure_wins_over_an_exit_status() -> None:
    failure = exec_failure(["/nonexistent/server"])
    outcome = classify(Ending(exit=exited(1), exec_failure=failure, command="x"))
    assert outcome.cause is Cause.EXEC_FAILED


# -- timeouts ----------------------------------------------------------------------


def test_startup_timeout_names_the_frame_from_faulthandlers_dump() -> None:
    status, tail = hung_then_aborted()
    outcome = classify(Ending(exit=status, startup_timed_out=True, stderr_tail=tail))
    assert outcome.cause is Cause.STARTUP_TIMEOUT
    assert outcome.status == 124
    assert outcome.summary.startswith("not ready within the startup timeout (")
    # Line 5 (the sleep), or line 4 when SIGABRT came just as print() returned.
    assert outcome.summary.endswith((":5 in fetch_remote_config", ":4 in fetch_remote_config"))
    assert outcome.fault is not None and outcome.traceback is None
    assert outcome.where is not None and outcome.where.function == "fetch_remote_config"
    assert frame_text(outcome.where) in {f"{script(HANG)}:{line} in fetch_remote_config"
                                         for line in (4, 5)}


def test_startup_timeout_without_a_dump_says_the_summary_it_was_given() -> None:
    cause, summary, status = classify_run(
        killed_by(signal.SIGKILL), "", startup_timed_out=True,
        startup_summary="not ready within 1 s (no epoll registration)")
    assert (cause, summary, status) == (
        Cause.STARTUP_TIMEOUT, "not ready within 1 s (no epoll registration)", 124)


def test_startup_timeout_wins_over_a_stop_timeout() -> None:
    cause, _, status = classify_run(killed_by(signal.SIGKILL), startup_timed_out=True,
                                    stop_timed_out=True)
    assert (cause, status) == (Cause.STARTUP_TIMEOUT, 124)


def test_stop_timeout_names_the_signal_and_the_grace() -> None:
    cause, summary, status = classify_run(
        killed_by(signal.SIGKILL), stop_timed_out=True, stop_signal=signal.SIGINT,
        stop_timeout_s=0.5)
    assert (cause, status) == (Cause.STOP_TIMEOUT, 137)
    assert summary == "did not exit within 0.5 s of SIGINT; its process group was killed"


def test_stop_timeout_wins_over_an_exit_that_looks_clean() -> None:
    cause, summary, status = classify_run(exited(0), stop_timed_out=True, stop_timeout_s=25)
    assert (cause, status) == (Cause.STOP_TIMEOUT, 0)
    assert "of SIGTERM" in summary  # the default stop signal when none was recorded


# -- stops -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["code 0", "the signal", "128 + the signal"])
def test_a_forwarded_stop_then_a_clean_exit_is_stopped(how: str) -> None:
    exit = {"code 0": lambda: exited(0), "the signal": lambda: killed_by(signal.SIGTERM),
            "128 + the signal": lambda: exited(143)}[how]()
    cause, summary, status = classify_run(exit, stop_signal=signal.SIGTERM)
    assert cause is Cause.STOPPED and not cause.is_crash
    assert status == exit.status
    expected = "exit code 0" if how == "code 0" else f"exit status {exit.status}"
    assert summary == f"stopped by SIGTERM as asked ({expected})"


def test_a_forwarded_stop_then_an_error_exit_is_not_a_stop() -> None:
    cause, summary, status = classify_run(exited(1), stop_signal=signal.SIGTERM)
    assert (cause, status) == (Cause.EXIT_CODE, 1)
    assert summary == "exited with code 1"


def test_a_forwarded_stop_then_another_signal_is_not_a_stop() -> None:
    cause, _, status = classify_run(killed_by(signal.SIGKILL), stop_signal=signal.SIGTERM)
    assert (cause, status) == (Cause.KILLED, 137)


@pytest.mark.parametrize("exit_kind", ["SIGINT", "exit 130"])
def test_ctrl_c_on_the_terminal_is_a_stop_without_a_forwarded_signal(exit_kind: str) -> None:
    exit = killed_by(signal.SIGINT) if exit_kind == "SIGINT" else exited(130)
    cause, summary, status = classify_run(exit, terminal_interrupt=True)
    assert (cause, status) == (Cause.STOPPED, 130)
    assert summary == "stopped by Ctrl-C (SIGINT from the terminal)"


def test_a_terminal_child_that_fails_is_not_a_ctrl_c_stop() -> None:
    cause, _, _ = classify_run(exited(1), terminal_interrupt=True)
    assert cause is Cause.EXIT_CODE


def test_sigint_without_the_terminal_and_unasked_is_a_kill() -> None:
    cause, summary, _ = classify_run(killed_by(signal.SIGINT))
    assert cause is Cause.KILLED
    assert summary == "killed by SIGINT, which the supervisor did not send"


# -- signals -----------------------------------------------------------------------


def test_a_segfault_names_the_apps_function_from_faulthandler() -> None:
    status, tail = python(Path(CHILDREN / "segfault.py").read_text())
    outcome = classify(Ending(exit=status, stderr_tail=tail))
    assert outcome.cause is Cause.FATAL_SIGNAL
    assert outcome.status == 139
    assert outcome.summary.startswith("killed by SIGSEGV (Segmentation fault) in ")
    assert outcome.where is not None and outcome.where.function == "read_null_pointer"
    assert outcome.fault is not None and outcome.fault.current_thread


@pytest.mark.parametrize("name", ["SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"])
def test_every_fatal_signal_without_a_dump_is_a_fatal_signal(name: str) -> None:
    signum = getattr(signal, name)
    cause, summary, status = classify_run(killed_by(signum))
    assert (cause, summary, status) == (Cause.FATAL_SIGNAL, f"killed by {name}", 128 + signum)


def test_a_fatal_signal_is_not_the_oom_killer_whatever_the_evidence() -> None:
    cause, _, _ = classify_run(killed_by(signal.SIGSEGV), oom_evidence=OOM_EVIDENCE)
    assert cause is Cause.FATAL_SIGNAL


def test_sigkill_with_oom_evidence_is_oom_killed() -> None:
    cause, summary, status = classify_run(killed_by(signal.SIGKILL), oom_evidence=OOM_EVIDENCE)
    assert (cause, status) == (Cause.OOM_KILLED, 137)
    assert summary == f"killed by the OOM killer ({OOM_EVIDENCE})"


def test_sigkill_without_evidence_is_killed_not_oom() -> None:
    cause, summary, status = classify_run(killed_by(signal.SIGKILL))
    assert (cause, status) == (Cause.KILLED, 137)
    assert "no sign of the OOM killer" in summary


def test_oom_evidence_with_an_exit_code_is_not_oom() -> None:
    cause, _, _ = classify_run(exited(1), oom_evidence=OOM_EVIDENCE)
    assert cause is Cause.EXIT_CODE


def test_a_death_by_a_forwarded_signal_says_so() -> None:
    cause, summary, status = classify_run(killed_by(signal.SIGHUP),
                                          forwarded=frozenset({signal.SIGHUP}))
    assert (cause, status) == (Cause.KILLED, 129)
    assert summary == "killed by SIGHUP, which the supervisor forwarded to it"


def test_a_death_by_a_signal_from_elsewhere_says_so() -> None:
    cause, summary, _ = classify_run(killed_by(signal.SIGUSR1),
                                     forwarded=frozenset({signal.SIGHUP}))
    assert cause is Cause.KILLED
    assert summary == "killed by SIGUSR1, which the supervisor did not send"


# -- exits -------------------------------------------------------------------------


def test_exit_zero_unasked_is_exited() -> None:
    cause, summary, status = classify_run(exited(0))
    assert (cause, status) == (Cause.EXITED, 0)
    assert cause.is_crash
    assert summary == "exited with code 0 although no stop was asked for"


def test_an_uncaught_exception_is_a_python_exception() -> None:
    status, tail = python("def settings():\n    import os\n    return os.environ['NOPE']\n"
                          "settings()\n")
    outcome = classify(Ending(exit=status, stderr_tail=tail))
    assert (outcome.cause, outcome.status) == (Cause.PYTHON_EXCEPTION, 1)
    assert outcome.summary == "KeyError: 'NOPE'"
    assert outcome.traceback is not None
    assert outcome.where is not None and outcome.where.function == "settings"


def test_a_dotted_exception_type_is_found_after_its_module() -> None:
    status, tail = python("import json\njson.loads('{')\n")
    outcome = classify(Ending(exit=status, stderr_tail=tail))
    assert outcome.cause is Cause.PYTHON_EXCEPTION
    assert outcome.summary.startswith("json.decoder.JSONDecodeError: Expecting property name")


def test_a_multi_line_exception_message_is_still_the_cause() -> None:
    status, tail = python(
        "fields = '\\n'.join(f'FIELD_{n}\\n  Field required' for n in range(30))\n"
        "raise ValueError('30 validation errors for Settings\\n' + fields)\n")
    cause, summary, _ = classify_run(status, tail)
    assert cause is Cause.PYTHON_EXCEPTION
    assert summary == "ValueError: 30 validation errors for Settings"


def test_a_traceback_with_a_few_shutdown_lines_after_it_is_the_cause() -> None:
    status, tail = python(
        "import atexit, sys\n"
        f"atexit.register(lambda: print('INFO: shutting down\\n' * {TRAILING_LINES}, "
        "file=sys.stderr))\n"
        "raise RuntimeError('lifespan failed')\n")
    cause, summary, _ = classify_run(status, tail)
    assert (cause, summary) == (Cause.PYTHON_EXCEPTION, "RuntimeError: lifespan failed")


def test_a_traceback_followed_by_the_apps_normal_output_is_not_the_cause() -> None:
    status, tail = python(
        "import atexit, sys\n"
        f"atexit.register(lambda: print('INFO: serving\\n' * {TRAILING_LINES} + 'bye', "
        "file=sys.stderr))\n"
        "raise RuntimeError('lifespan failed')\n")
    cause, summary, status_ = classify_run(status, tail)
    assert (cause, status_) == (Cause.EXIT_CODE, 1)
    assert summary == "exited with code 1: bye"
    assert f"\n{'INFO: serving' + chr(10)}" in tail  # the output really followed it


def test_a_logged_traceback_then_a_plain_exit_takes_the_traceback() -> None:
    # What follows decides, not how it was printed: one line after it, then an exit.
    status, tail = python(
        "import logging, sys\n"
        "try:\n"
        "    raise ConnectionError('redis not reachable')\n"
        "except ConnectionError:\n"
        "    logging.exception('retrying')\n"
        "print('INFO: giving up', file=sys.stderr)\n"
        "sys.exit(3)\n")
    cause, summary, status_ = classify_run(status, tail)
    assert (cause, summary, status_) == (
        Cause.PYTHON_EXCEPTION, "ConnectionError: redis not reachable", 3)


def test_a_traceback_a_server_survived_is_not_the_cause() -> None:
    status, tail = python(
        "import sys\n"
        "print('ERROR:    Exception in ASGI application', file=sys.stderr)\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    import traceback; traceback.print_exc()\n"
        "print('INFO: shutting down', file=sys.stderr)\n"
        "sys.exit(3)\n")
    cause, summary, status_ = classify_run(status, tail)
    assert (cause, summary, status_) == (
        Cause.EXIT_CODE, "exited with code 3: INFO: shutting down", 3)


def test_address_in_use_after_a_traceback_is_port_in_use() -> None:
    status, tail = python(
        "import logging, socket, sys\n"
        "taken = socket.socket(); taken.bind(('127.0.0.1', 0)); taken.listen()\n"
        "port = taken.getsockname()[1]\n"
        "try:\n"
        "    socket.socket().bind(('127.0.0.1', port))\n"
        "except OSError as error:\n"
        "    logging.exception('bind failed')\n"
        "    print(f'ERROR: [Errno {error.errno}] error while attempting to bind on address "
        "(\\'127.0.0.1\\', {port}): address already in use', file=sys.stderr)\n"
        "sys.exit(1)\n")
    cause, summary, status_ = classify_run(status, tail)
    assert (cause, status_) == (Cause.PORT_IN_USE, 1)
    assert summary.startswith("ERROR: [Errno 98] error while attempting to bind on address")


def test_a_real_uvicorn_on_a_taken_port_is_port_in_use() -> None:
    pytest.importorskip("uvicorn")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, tail = run_for_wait_status(
            [PYTHON, "-m", "uvicorn", "web_hello:app", "--app-dir", str(CHILDREN),
             "--host", "127.0.0.1", "--port", str(port)])
    cause, summary, _ = classify_run(ExitStatus.from_wait_status(status), tail)
    assert cause is Cause.PORT_IN_USE
    assert "address already in use" in summary and str(port) in summary


def test_a_plain_error_exit_quotes_the_last_line() -> None:
    status, tail = python("import sys\nprint('config missing: DATABASE_URL', file=sys.stderr)\n"
                          "print('   ', file=sys.stderr)\nsys.exit(4)\n")
    cause, summary, status_ = classify_run(status, tail)
    assert (cause, summary, status_) == (
        Cause.EXIT_CODE, "exited with code 4: config missing: DATABASE_URL", 4)


def test_a_silent_error_exit_says_only_the_code() -> None:
    cause, summary, _ = classify_run(exited(2), "")
    assert (cause, summary) == (Cause.EXIT_CODE, "exited with code 2")
    assert classify(Ending(exit=exited(2))).where is None


def test_every_cause_but_stopped_is_a_crash() -> None:
    assert [cause for cause in Cause if not cause.is_crash] == [Cause.STOPPED]

