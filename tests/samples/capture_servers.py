"""Capture what real servers print when the app raises at import (the samples in servers/).

Run by hand after a server upgrade: ``python tests/samples/capture_servers.py``. Each
sample is the server's own stderr, unedited; tests/unit/test_tracebacks.py reads them.
gunicorn 23 prints its arbiter's HaltServer after the worker's traceback only when the
worker's SIGCHLD lands outside the arbiter's try (about one run in six): the script
retries that one, with gunicorn 23 from ``GUNICORN23_PATH`` (``pip install --target``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "servers"

ASGI = """\
import os
if os.environ.get("APP_BOOM"):
    raise RuntimeError("boom at import")
async def app(scope, receive, send):
    pass
"""
WSGI = """\
import os
if os.environ.get("APP_BOOM"):
    raise RuntimeError("boom at import")
def app(environ, start_response):
    return []
"""
FASTAPI = """\
import os
from fastapi import FastAPI
if os.environ.get("APP_BOOM"):
    raise RuntimeError("boom at import")
app = FastAPI()
"""
RICH = """\
from rich.traceback import install
install(show_locals=True)

def load_settings(path):
    try:
        return open(path).read()
    except FileNotFoundError as error:
        raise RuntimeError(f"settings file missing: {path}") from error

load_settings("/nonexistent/settings.toml")
"""

# name -> (command, extra environment, seconds before it is stopped)
SAMPLES: dict[str, tuple[list[str], dict[str, str], float]] = {
    "fastapi_run_rich": (["fastapi", "run", "main.py", "--port", "18001"], {}, 30),
    "fastapi_run_typer_standard": (["fastapi", "run", "main.py", "--port", "18001"],
                                   {"_TYPER_STANDARD_TRACEBACK": "1"}, 30),
    "gunicorn_uvicorn_worker": (["gunicorn", "-k", "uvicorn_worker.UvicornWorker", "app:app",
                                 "-b", "127.0.0.1:18002"], {}, 30),
    "gunicorn_sync": (["gunicorn", "wsgi:app", "-b", "127.0.0.1:18003"], {}, 30),
    "hypercorn_exits_0": (["hypercorn", "app:app", "-b", "127.0.0.1:18004"], {}, 30),
    "uvicorn_workers_crash_loop": (["uvicorn", "app:app", "--workers", "2", "--port", "18005"],
                                   {}, 12),
    "uvicorn_reload": (["uvicorn", "app:app", "--reload", "--port", "18006"], {}, 4),
    "granian_workers": (["granian", "--interface", "asgi", "--workers", "2", "--port", "18007",
                         "app:app"], {}, 30),
    "daphne": (["daphne", "-p", "18008", "app:app"], {}, 30),
    "rich_traceback_chained_with_locals": ([sys.executable, "settings.py"], {}, 30),
}


def capture(name: str, directory: Path) -> str:
    command, extra, seconds = SAMPLES[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(APP_BOOM="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", PYTHON_COLORS="0")
    env.update(extra)
    try:
        result = subprocess.run(command, cwd=directory, env=env, capture_output=True,
                                text=True, timeout=seconds)
        return result.stderr
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr or b""
        return stderr.decode() if isinstance(stderr, bytes) else stderr


def gunicorn23_halt(directory: Path) -> str:
    path = os.environ.get("GUNICORN23_PATH", "/tmp/g23")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(APP_BOOM="1", PYTHONUNBUFFERED="1", PYTHONPATH=path, PYTHON_COLORS="0")
    for _ in range(30):
        result = subprocess.run(
            [sys.executable, "-m", "gunicorn", "-w", "2", "wsgi:app", "-b", "127.0.0.1:18009"],
            cwd=directory, env=env, capture_output=True, text=True, timeout=60,
        )
        if "HaltServer" in result.stderr:
            return result.stderr
    raise SystemExit("gunicorn 23 never printed HaltServer")


def main() -> None:
    HERE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="srv-") as name:
        directory = Path(name)
        (directory / "app.py").write_text(ASGI)
        (directory / "wsgi.py").write_text(WSGI)
        (directory / "main.py").write_text(FASTAPI)
        (directory / "settings.py").write_text(RICH)
        for sample in SAMPLES:
            (HERE / f"{sample}.txt").write_text(capture(sample, directory))
            print("captured", sample)
        if "--gunicorn23" in sys.argv:
            (HERE / "gunicorn23_sync_haltserver.txt").write_text(gunicorn23_halt(directory))
            print("captured gunicorn23_sync_haltserver")


if __name__ == "__main__":
    main()
