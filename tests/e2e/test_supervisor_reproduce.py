"""Reproducing a platform through the real supervisor: limits, env, network, verdicts."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.cgroups import unusable_reason
from tests.conftest import PYTHON, Run, child, free_port, supervisor_lines

CHILDREN = str(Path(child("e2e_cpu_import.py")).parent)


def needs_cgroup() -> None:
    reason = unusable_reason()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup: {reason}")


def uvicorn(module: str, port: int) -> list[str]:
    return [PYTHON, "-m", "uvicorn", "--app-dir", CHILDREN, f"{module}:app",
            "--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture
def config_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1, outside any namespace the child gets."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            with connection:
                connection.sendall(b"config")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_300_mb_at_import_under_a_256m_limit_is_oom_killed(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_cgroup()
    report = tmp_path / "report.json"
    code, _, err = supervise("--memory-limit", "256M", "--report-file", str(report),
                             PYTHON, child("repro_alloc.py"), "300").finish(timeout=60)
    assert code == 137
    data = json.loads(report.read_text())
    assert data["cause"] == "oom_killed"
    assert data["limits"] == {"memory_bytes": 256 << 20, "cpus": None}
    assert data["memory"]["cgroup_limit_bytes"] == 256 << 20
    # The supervisor is not in the child's group: it lived to report.
    assert any("oom_killed" in line for line in supervisor_lines(err))


def test_the_same_app_under_the_limit_runs(supervise: Callable[..., Run]) -> None:
    needs_cgroup()
    code, out, _ = supervise("--memory-limit", "256M", PYTHON, child("repro_alloc.py"),
                             "64").finish(timeout=60)
    assert code == 0
    assert out.decode().strip() == "allocated 64 MiB"


@pytest.mark.slow
def test_app_runner_fails_a_slow_cpu_bound_start_when_the_stub_says_503(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_cgroup()
    report = tmp_path / "report.json"
    run = supervise("--platform", "apprunner", "--health-check", "http:/healthz",
                    "--cpu-limit", "0.25", "--starting-status", "503",
                    "--report-file", str(report), *uvicorn("e2e_cpu_import", free_port()))
    # App Runner gives up after 5 failures 5 s apart: about 20 s.
    code, _, err = run.finish(timeout=90)
    assert code == 124
    data = json.loads(report.read_text())
    assert data["cause"] == "startup_timeout"
    check = data["health_check"]
    assert check["passed"] is False
    assert check["failures"] == 5
    assert check["answered_by"] == "stub"
    assert check["verdict"].startswith("App Runner would have failed this deployment")
    assert "warm_up_models" in check["verdict"]
    assert any(line.startswith("[supervisor] verdict:  App Runner would have failed")
               for line in supervisor_lines(err))


@pytest.mark.slow
def test_app_runner_passes_the_same_start_with_the_default_stub(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_cgroup()
    report = tmp_path / "report.json"
    run = supervise("--platform", "apprunner", "--health-check", "http:/healthz",
                    "--cpu-limit", "0.25", "--report-file", str(report),
                    *uvicorn("e2e_cpu_import", free_port()))
    # The first probe goes out at once; the stub answers 200 while the app imports.
    run.wait_for_stderr("health check passed", timeout=10)
    run.signal(signal.SIGTERM)
    run.finish(timeout=60)
    data = json.loads(report.read_text())
    assert data["health_check"]["passed"] is True
    assert data["health_check"]["answered_by"] == "stub"
    assert "App Runner would have passed this deployment" in data["health_check"]["verdict"]


def test_no_network_leaves_only_loopback_and_fails_the_import_time_fetch(
    supervise: Callable[..., Run], tmp_path: Path, config_server: int
) -> None:
    report = tmp_path / "report.json"
    code, out, _ = supervise("--no-network", PYTHON, child("repro_netns.py")).finish()
    assert code == 0
    seen = json.loads(out)
    assert seen["interfaces"] == ["lo"]
    # Outside the namespace the server answers (the test itself reaches it)...
    with socket.create_connection(("127.0.0.1", config_server), timeout=2) as probe:
        assert probe.recv(10) == b"config"
    # ...inside, the app's import-time fetch fails, and that is the cause.
    code, _, _ = supervise("--no-network", "--report-file", str(report),
                           *uvicorn("e2e_config_fetch", free_port()),
                           env={"CONFIG_PORT": str(config_server)}).finish()
    assert code == 1
    data = json.loads(report.read_text())
    assert data["cause"] == "python_exception"
    assert data["exception"]["type"] == "ConnectionRefusedError"
    assert "e2e_config_fetch.py" in data["where"]
    assert "fetch_remote_config" in data["where"]


def test_env_file_with_clean_env_gives_the_files_variables_and_what_an_image_keeps(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text(
        "# production settings\n"
        "export DATABASE_URL=postgres://db/app\n"
        "GREETING=\"hello world\"  \n"
        "\n"
        "EMPTY=\n"
    )
    laptop = {"LEAKED_FROM_LAPTOP": "1", "HOME": "/home/dev", "LANG": "C.UTF-8",
              "VIRTUAL_ENV": "/opt/venv", "PATH": os.environ["PATH"]}
    code, out, _ = supervise("--env-file", str(env_file), "--clean-env", PYTHON, "-c",
                             "import json, os; print(json.dumps(dict(os.environ)))",
                             env=laptop).finish()
    assert code == 0
    seen = json.loads(out)
    # The supervisor's own safety defaults for Python children stay.
    for name in ("PYTHONUNBUFFERED", "PYTHONFAULTHANDLER", "PYTHON_COLORS"):
        seen.pop(name)
    seen.pop("PYTHONPROFILEIMPORTTIME", None)  # the start-up forensics' own
    # The caller's locale variables are kept, as an image sets them.
    for name in [n for n in seen if n.startswith("LC_")]:
        seen.pop(name)
    assert seen == {
        "DATABASE_URL": "postgres://db/app",
        "GREETING": "hello world",
        "EMPTY": "",
        "PATH": os.environ["PATH"],
        "HOME": "/home/dev",
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": "/opt/venv",
    }


def test_an_empty_pythonunbuffered_in_the_env_file_still_loses_no_print(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text("PYTHONUNBUFFERED=\nPYTHONFAULTHANDLER=\n")
    # Printed to a pipe, then the process ends without flushing its buffers.
    code, out, _ = supervise("--env-file", str(env_file), PYTHON, "-c",
                             "import os; print('before the end'); os._exit(3)").finish()
    assert code == 3
    assert out.decode().startswith("before the end\n")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--memory-limit", "0"], "--memory-limit"),
        (["--cpu-limit", "abc"], "--cpu-limit"),
        (["--platform", "nope"], "--platform"),
        (["--health-check", "udp:/x"], "--health-check"),
    ],
)
def test_bad_reproduce_values_are_usage_errors(
    supervise: Callable[..., Run], tmp_path: Path, args: list[str], named: str
) -> None:
    marker = tmp_path / "started"
    code, _, err = supervise(*args, "touch", str(marker)).finish()
    assert code == 2
    lines = err.decode().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert not marker.exists()


def test_a_malformed_env_file_names_the_file_and_line(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("GOOD=1\nthis line is wrong\n")
    marker = tmp_path / "started"
    code, _, err = supervise("--env-file", str(env_file), "touch", str(marker)).finish()
    assert code == 2
    line = err.decode().strip()
    assert f"{env_file} line 2" in line
    assert not marker.exists()
    assert os.path.exists(env_file)
