"""The compatibility matrix: every common way to start a Python web server, for real.

Each row runs the real server (installed by the test extra) twice at once: an app that
sleeps 2 s at import, and one that raises RuntimeError at import. The first must get the
stub's answer on /healthz while it imports, then serve 50 requests itself on the same
port, have its readiness in the report, and stop cleanly on SIGTERM; the second must end
as python_exception with the app's own exception and frame, once, without waiting for
the startup timeout. Rows whose server is not installed are skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import pytest

from supervisor.bindtrap import unavailable_reason
from tests.conftest import CHILDREN, PYTHON, Run, free_port, wait_for

Address = Union[tuple[str, int], str]
BIN = Path(PYTHON).parent
IMPORT_SLEEP_S = "2"
# Generous: the machine runs other suites beside this one.
ANSWER_DEADLINE_S = 10.0
READY_DEADLINE_S = 60.0
END_DEADLINE_S = 60.0
STARTUP_TIMEOUT = "120s"


def raise_line(name: str) -> int:
    lines = (CHILDREN / name).read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if "raise RuntimeError" in line)


@dataclass(frozen=True)
class Row:
    name: str
    command: Callable[[Address], list[str]]
    handoff: str  # what the report says
    app_file: str = "srv_asgi.py"
    needs: tuple[str, ...] = ()
    env: Callable[[Address], dict[str, str]] = field(default=lambda address: {})
    unix: bool = False
    reloads: bool = False


def script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {PYTHON}")
    return str(path)


def port_of(address: Address) -> str:
    assert not isinstance(address, str)
    return str(address[1])


ROWS = [
    Row("uvicorn", lambda a: [script("uvicorn"), "srv_asgi:app", "--host", "0.0.0.0",
                              "--port", port_of(a)], "fd", needs=("uvicorn",)),
    Row("python -m uvicorn", lambda a: [PYTHON, "-m", "uvicorn", "srv_asgi:app", "--port",
                                        port_of(a), "--proxy-headers"], "fd", needs=("uvicorn",)),
    Row("uvicorn --workers 2", lambda a: [script("uvicorn"), "srv_asgi:app", "--port",
                                          port_of(a), "--workers", "2"], "fd",
        needs=("uvicorn",)),
    Row("uvicorn --reload", lambda a: [script("uvicorn"), "srv_asgi:app", "--port", port_of(a),
                                       "--reload", "--reload-dir", str(CHILDREN)], "fd",
        needs=("uvicorn",), reloads=True),
    Row("uvicorn --uds", lambda a: [script("uvicorn"), "srv_asgi:app", "--uds", str(a)], "fd",
        needs=("uvicorn",), unix=True),
    Row("django under uvicorn", lambda a: [script("uvicorn"), "srv_django:application",
                                           "--port", port_of(a)], "fd",
        app_file="srv_django.py", needs=("uvicorn", "django")),
    Row("gunicorn sync", lambda a: [script("gunicorn"), "srv_wsgi:app", "-b",
                                    f"0.0.0.0:{port_of(a)}"], "systemd",
        app_file="srv_wsgi.py", needs=("gunicorn",)),
    Row("gunicorn uvicorn.workers", lambda a: [
        script("gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "srv_asgi:app", "-b",
        f"0.0.0.0:{port_of(a)}"], "systemd", needs=("gunicorn", "uvicorn")),
    Row("gunicorn uvicorn_worker", lambda a: [
        script("gunicorn"), "-k", "uvicorn_worker.UvicornWorker", "-w", "2", "srv_asgi:app",
        "-b", f"0.0.0.0:{port_of(a)}"], "systemd", needs=("gunicorn", "uvicorn_worker")),
    Row("hypercorn", lambda a: [script("hypercorn"), "srv_asgi:app", "-b",
                                f"0.0.0.0:{port_of(a)}"], "fd", needs=("hypercorn",)),
    Row("daphne", lambda a: [script("daphne"), "-b", "0.0.0.0", "-p", port_of(a),
                             "srv_asgi:app"], "fd", needs=("daphne",)),
    Row("granian", lambda a: [script("granian"), "--interface", "asgi", "--host", "0.0.0.0",
                              "--port", port_of(a), "srv_asgi:app"], "bind",
        needs=("granian",)),
    Row("fastapi run", lambda a: [script("fastapi"), "run", str(CHILDREN / "srv_fastapi.py"),
                                  "--port", port_of(a)], "bind",
        app_file="srv_fastapi.py", needs=("fastapi", "fastapi_cli")),
    Row("python main.py with uvicorn.run", lambda a: [PYTHON, str(CHILDREN / "srv_uvicorn_run.py")],
        "bind", needs=("uvicorn",), env=lambda a: {"PORT": port_of(a)}),
]


# -- HTTP over TCP or a unix socket, one request per connection ---------------------------


def get(address: Address, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: matrix\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def try_get(address: Address, path: str) -> Optional[tuple[int, bytes]]:
    try:
        return get(address, path, timeout=2.0)
    except (OSError, IndexError, ValueError):
        return None


def serves_the_app(address: Address) -> bool:
    answer = try_get(address, "/")
    return answer is not None and answer == (200, b"hello from the app")


# -- one supervised server ------------------------------------------------------------------


class Server:
    """The supervisor over one row's command; stderr goes to a file, stdout nowhere."""

    def __init__(self, supervise: Callable[..., Run], tmp: Path, row: Row, name: str,
                 **app_env: str) -> None:
        self.address: Address = (str(tmp / f"{name}.sock") if row.unix
                                 else ("127.0.0.1", free_port()))
        self.report = tmp / f"{name}.json"
        self.stderr_path = tmp / f"{name}.err"
        env = {"PYTHONPATH": str(CHILDREN), **row.env(self.address), **app_env}
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in finish)
        self.started = time.monotonic()
        self.run = supervise("--report-file", str(self.report), "--startup-timeout",
                             STARTUP_TIMEOUT, "--", *row.command(self.address), env=env,
                             stdout=subprocess.DEVNULL, stderr=self._stderr)

    @property
    def text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def finish(self) -> dict[str, object]:
        self.run.process.wait(timeout=END_DEADLINE_S)
        self._stderr.close()
        result: dict[str, object] = json.loads(self.report.read_text())
        return result


def first_answer(server: Server) -> tuple[float, tuple[int, bytes]]:
    """Poll /healthz from the moment of exec; the first answer and when it came."""
    answer = wait_for(lambda: try_get(server.address, "/healthz"), timeout=ANSWER_DEADLINE_S,
                      what="a first answer on /healthz")
    assert isinstance(answer, tuple)
    return time.monotonic() - server.started, answer


def check_crash(report: dict[str, object], row: Row, text: str) -> None:
    assert report["cause"] == "python_exception", (report["summary"], text[-3000:])
    assert report["summary"] == "RuntimeError: boom at import"
    exception = report["exception"]
    assert isinstance(exception, dict)
    assert (exception["type"], exception["value"]) == ("RuntimeError", "boom at import")
    line = raise_line(row.app_file)
    assert report["where"] == f"{CHILDREN / row.app_file}:{line} in <module>"
    assert text.count("summary:  RuntimeError: boom at import") == 1
    uptime = report["uptime_s"]
    assert isinstance(uptime, float) and uptime < 60, "waited for the startup timeout"


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_the_server_matrix(row: Row, supervise: Callable[..., Run], tmp_path: Path,
                           record_property: Callable[[str, object], None]) -> None:
    for module in row.needs:
        pytest.importorskip(module, reason=f"{module} is a test extra")
    if row.handoff == "bind" and unavailable_reason() is not None:
        pytest.skip(f"bind interception: {unavailable_reason()}")
    healthy = Server(supervise, tmp_path, row, "healthy", SRV_SLEEP=IMPORT_SLEEP_S)
    broken = Server(supervise, tmp_path, row, "broken", SRV_SLEEP=IMPORT_SLEEP_S, SRV_BOOM="1")

    # 1. The stub answers /healthz at once, while the app still imports.
    after, answer = first_answer(healthy)
    record_property("first_healthz_s", round(after, 3))
    assert answer[0] == 200 and json.loads(answer[1]) == {"status": "starting"}, healthy.text

    # 2. The app then serves 50 requests on the same port.
    wait_for(lambda: serves_the_app(healthy.address), timeout=READY_DEADLINE_S,
             what=f"{row.name} serving the app")
    for _ in range(50):
        assert get(healthy.address, "/") == (200, b"hello from the app")

    # 5. The app raising at import is python_exception with its own exception, once.
    if row.reloads:
        # A reloader waits for a fix: each crash is said as it happens, and it waits on.
        line = raise_line(row.app_file)
        wait_for(lambda: f"the app crashed while starting: RuntimeError: boom at import at "
                         f"{CHILDREN / row.app_file}:{line} in <module>; the reloader waits "
                         "for a change" in broken.text,
                 timeout=END_DEADLINE_S, what="the crash said")
        assert broken.run.process.poll() is None
        broken.run.signal(signal.SIGTERM)
        assert broken.finish()["cause"] == "stopped"
    else:
        crashed = broken.finish()
        check_crash(crashed, row, broken.text)
        record_property("crash_reported_after_s", crashed["uptime_s"])

    # 3. Readiness is in the report, and 4. SIGTERM is a clean stop.
    wait_for(lambda: "ready after" in healthy.text, timeout=READY_DEADLINE_S, what="ready")
    healthy.run.signal(signal.SIGTERM)
    report = healthy.finish()
    assert report["cause"] == "stopped", (report["summary"], healthy.text[-3000:])
    assert isinstance(report["ready_after_s"], float)
    assert report["handoff"] == row.handoff


# -- where the child's bind cannot be answered -------------------------------------------------


def test_where_seccomp_is_refused_the_command_runs_without_the_stub_and_says_so(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is a test extra")
    if unavailable_reason() is not None:
        pytest.skip(f"bind interception: {unavailable_reason()}")
    # A seccomp filter installed first makes seccomp(2) fail with EPERM, as a strict
    # container profile would: the supervisor's own filter is refused.
    port = free_port()
    report_path = tmp_path / "refused.json"
    stderr = open(tmp_path / "refused.err", "wb")  # noqa: SIM115 (closed below)
    run = supervise("--report-file", str(report_path), "--", PYTHON,
                    str(CHILDREN / "srv_uvicorn_run.py"),
                    env={"PYTHONPATH": str(CHILDREN), "PORT": str(port)},
                    prefix=(PYTHON, str(CHILDREN / "srv_no_seccomp.py")),
                    stdout=subprocess.DEVNULL, stderr=stderr)
    address = ("127.0.0.1", port)
    wait_for(lambda: serves_the_app(address), timeout=READY_DEADLINE_S, what="the app")
    for _ in range(50):
        assert get(address, "/") == (200, b"hello from the app")
    run.signal(signal.SIGTERM)
    run.process.wait(END_DEADLINE_S)
    stderr.close()
    text = (tmp_path / "refused.err").read_text()
    [line] = [line for line in text.splitlines() if "no stub and no hand-off" in line]
    assert line == (
        "[supervisor] warning: no stub and no hand-off for `" + f"{os.path.basename(PYTHON)} "
        + f"{CHILDREN / 'srv_uvicorn_run.py'}`: it binds its own address and the supervisor "
        "cannot answer that bind here (seccomp(2) failed: Operation not permitted); readiness "
        f"is not tracked, and nothing answers on PORT={port} until the app binds it. For the "
        "stub, put {fd} in the command where it takes an inherited fd (e.g. `python main.py "
        "{fd}` with `uvicorn.run(app, fd=int(sys.argv[1]))`), or --handoff port --health-port "
        "N (the stub on a port of its own)"
    )
    report = json.loads(report_path.read_text())
    assert (report["cause"], report["handoff"]) == ("stopped", "none")


BIND_TWICE = """\
import os, socket, sys, time
port = int(sys.argv[1])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", port))  # the app's own: a UDP bind of the port is left alone
other = socket.socket()
other.bind(("127.0.0.1", 0))  # an ephemeral port: untouched
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", port))
tcp.listen(16)
# The socket it holds now is the supervisor's, non-blocking as with --fd: an app that
# wants blocking accepts says so (and is then ready: it accepts).
tcp.setblocking(True)
kind = udp.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
print("bound", udp.getsockname()[1], "udp" if kind == socket.SOCK_DGRAM else "tcp", flush=True)
while True:
    conn, _ = tcp.accept()
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 18\\r\\nConnection: close\\r\\n\\r\\n"
                 b"hello from the app")
    conn.close()
"""


def test_only_a_tcp_bind_of_the_public_port_gets_the_supervisors_socket(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    if unavailable_reason() is not None:
        pytest.skip(f"bind interception: {unavailable_reason()}")
    (tmp_path / "bind_twice.py").write_text(BIND_TWICE)
    port = free_port()
    run = supervise("--port", str(port), "--", PYTHON, str(tmp_path / "bind_twice.py"),
                    str(port))
    address = ("127.0.0.1", port)
    assert run.read_stdout_line(timeout=30).strip() == f"bound {port} udp"
    wait_for(lambda: serves_the_app(address), timeout=READY_DEADLINE_S, what="the app")
    run.wait_for_stderr("the app owns 0.0.0.0", timeout=READY_DEADLINE_S)
    run.signal(signal.SIGTERM)
    _, _, stderr = run.finish(timeout=END_DEADLINE_S)
    assert b"where the supervisor answers" not in stderr  # no other port was taken for it


def test_a_bind_of_another_port_is_said_with_the_flag_that_fixes_it(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is a test extra")
    if unavailable_reason() is not None:
        pytest.skip(f"bind interception: {unavailable_reason()}")
    app_port, public = free_port(), free_port()
    run = supervise("--port", str(public), "--startup-timeout", "60s", "--", PYTHON,
                    str(CHILDREN / "srv_uvicorn_run.py"),
                    env={"PYTHONPATH": str(CHILDREN), "PORT": str(app_port)})
    run.wait_for_stderr(f"binds port {app_port}, not {public} where the supervisor answers: if "
                        f"that is the app's address, start the supervisor with --port "
                        f"{app_port}", timeout=READY_DEADLINE_S)
    run.signal(signal.SIGTERM)
    run.finish(timeout=END_DEADLINE_S)


def test_the_stale_socket_file_of_a_unix_socket_is_replaced(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is a test extra")
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a killed server leaves it
    run = supervise("--", script("uvicorn"), "srv_asgi:app", "--uds", str(path),
                    env={"PYTHONPATH": str(CHILDREN)})
    wait_for(lambda: serves_the_app(str(path)), timeout=READY_DEADLINE_S, what="the app")
    assert os.stat(path).st_mode & 0o777 == 0o666
    run.signal(signal.SIGTERM)
    run.finish(timeout=END_DEADLINE_S)
