"""Start-up forensics through the real supervisor: where a silent death happened, what
the start-up spent, and a run that completes when the kernel refuses ptrace."""

from __future__ import annotations

import json
import shutil
import signal
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from supervisor.stacks import find_py_spy
from tests.cgroups import unusable_reason
from tests.conftest import PYTHON, Run, child, free_port, supervisor_lines

MIB = 1 << 20
_UVICORN_SCRIPT = Path(PYTHON).parent / "uvicorn"
UVICORN = [str(_UVICORN_SCRIPT)] if _UVICORN_SCRIPT.exists() else [PYTHON, "-m", "uvicorn"]
NO_PTRACE = ("setpriv", "--bounding-set=-sys_ptrace", "--")


def needs_py_spy() -> None:
    import os

    if find_py_spy(os.environ.get("PATH")) is None:
        pytest.skip("py-spy is not installed")


def write_app(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def read_report(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def assert_no_import_lines(run: Run) -> None:
    # The supervisor asked for them; they are its own, never the user's log.
    assert b"import time:" not in run.stderr
    assert b"import time:" not in run.stdout


def test_a_silent_exit_inside_a_nested_import_names_the_module(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_py_spy()
    write_app(tmp_path, {
        "app/__init__.py": "",
        "app/main.py": "from app.integrations import native\napp = object()\n",
        "app/integrations/__init__.py": "import json\n",
        "app/integrations/native.py": """\
            # A native layer that sets itself up slowly, then gives up without a word.
            import decimal, os, time

            time.sleep(3)
            os._exit(1)
        """,
    })
    report = tmp_path / "report.json"
    run = supervise("--port", str(free_port()), "--report-file", str(report),
                    PYTHON, "-c", "import app.main")
    code, _, _ = run.finish(timeout=60)
    assert code == 1
    data = read_report(report)
    assert data["cause"] == "exit_code"
    where = data["where"]
    assert where.startswith(f"{tmp_path}/app/integrations/native.py:4 in <module>"), where
    assert "being imported" in where and "s before the end" in where
    stack = data["last_stack"]
    files = [frame["filename"] for frame in stack["frames"]]
    assert f"{tmp_path}/app/main.py" in files
    assert 0 <= stack["age_s"] <= data["uptime_s"]
    startup = data["startup"]
    assert startup["last_import"]["module"] == "decimal"
    assert startup["open_imports"] >= 1  # app.main never completed
    assert startup["stack_samples"] >= 1
    text = run.text
    assert "where:    " + where in text
    assert "start-up: exec 0.00 s -> interpreter" in text
    assert "last import completed: decimal" in text
    assert_no_import_lines(run)


def test_an_oom_kill_in_a_function_that_allocates_in_steps_names_the_function(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_py_spy()
    reason = unusable_reason()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup: {reason}")
    write_app(tmp_path, {
        "app.py": """\
            import time

            def load_embeddings():
                chunks = []
                while True:
                    chunks.append(b"x" * (4 << 20))
                    time.sleep(0.1)

            load_embeddings()
        """,
    })
    report = tmp_path / "report.json"
    # A real memory cgroup of the supervisor's own making, as --memory-limit does.
    run = supervise("--port", str(free_port()), "--report-file", str(report),
                    "--memory-limit", "160M",
                    PYTHON, str(tmp_path / "app.py"))
    code, _, _ = run.finish(timeout=90)
    assert code == 137
    data = read_report(report)
    assert data["cause"] == "oom_killed", data["summary"]
    functions = [frame["function"] for frame in data["last_stack"]["frames"]]
    assert functions[-1] == "load_embeddings", functions
    where = data["where"]
    assert where.startswith(f"{tmp_path}/app.py:") and " in load_embeddings (" in where, where
    assert "s before the kill" in data["where"]
    assert_no_import_lines(run)


def test_a_healthy_app_with_one_slow_import_names_it_the_slowest(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    write_app(tmp_path, {
        "app/__init__.py": "",
        "app/main.py": """\
            import app.warm_cache

            async def app(scope, receive, send):
                if scope["type"] == "lifespan":
                    while True:
                        message = await receive()
                        if message["type"] == "lifespan.startup":
                            await send({"type": "lifespan.startup.complete"})
                        elif message["type"] == "lifespan.shutdown":
                            await send({"type": "lifespan.shutdown.complete"})
                            return
        """,
        "app/warm_cache.py": "import time\ntime.sleep(2)\n",
    })
    report = tmp_path / "report.json"
    port = free_port()
    run = supervise("--report-file", str(report), "--", *UVICORN, "app.main:app",
                    "--app-dir", str(tmp_path), "--host", "127.0.0.1", "--port", str(port))
    run.wait_for_stderr("start-up: ", timeout=60)
    run.signal(signal.SIGTERM)
    code, _, _ = run.finish(timeout=60)
    assert code in (0, 143)
    data = read_report(report)
    assert data["cause"] == "stopped"
    startup = data["startup"]
    slowest = startup["slowest_imports"][0]
    assert slowest["module"] == "app.warm_cache"
    assert slowest["cumulative_s"] >= 2.0
    assert startup["import_total_s"] >= 2.0
    assert set(startup["milestones"]) >= {"lifespan_start", "lifespan_done"}
    # One line at readiness says how the start went.
    (line,) = [line for line in supervisor_lines(run.stderr) if "start-up: " in line]
    assert "slowest imports: app.warm_cache 2." in line
    assert "-> ready " in line
    assert_no_import_lines(run)
    # uvicorn's own lines still reach the log, in full.
    assert b"Application startup complete." in run.stderr


def test_ptrace_denied_completes_with_one_clear_line(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_py_spy()
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_SYS_PTRACE")
    report = tmp_path / "report.json"
    # No CAP_SYS_PTRACE (Docker's default) and an app that made itself non-dumpable:
    # the kernel refuses py-spy's reads, as Yama does for a sibling in a container.
    run = supervise("--port", str(free_port()), "--report-file", str(report),
                    PYTHON, child("forensics_undumpable.py"),
                    "2.5", "3", prefix=NO_PTRACE)
    code, _, _ = run.finish(timeout=60)
    assert code == 3
    lines = [line for line in supervisor_lines(run.stderr) if "stack sampling" in line]
    assert len(lines) == 1, lines
    assert "stack sampling off: the kernel does not let py-spy read pid" in lines[0]
    assert "--cap-add SYS_PTRACE" in lines[0]
    data = read_report(report)
    assert data["cause"] == "exit_code"
    assert data.get("last_stack") is None and data["where"] is None
    assert data["startup"]["stack_sampling"].startswith("off: the kernel does not let")
    assert_no_import_lines(run)


def test_a_profile_the_user_asked_for_stays_in_the_output(
    supervise: Callable[..., Run],
) -> None:
    run = supervise("--port", str(free_port()), PYTHON, "-c", "import decimal",
                    env={"PYTHONPROFILEIMPORTTIME": "1"})
    code, _, err = run.finish(timeout=60)
    assert code == 0
    assert b"import time: self [us] | cumulative | imported package" in err
    assert b"|   decimal" in err or b"| decimal" in err


def test_a_program_that_is_not_python_gets_no_profile(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--port", str(free_port()), "--report-file", str(report), "sh", "-c",
                    'echo "PYTHONPROFILEIMPORTTIME=${PYTHONPROFILEIMPORTTIME-unset}" >&2; exit 4')
    code, _, err = run.finish(timeout=60)
    assert code == 4
    assert b"PYTHONPROFILEIMPORTTIME=unset" in err
    assert "startup" not in read_report(report)
