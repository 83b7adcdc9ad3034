"""``supervisor compare``: how two reports differ, without a single value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisor.cli import HelpRequested, parse_args
from supervisor.compare import compare
from supervisor.conditions import environment_section
from supervisor.errors import UsageError

MIB = 1024 * 1024


def report(child_env: dict[str, str], key: str = "", **fields: Any) -> dict[str, Any]:
    caller = {"SUPERVISOR_COMPARE_KEY": key} if key else {}
    data: dict[str, Any] = {
        "cause": "stopped", "exit_code": None, "signal": "SIGTERM", "status": 143,
        "phase": "running", "ready_after_s": 1.2, "uptime_s": 30.0,
        "command": ["uvicorn", "app:app", "--fd", "3"],
        "memory": {"peak_rss_bytes": 60 * MIB, "cgroup_limit_bytes": None, "cgroup_version": 1},
        "conditions": {"platform": None, "limits": {"memory_bytes": None, "cpus": None},
                       "network": "open", "env_file": None, "clean_env": None,
                       "health_check": None},
        "environment": environment_section(child_env, caller, ["true"], 1),
    }
    data.update(fields)
    return data


LAPTOP = {"PATH": "/usr/bin", "HOME": "/home/dev", "AWS_PROFILE": "dev",
          "DATABASE_URL": "postgres://laptop/app", "LOG_LEVEL": "debug", "MODE": "prod"}
PLATFORM = {"PATH": "/usr/bin", "DATABASE_URL": "postgres://prod-db/app", "LOG_LEVEL": "info",
            "MODE": "prod", "SENTRY_DSN": "https://k@o.ingest.sentry.io/1"}


def test_two_runs_differ_by_their_end_limit_and_variables() -> None:
    a = report(LAPTOP)
    b = report(PLATFORM, cause="oom_killed", signal="SIGKILL", status=137, phase="starting",
               ready_after_s=None, conditions={
                   "platform": {"title": "App Runner"},
                   "limits": {"memory_bytes": 512 * MIB, "cpus": 0.25}, "network": "cut",
                   "env_file": {"path": "prod.env", "variables": 4}, "clean_env": {},
                   "health_check": "http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5"})
    lines = compare(a, b)
    rows = {line[2:].split("  ")[0].strip(): line for line in lines[1:] if line[1] == " "}
    for label in ("cause", "end", "phase", "ready after", "platform", "memory limit",
                  "CPU limit", "network", "health check", "env file"):
        assert rows[label].startswith("*"), rows[label]
    for label in ("command", "cgroup", "kernel", "memory peak"):
        assert rows[label].startswith(" "), rows[label]
    assert "512 MiB" in rows["memory limit"] and "none" in rows["memory limit"]
    assert "prod.env: 4 variables (--clean-env)" in rows["env file"]
    assert "variables only in A (2): AWS_PROFILE, HOME" in lines
    assert "variables only in B (1): SENTRY_DSN" in lines
    # Without a key only lengths: LOG_LEVEL's differ (debug/info), DATABASE_URL's too.
    assert "variables whose values differ (2): DATABASE_URL, LOG_LEVEL" in lines
    assert lines[-1].startswith("values of 2 variables could only be compared by length")
    text = "\n".join(lines)
    for value in list(LAPTOP.values()) + list(PLATFORM.values()):
        if value not in ("/usr/bin", "prod"):
            assert value not in text


def test_with_the_same_key_values_of_the_same_length_are_told_apart() -> None:
    a = report({"TOKEN": "aaaa", "SAME": "x"}, key="k")
    b = report({"TOKEN": "bbbb", "SAME": "x"}, key="k")
    lines = compare(a, b)
    assert "variables whose values differ (1): TOKEN" in lines
    assert not any("could only be compared" in line for line in lines)
    assert "aaaa" not in json.dumps(a) and "bbbb" not in json.dumps(b)
    other = report({"TOKEN": "aaaa", "SAME": "x"}, key="another")
    assert any("could only be compared" in line for line in compare(a, other))


def test_reports_without_the_new_sections_still_compare() -> None:
    old = {"cause": "exit_code", "exit_code": 1, "command": ["app"], "phase": "starting"}
    lines = compare(old, old)
    assert lines[-1] == "variables: not compared (a report has no environment section)"
    assert all(not line.startswith("*") for line in lines)


def test_the_subcommand_prints_and_names_bad_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(report(LAPTOP)))
    b.write_text(json.dumps(report(PLATFORM)))
    with pytest.raises(HelpRequested) as shown:
        parse_args(["compare", str(a), str(b)], {})
    assert shown.value.text.startswith(f"comparing A: {a} with B: {b}\n")
    (tmp_path / "bad.json").write_text("{not json")
    for args, words in ((["compare", str(a)], "two report files"),
                        (["compare", str(a), str(tmp_path / "none.json")], "no such file"),
                        (["compare", str(a), str(tmp_path / "bad.json")], "not a report")):
        with pytest.raises(UsageError, match=words):
            parse_args(args, {})
    # After --, "compare" is a program to run.
    assert parse_args(["--", "compare", "x"], {}).command == ("compare", "x")
