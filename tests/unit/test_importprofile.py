"""The import profile, over what a real interpreter prints with ``-X importtime``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.importprofile import (
    ImportProfile,
    ImportRecord,
    build_tree,
    is_import_line,
    is_python_command,
    is_python_name,
    is_python_script,
    parse_line,
    wants_import_profile,
    waterfall,
)

PYTHON = sys.executable


def importtime_lines(tmp_path: Path, code: str, files: dict[str, str]) -> list[bytes]:
    """The ``import time:`` lines a real interpreter prints for ``code``."""
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPROFILEIMPORTTIME": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                            timeout=60)
    lines = result.stderr.splitlines()
    assert lines[0].startswith(b"import time: self [us]"), lines[:2]
    return lines


APP = {
    "app/__init__.py": "",
    "app/main.py": "import app.db\nimport app.slow\nimport json\n",
    "app/db.py": "import app.models\n",
    "app/models.py": "import decimal\n",
    "app/slow.py": "import time\ntime.sleep(0.3)\n",
}


def profile_of(lines: list[bytes]) -> ImportProfile:
    profile = ImportProfile()
    for number, line in enumerate(lines):
        assert is_import_line(line), line
        profile.add_line(line, number / 100)
    return profile


def test_every_real_line_parses_and_the_header_is_recognised(tmp_path: Path) -> None:
    lines = importtime_lines(tmp_path, "import app.main", APP)
    assert parse_line(lines[0]) is None
    parsed = [parse_line(line) for line in lines[1:]]
    assert all(p is not None for p in parsed)
    names = [p[3] for p in parsed if p is not None]
    assert {"app.main", "app.db", "app.models", "app.slow", "decimal", "site"} <= set(names)
    for p in parsed:
        assert p is not None and p[0] >= 0 and p[1] >= p[0] and p[2] >= 0


def test_the_tree_nests_what_each_module_imported(tmp_path: Path) -> None:
    profile = profile_of(importtime_lines(tmp_path, "import app.main", APP))
    roots = profile.tree()
    (main,) = [n for n in roots if n.record.name == "app.main"]
    assert main.record.depth == 0
    child_names = [c.record.name for c in main.children]
    # In the order they completed; `app` itself was imported first, as the parent package.
    assert child_names.index("app.db") < child_names.index("app.slow")
    (db,) = [c for c in main.children if c.record.name == "app.db"]
    assert [c.record.name for c in db.children] == ["app.models"]
    (models,) = db.children
    assert "decimal" in [c.record.name for c in models.children]
    assert all(c.record.depth == 3 for c in models.children)


def test_the_slow_import_leads_the_summary(tmp_path: Path) -> None:
    profile = profile_of(importtime_lines(tmp_path, "import app.main", APP))
    startup = profile.startup()
    names = [r.name for r in startup.slowest]
    # site may be as slow on a loaded machine; nothing of the app's is slower.
    assert names.index("app.main") < names.index("app.slow") < 3
    slow = startup.slowest[names.index("app.slow")]
    assert slow.cumulative_us >= 300_000
    assert len(startup.slowest) == 10
    assert startup.count == profile.count == len(startup.lines)
    assert startup.last is not None and startup.last.name == "app.main"
    assert startup.open_depth == 0
    assert startup.interpreter_ready_s is not None
    # The total counts each import once: the top-level ones hold the others.
    top = sum(r.cumulative_us for r in startup.slowest if r.depth == 0)
    assert startup.total_us >= top
    data = startup.as_json()
    assert data["slowest_imports"][names.index("app.slow")]["module"] == "app.slow"
    assert data["last_import"]["module"] == "app.main"
    assert data["python_processes"] == 1


def test_an_exit_inside_a_nested_import_leaves_imports_open(tmp_path: Path) -> None:
    files = {
        "app/__init__.py": "",
        "app/main.py": "import app.native\n",
        "app/native.py": "import decimal, os\nos._exit(1)\n",
    }
    startup = profile_of(importtime_lines(tmp_path, "import app.main", files)).startup()
    # Neither app.main nor app.native completed: the last line is a child of theirs.
    assert startup.last is not None and startup.last.name == "decimal"
    assert startup.open_depth == 2
    assert startup.last.depth == 2


def test_import_module_leaves_the_top_module_out_but_times_its_imports(tmp_path: Path) -> None:
    # uvicorn loads the app with importlib.import_module: no line for the app module itself.
    lines = importtime_lines(tmp_path, "import importlib; importlib.import_module('app.main')", APP)
    startup = profile_of(lines).startup()
    names = [r.name for r in startup.slowest]
    assert "app.main" not in names
    assert names.index("app.slow") < 2


def test_a_second_interpreter_is_counted_not_mixed_in(tmp_path: Path) -> None:
    first = importtime_lines(tmp_path, "import app.main", APP)
    second = importtime_lines(tmp_path, "import json", {})
    profile = profile_of(first + second)
    startup = profile.startup()
    assert startup.processes == 2
    assert startup.count == len(first) + len(second) - 2
    assert len(startup.lines) == len(first) - 1


def test_lines_that_only_look_alike_are_not_import_lines() -> None:
    assert not is_import_line(b"import time: 3 s spent")
    assert not is_import_line(b"import time:  12 | 13 | " + b"x" * 2000)
    assert not is_import_line(b" import time:    12 |    13 | json")
    assert not is_import_line(b"import time: a | b | json")
    assert is_import_line(b"import time:        12 |         13 |   json")
    with pytest.raises(ValueError):
        parse_line("import time: 1 | 2 |")


def test_tree_of_records_adopts_every_deeper_pending_record() -> None:
    def rec(name: str, depth: int) -> ImportRecord:
        return ImportRecord(name, 1, 1, depth, 0.0)

    roots, open_depth = build_tree([rec("c", 2), rec("b", 1), rec("d", 1), rec("a", 0)])
    (a,) = roots
    assert [n.record.name for n in a.children] == ["b", "d"]
    assert [n.record.name for n in a.children[0].children] == ["c"]
    assert open_depth == 0


def test_waterfall_names_the_steps_and_the_budget() -> None:
    startup = {
        "import_count": 812, "import_total_s": 3.2, "interpreter_ready_s": 0.04,
        "slowest_imports": [{"module": f"m{i}", "cumulative_s": 1.0 / (i + 1)} for i in range(10)],
        "last_import": {"module": "m9", "at_s": 3.1}, "open_imports": 0,
        "milestones": {"lifespan_start": 3.3, "lifespan_done": 12.0},
    }
    lines = waterfall(startup, 12.4, budget=("App Runner", 20.0))
    assert lines[0] == ("exec 0.00 s -> interpreter 0.04 s -> imports 3.20 s (812) -> "
                        "app loaded 3.30 s -> lifespan done 12.00 s -> ready 12.40 s")
    assert lines[1].startswith("slowest imports: m0 1.00 s, m1 0.50 s")
    assert lines[1].count(" s,") == 4
    assert lines[2] == "ready at 12.4 s of App Runner's 20 s (62%)"
    crashed = waterfall({**startup, "open_imports": 2}, None, ended_s=3.2)
    assert crashed[0].endswith("ended 3.20 s, never ready")
    assert crashed[2] == "last import completed: m9 at 3.10 s, 2 import(s) still running"
    assert waterfall(None, 1.0) == []


# ------------------------------------------------------ which child is Python


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_the_interpreter_is_python_by_name() -> None:
    for name in ("python", "python3", "python3.11", "/usr/bin/python3.12", "pypy3", "python3d"):
        assert is_python_name(name), name
    for name in ("python3-config", "pythonista", "uvicorn", "sh", "py-spy"):
        assert not is_python_name(name), name
    assert is_python_command([PYTHON, "-m", "uvicorn"], None)


def test_console_scripts_are_python_by_their_shebang(tmp_path: Path) -> None:
    uvicorn = shutil.which("uvicorn")
    assert uvicorn is not None
    assert is_python_command(["uvicorn", "app:app"], str(Path(uvicorn).parent))
    env_script = write_script(tmp_path / "tool", "#!/usr/bin/env -S python3 -u\nprint(1)\n")
    assert is_python_command([str(env_script)], None)
    write_script(
        tmp_path / "long",
        "#!/bin/sh\n'''exec' /very/long/venv/bin/python3 \"$0\" \"$@\"\n' '''\nimport sys\n",
    )
    assert is_python_command(["long"], str(tmp_path))
    assert is_python_script(b"#!/opt/venv/bin/python3.12\n")
    assert not is_python_script(b"#!/bin/sh\nexec python3 app.py\n")


def test_other_programs_are_not_python(tmp_path: Path) -> None:
    shell = write_script(tmp_path / "run.sh", "#!/bin/sh\nexec python3 -m app\n")
    assert not is_python_command([str(shell)], None)
    assert not is_python_command(["sh", "-c", "python3"], os.environ.get("PATH"))
    assert not is_python_command(["no-such-command-here"], os.environ.get("PATH"))
    assert not is_python_command([], None)


def test_the_variable_is_set_only_when_nobody_said_otherwise() -> None:
    env = {"PATH": os.environ.get("PATH", "")}
    assert wants_import_profile([PYTHON, "app.py"], env)
    assert not wants_import_profile([PYTHON, "app.py"], env, disabled=True)
    assert not wants_import_profile([PYTHON, "app.py"], {**env, "PYTHONPROFILEIMPORTTIME": ""})
    assert not wants_import_profile(["sh", "-c", "true"], env)
