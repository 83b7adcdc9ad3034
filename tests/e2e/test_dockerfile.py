"""Dockerfile.example's recipes, checked without an engine.

No registry is reachable here, so the example's FROM images cannot be pulled;
tests/e2e/test_docker.py builds its Debian recipe (tests/docker/Dockerfile,
FROM a local Debian base and from a wheelhouse) in a real dockerd instead.
These tests keep the two in step.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from supervisor.handoff import HandoffMode, plan_handoff
from tests.conftest import ROOT

TESTED = ROOT / "tests" / "docker" / "Dockerfile"


def instructions(path: Path = ROOT / "Dockerfile.example") -> list[tuple[str, str]]:
    found = []
    logical = ""
    for line in path.read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = logical.strip().partition(" ")
            found.append((keyword.upper(), rest))
            logical = ""
    return found


def stage(name: str) -> list[tuple[str, str]]:
    """The instructions of one stage of Dockerfile.example (``FROM ... AS name``)."""
    found: list[tuple[str, str]] = []
    current = None
    for keyword, rest in instructions():
        if keyword == "FROM":
            current = rest.split()[-1]
        elif current == name:
            found.append((keyword, rest))
    assert found, f"no stage {name} in Dockerfile.example"
    return found


def exec_form(name: str, among: list[tuple[str, str]] | None = None) -> list[list[str]]:
    among = instructions() if among is None else among
    forms = [json.loads(rest) for keyword, rest in among if keyword == name]
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


def test_the_tested_dockerfile_is_the_debian_recipe() -> None:
    example, tested = stage("debian"), instructions(TESTED)
    assert exec_form("ENTRYPOINT", tested) == exec_form("ENTRYPOINT", example)
    for keyword in ("ENV", "WORKDIR"):
        assert [rest for k, rest in tested if k == keyword] == [
            rest for k, rest in example if k == keyword]
    runs = " ".join(rest for keyword, rest in tested if keyword == "RUN")
    for venv in ("/opt/supervisor", "/opt/app"):
        assert f"python3 -m venv {venv}" in runs
    # Built with no network: everything comes from the wheelhouse.
    assert runs.count("pip install --no-cache-dir --no-index --find-links /build/wheels") == 2


def test_the_tested_cmd_is_a_uvicorn_command_that_gets_the_socket_handed_over() -> None:
    (command,) = exec_form("CMD", instructions(TESTED))
    plan = plan_handoff("auto", command, None, None, None, {})
    assert plan.mode is HandoffMode.FD
    assert plan.argv[-2:] == ("--fd", "3")
