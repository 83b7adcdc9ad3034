"""The supervisor runs on every Python from 3.9 to 3.13 that this machine has.

The package is run from the source tree (PYTHONPATH) by each interpreter,
supervising a child of the same version, so both the supervisor's own code
and the traceback parser meet that version for real.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import ROOT

VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def interpreter(version: str) -> Optional[str]:
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3")))
    if found:
        return found[-1]
    return shutil.which(f"python{version}")


@pytest.mark.parametrize("version", VERSIONS)
def test_an_import_time_crash_is_explained_on_every_python(
    version: str, tmp_path: Path
) -> None:
    python = interpreter(version)
    if python is None:
        pytest.skip(f"Python {version} is not installed on this machine")
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SENTRY_DSN", None)
    script = tmp_path / "app.py"
    script.write_text(
        "import os\n\ndef settings():\n    return os.environ['DATABASE_URL']\n\nsettings()\n"
    )
    result = subprocess.run(
        [python, "-m", "supervisor", "--report-file", str(report), "--", python, str(script)],
        env=env, cwd=str(tmp_path), capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1, result.stderr.decode()
    data = json.loads(report.read_text())
    assert data["cause"] == "python_exception"
    assert data["summary"] == "KeyError: 'DATABASE_URL'"
    assert data["where"] == f"{script}:4 in settings"
