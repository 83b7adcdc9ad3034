"""The command line run for real: every bad value is one line, exit 2, and no child."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import Run


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--stop-timeout", "3x"], "--stop-timeout"),
        (["--stop-timeout=-1"], "--stop-timeout"),
        (["--stop-timeout"], "--stop-timeout"),
        (["--log-format", "xml"], "--log-format"),
        (["--kill-group=maybe"], "--kill-group"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--report-file="], "--report-file"),
    ],
)
def test_bad_flag_is_one_line_exit_2_and_no_child(
    supervise: Callable[..., Run], tmp_path: Path, args: list[str], named: str
) -> None:
    marker = tmp_path / "started"
    run = supervise(*args, "--", "touch", str(marker))
    code, _, err = run.finish()
    assert code == 2
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert named in lines[0]
    assert not marker.exists()


def test_missing_command_is_a_usage_error(supervise: Callable[..., Run]) -> None:
    run = supervise("--kill-group")
    code, _, err = run.finish()
    assert code == 2
    assert "no command given" in err.decode()


def test_bad_environment_value_names_the_variable(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    run = supervise("touch", str(marker), env={"SUPERVISOR_STOP_TIMEOUT": "soon"})
    code, _, err = run.finish()
    assert code == 2
    assert "SUPERVISOR_STOP_TIMEOUT" in err.decode()
    assert not marker.exists()


def test_help_lists_every_option_and_its_variable(supervise: Callable[..., Run]) -> None:
    code, out, _ = supervise("--help").finish()
    assert code == 0
    text = out.decode()
    for flag, env in [("--stop-timeout", "SUPERVISOR_STOP_TIMEOUT"),
                      ("--kill-group", "SUPERVISOR_KILL_GROUP"),
                      ("--relay-stdout", "SUPERVISOR_RELAY_STDOUT"),
                      ("--report-file", "SUPERVISOR_REPORT_FILE"),
                      ("--log-format", "SUPERVISOR_LOG_FORMAT")]:
        assert flag in text and env in text


def test_json_log_format_makes_every_supervisor_line_json(supervise: Callable[..., Run]) -> None:
    # No socket: port 8000 may be taken by another run on this machine.
    code, _, err = supervise("--log-format", "json", "--handoff", "none",
                             "sh", "-c", "exit 7").finish()
    assert code == 7
    records = [json.loads(line) for line in err.decode().splitlines()]
    assert records and all(r["logger"] == "supervisor" for r in records)
    assert any(r.get("cause") == "exit_code" for r in records)


def test_a_bad_dsn_is_refused_without_echoing_its_key(supervise: Callable[..., Run]) -> None:
    dsn = "https://sekret-key-123@sentry.example"  # no project id: malformed
    code, _, err = supervise("--sentry-dsn", dsn, "true").finish()
    assert code == 2
    assert "sekret-key-123" not in err.decode()
    assert "--sentry-dsn" in err.decode()
