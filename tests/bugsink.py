"""A real bugsink (a Sentry-compatible server on SQLite) on 127.0.0.1 for tests.

Owns: configuring bugsink in a scratch directory (phone-home off), migrating
its database, creating an API token, a team and a project, serving it with
gunicorn in its own session, and tearing all of that down.
Must not know: what the supervisor sends.

CI needs only ``pip install bugsink`` (Python >= 3.11); everything else is
done here with ``python -m`` so that no console script must be on PATH.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

STARTUP_TIMEOUT = 60.0


class Bugsink:
    """Start with ``start()``; ``close()`` kills the server's whole process group."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.dsn = ""
        self.project_id: Optional[int] = None
        self._server: Optional[subprocess.Popen[bytes]] = None
        self._log = workdir / "gunicorn.log"

    def start(self) -> Bugsink:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._manage_py(
            "bugsink.scripts.create_conf",
            "--template=local",
            "--host=127.0.0.1",
            f"--port={self.port}",
        )
        with open(self.workdir / "bugsink_conf.py", "a") as conf:
            # Tests talk to 127.0.0.1 only: no usage report to bugsink.com.
            conf.write('\nBUGSINK["PHONEHOME"] = False\n')
        self._manage_py("bugsink.scripts.manage", "migrate")
        self.token = self._manage_py("bugsink.scripts.manage", "create_auth_token").strip()
        with open(self._log, "wb") as log:
            self._server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--access-logfile",
                    "-",
                    "bugsink.wsgi",
                ],
                cwd=self.workdir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        team = self.api("POST", "teams/", {"name": "supervisor"})
        project = self.api("POST", "projects/", {"name": "shop", "team": team["id"]})
        self.project_id = int(project["id"])
        self.dsn = str(self.api("GET", f"projects/{self.project_id}/")["dsn"])
        return self

    def issues(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.api("GET", f"issues/?project={self.project_id}")[
            "results"
        ]
        return results

    def wait_for_issues(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            issues = self.issues()
            if len(issues) >= count or time.monotonic() > deadline:
                return issues
            time.sleep(0.1)  # polling bugsink's API; bounded by the deadline above

    def events(self, issue_id: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.api("GET", f"events/?issue={issue_id}")["results"]
        return results

    def api(self, method: str, path: str, body: Optional[dict[str, Any]] = None) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}/api/canonical/0/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        except ProcessLookupError:
            server.wait(10)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.workdir)
        env["DJANGO_SETTINGS_MODULE"] = "bugsink_conf"
        return env

    def _manage_py(self, module: str, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=self.workdir,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{module} {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self._server is not None
            if self._server.poll() is not None:
                raise RuntimeError(f"bugsink exited {self._server.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)  # gunicorn is booting; bounded by the deadline above
        raise RuntimeError(f"bugsink not ready after {STARTUP_TIMEOUT} s:\n{self.log()}")


def _free_port() -> int:
    # bugsink writes its own URL (and so the DSN) into its config: the port
    # must be known before it starts.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
