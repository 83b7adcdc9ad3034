"""What a run imposed and what it ran in: the conditions and environment sections."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from supervisor.cli import parse_args
from supervisor.conditions import (
    COMPARE_KEY_ENV,
    condition_lines,
    conditions,
    environment_section,
    fingerprint,
    interpreter,
    key_id,
)

MIB = 1024 * 1024
LAPTOP = {"PATH": "/venv/bin:/usr/bin", "HOME": "/home/dev", "AWS_PROFILE": "dev",
          "GITHUB_TOKEN": "ghp_secret", "SUPERVISOR_CLEAN_ENV": "1", "LC_ALL": "C.UTF-8"}


def test_nothing_imposed_says_nothing() -> None:
    config = parse_args(["true"], {})
    section = conditions(config, LAPTOP, LAPTOP)
    assert section["platform"] is None and section["network"] == "open"
    assert section["limits"] == {"memory_bytes": None, "cpus": None}
    assert condition_lines(section) == []


def test_a_platform_with_an_env_file_and_a_clean_environment() -> None:
    config = parse_args(["--platform", "apprunner", "--health-check", "http:/healthz",
                         "--memory-limit", "512M", "--env-file", "prod.env", "--clean-env",
                         "--no-network", "uvicorn", "app:app"], {})
    child = {"PATH": "/venv/bin:/usr/bin", "HOME": "/home/dev", "LC_ALL": "C.UTF-8",
             "DATABASE_URL": "postgres://db", "MODE": "prod"}
    section = conditions(config, LAPTOP, child, {"DATABASE_URL": "x", "MODE": "prod"})
    assert section["platform"] == {
        "name": "apprunner", "title": "App Runner",
        "source": "https://docs.aws.amazon.com/apprunner/latest/api/"
                  "API_HealthCheckConfiguration.html",
        "from_preset": ["cpu_limit"],
    }
    assert section["limits"] == {"memory_bytes": 512 * MIB, "cpus": 1.0}
    assert section["network"] == "cut"
    assert section["env_file"] == {"path": "prod.env", "variables": 2}
    assert section["clean_env"] == {"kept": ["HOME", "LC_ALL", "PATH"],
                                    "removed": ["AWS_PROFILE", "GITHUB_TOKEN"]}
    assert section["health_check"] == (
        "http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5")
    text = json.dumps(section)
    assert "ghp_secret" not in text and "postgres://db" not in text  # names, never values
    assert condition_lines(section) == [
        "reproducing App Runner (--platform apprunner): CPU from its documented defaults "
        "(https://docs.aws.amazon.com/apprunner/latest/api/API_HealthCheckConfiguration.html)",
        "limits: memory 512 MiB (--memory-limit), CPU 1 (preset)",
        "network: cut (--no-network): the child has loopback only",
        "env file: prod.env (2 variables)",
        "--clean-env: kept HOME, LC_ALL, PATH from this environment, as an image keeps them; "
        "removed 2 variables: AWS_PROFILE, GITHUB_TOKEN",
        "health check: http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5",
    ]


def test_the_presets_own_check_and_deadline_are_named_as_such() -> None:
    config = parse_args(["--platform", "heroku", "true"], {})
    lines = condition_lines(conditions(config, {}, {}))
    assert lines[0].startswith("reproducing Heroku (--platform heroku): memory, start-up deadline, "
                               "stop grace, health check from its documented defaults")
    assert "limits: memory 512 MiB (preset)" in lines
    assert lines[-2] == ("health check: tcp,interval=1,timeout=1,healthy=1,unhealthy=1,grace=59 "
                         "(Heroku's)")
    assert lines[-1] == "start-up deadline: 60 s (preset)"


def test_a_long_list_of_removed_names_is_cut() -> None:
    caller = {f"VAR_{i:02d}": "x" for i in range(20)}
    config = parse_args(["--clean-env", "true"], {})
    (line,) = [ln for ln in condition_lines(conditions(config, caller, {})) if "clean" in ln]
    assert line.endswith("removed 20 variables: VAR_00, VAR_01, VAR_02, VAR_03, VAR_04, "
                         "VAR_05, VAR_06, VAR_07, VAR_08, VAR_09, VAR_10, VAR_11 and 8 more")


def test_fingerprints_tell_values_apart_and_reveal_nothing() -> None:
    key = b"shared by both runs"
    assert fingerprint("s3cret", key) == fingerprint("s3cret", key)
    assert fingerprint("s3cret", key) != fingerprint("s3cret!", key)
    assert fingerprint("s3cret", b"another key") != fingerprint("s3cret", key)
    assert "s3cret" not in json.dumps(fingerprint("s3cret", key))
    assert fingerprint("s3cret", None) == {"length": 6, "empty": False}
    assert fingerprint("", None) == {"length": 0, "empty": True}
    assert key_id(key) == key_id(key) != key_id(b"another key")
    assert key_id(None) is None


def test_the_environment_section_names_variables_and_never_the_key() -> None:
    caller = {COMPARE_KEY_ENV: "k", "PATH": os.environ["PATH"]}
    child = {"PATH": os.environ["PATH"], "TOKEN": "abc", COMPARE_KEY_ENV: "k"}
    section = environment_section(child, caller, [sys.executable, "-c", "pass"], 1)
    assert set(section["variables"]) == {"PATH", "TOKEN"}
    assert set(section["variables"]["TOKEN"]) == {"hmac"}
    assert section["key_id"] == key_id(b"k")
    assert section["interpreter"] == {"path": sys.executable,
                                      "version": sys.version.split()[0]}
    assert section["kernel"] == os.uname().release
    assert section["cgroup"]["version"] == 1
    assert "abc" not in json.dumps(section)


def test_the_interpreter_of_a_console_script_is_its_shebangs(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.2\n")
    python = venv / "bin" / "python"
    python.symlink_to("/nonexistent/python3.11")
    script = venv / "bin" / "uvicorn"
    script.write_text(f"#!{python}\nimport sys\n")
    script.chmod(0o755)
    assert interpreter(["uvicorn", "app:app"], str(venv / "bin")) == {
        "path": str(python), "version": "3.11.2"}
    env_script = tmp_path / "tool"
    env_script.write_text("#!/usr/bin/env python3\n")
    env_script.chmod(0o755)
    found = interpreter([str(env_script)], os.environ["PATH"])
    assert found is not None and found["path"].endswith("python3")
    shell = tmp_path / "run.sh"
    shell.write_text("#!/bin/sh\n")
    shell.chmod(0o755)
    assert interpreter([str(shell)], None) is None
    assert interpreter(["no-such-command"], "/nowhere") is None
