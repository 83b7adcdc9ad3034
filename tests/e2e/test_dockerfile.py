"""Dockerfile.example cannot be built here (no Docker engine): check what can be checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from supervisor.handoff import HandoffMode, plan_handoff
from tests.conftest import ROOT


def instructions() -> list[tuple[str, str]]:
    found = []
    logical = ""
    for line in (ROOT / "Dockerfile.example").read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = logical.strip().partition(" ")
            found.append((keyword.upper(), rest))
            logical = ""
    return found


def exec_form(name: str) -> list[list[str]]:
    forms = [json.loads(rest) for keyword, rest in instructions() if keyword == name]
    assert forms and all(isinstance(form, list) for form in forms), f"{name} must use exec form"
    return forms


def test_entrypoints_are_the_supervisor_in_exec_form_with_double_dash() -> None:
    for entrypoint in exec_form("ENTRYPOINT"):
        assert entrypoint[0].endswith("supervisor")
        assert entrypoint[1:] == ["--"]


def test_the_isolated_venv_is_where_its_entrypoint_points() -> None:
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert "python -m venv /opt/supervisor" in runs
    assert "/opt/supervisor/bin/pip install" in runs
    assert ["/opt/supervisor/bin/supervisor", "--"] in exec_form("ENTRYPOINT")


def test_the_cmd_is_a_uvicorn_command_that_gets_the_socket_handed_over() -> None:
    for command in exec_form("CMD"):
        plan = plan_handoff("auto", command, None, None, None, {})
        assert plan.mode is HandoffMode.FD
        assert plan.stub_address == ("0.0.0.0", 8000)
        assert plan.argv[-2:] == ("--fd", "3")


def test_the_commands_it_runs_exist_and_accept_their_arguments() -> None:
    # The console script the image's ENTRYPOINT names, as pip installs it.
    supervisor = shutil.which("supervisor")
    assert supervisor is not None, "pip install . provides the supervisor script"
    assert subprocess.run([supervisor, "--version"], capture_output=True).returncode == 0
    # The venv recipe works with this Python (the image's is python:3.12-slim).
    assert subprocess.run([sys.executable, "-m", "venv", "--help"],
                          capture_output=True).returncode == 0
    uvicorn = subprocess.run([sys.executable, "-m", "uvicorn", "--help"],
                             capture_output=True, text=True)
    assert uvicorn.returncode == 0
    for option in ("--host", "--port", "--fd"):
        assert option in uvicorn.stdout
