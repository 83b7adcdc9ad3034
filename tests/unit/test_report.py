"""The report: its JSON contract (``Report.as_json``), the human block, the file.

The exception part comes from a real crash: a real Python's traceback,
classified by ``causes.classify``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisor.causes import Ending, classify
from supervisor.child import ExitStatus
from supervisor.report import (
    HUMAN_TAIL_LINES,
    Report,
    SignalRecord,
    exception_json,
    human_block,
    where_text,
    write_report_file,
)
from tests.conftest import run_for_wait_status

CONTRACT = (
    "cause", "summary", "phase", "exit_code", "signal", "status", "command", "pid",
    "started_at", "ended_at", "uptime_s", "ready_after_s", "signals_received", "memory",
    "exception", "where", "stderr_tail", "sentry_event_id",
)
# 2023-11-14T22:13:20.250Z
STARTED = 1_700_000_000.25


def report(**changes: Any) -> Report:
    base = Report(
        cause="exit_code", summary="exited with code 3: config missing", phase="running",
        exit_code=3, signal=None, status=3, command=("python", "app.py"), pid=4242,
        started_at=STARTED, ended_at=STARTED + 12.3456, uptime_s=12.3456,
        ready_after_s=1.23456, signals_received=(), exception=None,
        stderr_tail="config missing\n", extra={"handoff": "fd"},
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExitStatus, str, Path]:
    app = tmp_path_factory.mktemp("app") / "app.py"
    app.write_text("import os\n\ndef settings():\n    return os.environ['DATABASE_URL']\n\n"
                   "settings()\n")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    status, tail = run_for_wait_status([sys.executable, str(app)], env=env)
    return ExitStatus.from_wait_status(status), tail, app


# -- as_json -----------------------------------------------------------------------


def test_as_json_has_every_contract_field_and_is_json() -> None:
    data = report().as_json()
    assert set(CONTRACT) <= set(data)
    assert json.loads(json.dumps(data)) == data


def test_as_json_times_are_iso_utc_with_milliseconds_and_durations_rounded() -> None:
    data = report().as_json()
    assert data["started_at"] == "2023-11-14T22:13:20.250Z"
    assert data["ended_at"] == "2023-11-14T22:13:32.595Z"
    assert data["uptime_s"] == 12.346
    assert data["ready_after_s"] == 1.235
    assert report(ready_after_s=None).as_json()["ready_after_s"] is None


def test_as_json_command_and_signals_are_lists() -> None:
    data = report(command=("uvicorn", "app:app"), signals_received=(
        SignalRecord("SIGTERM", 3.5), SignalRecord("SIGINT", 4.0))).as_json()
    assert data["command"] == ["uvicorn", "app:app"]
    assert data["signals_received"] == [{"signal": "SIGTERM", "at_s": 3.5},
                                        {"signal": "SIGINT", "at_s": 4.0}]


def test_as_json_memory_is_always_an_object() -> None:
    assert report().as_json()["memory"] == {
        "peak_rss_bytes": None, "cgroup_peak_bytes": None, "cgroup_limit_bytes": None,
        "oom_kills": None, "samples": [],
    }
    memory = {"peak_rss_bytes": 1 << 20, "samples": [[0.5, 1 << 20]]}
    assert report(memory=memory).as_json()["memory"] == memory


def test_as_json_extra_fields_sit_beside_the_contract() -> None:
    data = report(extra={"handoff": "none", "limits": {"memory_bytes": 1 << 28, "cpus": None}},
                  sentry_event_id="abc").as_json()
    assert data["handoff"] == "none"
    assert data["limits"] == {"memory_bytes": 1 << 28, "cpus": None}
    assert data["sentry_event_id"] == "abc"


def test_exception_json_from_a_real_traceback(crash: tuple[ExitStatus, str, Path]) -> None:
    status, tail, app = crash
    outcome = classify(Ending(exit=status, stderr_tail=tail))
    exception = exception_json(outcome)
    assert exception is not None
    assert exception["type"] == "KeyError"
    assert exception["value"] == "'DATABASE_URL'"
    assert exception["chain"] == []
    app_frames = [f for f in exception["frames"] if f["in_app"]]
    assert [(f["function"], f["lineno"]) for f in app_frames] == [("<module>", 6),
                                                                 ("settings", 4)]
    assert app_frames[-1] == {
        "filename": str(app), "lineno": 4, "function": "settings",
        "context_line": "return os.environ['DATABASE_URL']", "in_app": True, "module": None,
    }
    assert where_text(outcome) == f"{app}:4 in settings"
    data = report(cause=outcome.cause.value, summary=outcome.summary, exit_code=1, status=1,
                  exception=exception, where=where_text(outcome)).as_json()
    assert data["exception"] == exception
    assert data["where"] == f"{app}:4 in settings"


def test_exception_json_is_none_without_a_stack() -> None:
    outcome = classify(Ending(exit=ExitStatus(code=3, signal=None)))
    assert exception_json(outcome) is None
    assert where_text(outcome) is None


# -- the human block ---------------------------------------------------------------


def test_the_block_of_a_crash_after_readiness() -> None:
    lines = human_block(
        report(where="/app/main.py:4 in settings",
               signals_received=(SignalRecord("SIGTERM", 3.5),),
               memory_line="peak 41.2 MiB of 256 MiB"),
        "/var/log/report.json",
    )
    assert lines == [
        "==== the app ended: exit_code ====",
        "summary:  exited with code 3: config missing",
        "where:    /app/main.py:4 in settings",
        "phase:    running (ready after 1.23 s)",
        "status:   exit code 3; supervisor exits 3",
        "uptime:   12.35 s",
        "signals:  SIGTERM at 3.50 s",
        "memory:   peak 41.2 MiB of 256 MiB",
        "last lines of stderr:",
        "  | config missing",
        "report:   /var/log/report.json",
        "============",
    ]


@pytest.mark.parametrize(
    ("changes", "phase_line"),
    [
        ({"ready_after_s": None, "phase": "starting"}, "phase:    starting (never ready)"),
        ({"ready_after_s": None, "extra": {"handoff": "none"}},
         "phase:    running (readiness not tracked without a socket hand-off)"),
    ],
)
def test_the_block_says_when_readiness_was_not_seen(changes: dict[str, Any],
                                                     phase_line: str) -> None:
    assert phase_line in human_block(report(**changes), None)


@pytest.mark.parametrize(
    ("changes", "status_line"),
    [
        ({"signal": "SIGKILL", "exit_code": None, "status": 137},
         "status:   killed by SIGKILL; supervisor exits 137"),
        ({"cause": "exec_failed", "exit_code": None, "status": 127, "pid": None},
         "status:   did not start; supervisor exits 127"),
    ],
)
def test_the_block_says_how_the_app_ended(changes: dict[str, Any], status_line: str) -> None:
    assert status_line in human_block(report(**changes), None)


def test_the_block_repeats_only_the_last_lines_of_the_tail_cut_to_300_chars() -> None:
    tail = "\n".join(f"line {n}" for n in range(20)) + "\n\n   \n" + "x" * 1000 + "\n"
    lines = human_block(report(stderr_tail=tail), None)
    shown = [line for line in lines if line.startswith("  | ")]
    assert len(shown) == HUMAN_TAIL_LINES
    assert shown[0] == f"  | line {20 - HUMAN_TAIL_LINES + 1}"
    assert shown[-1] == "  | " + "x" * 300


def test_the_block_has_no_optional_lines_when_there_is_nothing_to_say() -> None:
    lines = human_block(report(stderr_tail="", where=None), None)
    assert not any(line.startswith(("where:", "signals:", "memory:", "last lines",
                                    "report:", "verdict:")) for line in lines)
    assert lines[-1] == "=" * 12


def test_the_block_says_when_the_report_was_not_written_and_gives_the_verdict() -> None:
    lines = human_block(report(), "/ro/report.json", verdict="the platform would kill it",
                        report_error="Read-only file system")
    assert "report:   not written to /ro/report.json: Read-only file system" in lines
    assert lines[-2:] == ["verdict:  the platform would kill it", "=" * 12]


# -- the file ----------------------------------------------------------------------


def test_the_report_file_is_written_whole_readable_and_in_a_new_directory(
    tmp_path: Path
) -> None:
    path = tmp_path / "volume" / "new" / "report.json"
    data = report().as_json()
    write_report_file(str(path), data)
    assert json.loads(path.read_text()) == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text().endswith("}\n")
    assert os.listdir(path.parent) == ["report.json"]  # the temporary file was renamed


def test_the_report_file_keeps_text_as_text(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_report_file(str(path), report(summary="ValueError: prix invalide: 12 €").as_json())
    assert "12 €" in path.read_text(encoding="utf-8")


def test_a_report_file_that_cannot_be_written_raises_and_leaves_nothing(
    tmp_path: Path
) -> None:
    directory = tmp_path / "reports"
    directory.mkdir()
    (directory / "report.json").mkdir()  # rename onto a directory fails
    with pytest.raises(OSError):
        write_report_file(str(directory / "report.json"), report().as_json())
    assert os.listdir(directory) == ["report.json"]


def test_the_block_shows_where_a_faulthandler_dump_crashed_not_the_module_list(
    tmp_path: Path,
) -> None:
    script = tmp_path / "deep.py"
    script.write_text(
        "import ctypes, faulthandler\n"
        "faulthandler.enable()\n"
        "def innermost():\n"
        "    ctypes.string_at(0)\n"
        "def outer():\n"
        "    innermost()\n"
        "outer()\n"
    )
    import subprocess

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert "most recent call first" in done.stderr
    block = human_block(report(stderr_tail=done.stderr), None)
    start = block.index("where it was (faulthandler, innermost first):")
    shown = block[start + 1:]
    # Innermost first: ctypes' frame, then the app's own, before the outer ones.
    frames = [line for line in shown if "File " in line]
    assert "in innermost" in frames[1] and "in outer" in frames[2], frames
    assert not any("Extension modules" in line for line in block)


def test_a_validation_error_summary_names_the_fields() -> None:
    pytest.importorskip("pydantic", reason="pydantic comes with the test extra (fastapi)")
    import subprocess

    from supervisor.finish import _with_fields

    done = subprocess.run([sys.executable, "-c", (
        "from pydantic import BaseModel\n"
        "class Settings(BaseModel):\n"
        "    database_url: str\n"
        "    api_port: int\n"
        "Settings(api_port='x')\n"
    )], capture_output=True, text=True, timeout=60)
    outcome = classify(Ending(exit=ExitStatus(1, None), stderr_tail=done.stderr))
    assert "validation error" in outcome.summary
    summary = _with_fields(outcome, done.stderr)
    assert summary.endswith("(database_url, api_port)"), summary
