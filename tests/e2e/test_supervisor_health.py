"""Health at once, end to end: the real supervisor in front of real servers on 127.0.0.1.

Each test runs ``python -m supervisor`` over a real uvicorn (or a small server
that takes its socket by systemd's protocol) and talks to it over real
sockets: the stub's first answer after exec, the hand-off to the app, early
requests, no refused connection across startup and a SIGKILL, ``port`` mode,
the startup timeout, keep-alive through the handed-off socket, and bad
values refused before any child starts. Deadlines are generous: these check
behaviour; how fast is measured in bench/ (health, readiness).
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from supervisor.readiness import proc_readiness_supported
from tests.conftest import EVENTUALLY_S, PYTHON, Run, child, free_port, wait_for

CHILDREN = str(Path(__file__).resolve().parent.parent / "children")
_UVICORN_SCRIPT = Path(PYTHON).parent / "uvicorn"
# The console script, as a Dockerfile runs it; ``python -m uvicorn`` where there is none.
UVICORN = [str(_UVICORN_SCRIPT)] if _UVICORN_SCRIPT.exists() else [PYTHON, "-m", "uvicorn"]
HOST = "127.0.0.1"
STARTING = {"status": "starting"}

pytestmark = pytest.mark.skipif(
    not proc_readiness_supported(), reason="readiness from /proc needs Linux"
)

Supervise = Callable[..., Run]


# -- HTTP over raw sockets ------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def from_app(self) -> bool:
        """The test apps put ``"app": true`` in every body; the stub never does."""
        try:
            payload = self.json()
        except ValueError:
            return False
        return isinstance(payload, dict) and payload.get("app") is True


def parse_answer(data: bytes, head_only: bool = False) -> Answer:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise ConnectionResetError(f"answer cut off in its head after {len(data)} bytes")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        if len(body) < length and not head_only:
            # The server died mid-answer: for the client, as good as a reset.
            raise ConnectionResetError(f"answer cut off after {len(body)} of {length} bytes")
        body = body[:length]
    return Answer(status, headers, body)


def get(port: int, path: str, timeout: float = 15.0, method: str = "GET") -> Answer:
    """One request on a fresh connection (``Connection: close``), read to EOF."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return parse_answer(b"".join(chunks), head_only=method == "HEAD")


def first_answer(port: int, path: str, deadline_s: float = EVENTUALLY_S) -> tuple[Answer, float]:
    """Poll connect + GET until something answers; the answer and when (monotonic)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            answer = get(port, path)
            return answer, time.monotonic()
        except (ConnectionRefusedError, ConnectionResetError):
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing answered {path} on port {port} within "
                                     f"{deadline_s} s") from None
            time.sleep(0.001)  # leave the CPU to the supervisor that is starting


def wait_app_answers(port: int, path: str = "/healthz", timeout: float = 60.0) -> Answer:
    """Poll ``path`` until the app (not the stub) answers it."""
    answers: list[Answer] = []

    def app_answered() -> bool:
        try:
            answer = get(port, path)
        except ConnectionRefusedError:
            return False  # a bare server that has not bound yet
        answers.append(answer)
        return answer.from_app

    wait_for(app_answered, timeout=timeout, interval=0.02, what=f"the app to answer {path}")
    return answers[-1]


def keep_alive_requests(port: int, requests: int = 50) -> list[Answer]:
    """``requests`` GETs on one keep-alive connection, each answer read whole."""
    request = f"GET /keep-alive HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    answers = []
    with socket.create_connection((HOST, port), timeout=EVENTUALLY_S) as sock:
        for _ in range(requests):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, "the server closed a keep-alive connection"
                data += chunk
            answer = parse_answer(data, head_only=True)  # the body is read below
            length = int(answer.headers["content-length"])
            body = data.partition(b"\r\n\r\n")[2]
            while len(body) < length:
                chunk = sock.recv(65536)
                assert chunk, "the server closed in the middle of a body"
                body += chunk
            answers.append(Answer(answer.status, answer.headers, body))
    return answers


# -- commands, processes, reports -------------------------------------------------


def uvicorn(module: str, port: int, *extra: str) -> list[str]:
    return [*UVICORN, f"{module}:app", "--app-dir", CHILDREN, "--host", HOST, "--port",
            str(port), *extra]


def app_env(import_s: float) -> dict[str, str]:
    return {"E2E_IMPORT_S": str(import_s)}


def read_report(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def the_child(run: Run, timeout: float = EVENTUALLY_S) -> psutil.Process:
    """The supervisor's direct child (the server it spawned)."""
    supervisor = psutil.Process(run.pid)
    children: list[psutil.Process] = []

    def spawned() -> bool:
        children[:] = supervisor.children()
        return bool(children)

    wait_for(spawned, timeout=timeout, what="the supervisor's child")
    return children[0]


def line_of(path: str, marker: str) -> int:
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in {path}")


# -- 1. the stub answers at once, the app after readiness ---------------------------


def test_stub_answers_healthz_at_once_and_the_app_every_path_after_readiness(
    supervise: Supervise, tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--",
                    *uvicorn("e2e_slow_import", port), env=app_env(3))
    # How soon it answers is measured in bench/ (health: exec to first /healthz 200).
    first, _ = first_answer(port, "/healthz")
    assert first.status == 200
    assert first.json() == STARTING

    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    wait_app_answers(port)
    for path in ("/healthz", "/", "/api/items?page=2", "/ready"):
        answer = get(port, path)
        assert answer.status == 200
        assert answer.from_app, (path, answer)
        assert answer.json()["path"] == path.split("?")[0]
        assert answer.json() != STARTING

    run.signal(signal.SIGTERM)
    status, _, stderr = run.finish()
    data = read_report(report)
    assert status == 143
    assert data["ready_after_s"] is not None
    assert data["ready_after_s"] >= 2.8, data["ready_after_s"]  # not before the 3 s import
    assert data["cause"] == "stopped"
    assert data["phase"] == "stopping"
    assert b"ready after" in stderr


# -- 2. no connection refused, through startup and across a SIGKILL ------------------


def exits_within(pid: int, timeout: float) -> bool:
    """True when ``pid`` is gone (or a zombie) within ``timeout`` seconds."""

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        wait_for(gone, timeout=timeout, interval=0.005, what=f"pid {pid} to exit")
    except AssertionError:
        return False
    return True


@dataclass
class ClientLoop:
    """Connect + GET /healthz again and again; record every answer and every failure.

    A refused connection is only fine when the supervisor is exiting (it closed
    the port): the loop then ends. One while it lives on is counted as refused.
    """

    port: int
    supervisor_pid: int
    answers: list[tuple[float, Answer]] = field(default_factory=list)
    refused: int = 0
    refused_at_exit: int = 0
    resets: list[float] = field(default_factory=list)
    timeouts: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                answer = get(self.port, "/healthz")
            except ConnectionRefusedError:
                if exits_within(self.supervisor_pid, EVENTUALLY_S):
                    self.refused_at_exit += 1
                    return
                self.refused += 1
                continue
            except (ConnectionResetError, BrokenPipeError, IndexError, ValueError):
                self.resets.append(time.monotonic())  # in flight inside the killed process
                continue
            except socket.timeout:
                self.timeouts += 1
                continue
            self.answers.append((time.monotonic(), answer))

    def count(self, predicate: Callable[[Answer], bool]) -> int:
        return sum(1 for _, answer in self.answers if predicate(answer))


@pytest.fixture
def silent_sentry() -> Iterator[str]:
    """A DSN whose server takes the connection and never answers.

    Crash delivery then lasts the whole ``--sentry-timeout``, during which the
    supervisor keeps serving the stub: a window to watch it answer after a crash.
    """
    with socket.socket() as server:
        server.bind((HOST, 0))
        server.listen(16)
        yield f"http://public@{HOST}:{server.getsockname()[1]}/1"


def test_no_connection_is_refused_during_startup_or_across_a_sigkill(
    supervise: Supervise, tmp_path: Path, silent_sentry: str
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--sentry-dsn", silent_sentry,
                    "--sentry-timeout", "1s", "--",
                    *uvicorn("e2e_slow_import", port, "--no-access-log"), env=app_env(3))
    first_answer(port, "/healthz")  # bound: from here on nothing may be refused
    loop = ClientLoop(port, run.pid)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: loop.count(lambda a: a.from_app) >= 20, timeout=60,
                 what="the app to answer the client loop")
        assert loop.refused == 0, "refused during startup or hand-off"
        killed_at = time.monotonic()
        the_child(run).kill()
        status, _, _ = run.finish()
        thread.join(timeout=EVENTUALLY_S)
    finally:
        loop.stop.set()
        thread.join(timeout=EVENTUALLY_S)

    starting = loop.count(lambda a: a.json() == STARTING)
    from_app = loop.count(lambda a: a.from_app)
    after_kill = [a for at, a in loop.answers if at > killed_at and not a.from_app]
    print(f"\nclient loop: {starting} stub answers while starting, {from_app} from the app, "
          f"{len(after_kill)} from the stub after the kill, {len(loop.resets)} reset, "
          f"{loop.timeouts} timed out, {loop.refused} refused "
          f"(+{loop.refused_at_exit} once the supervisor had exited)")
    assert starting > 0 and from_app > 0
    assert loop.refused == 0
    assert loop.timeouts == 0
    # Only what was in flight inside the killed process may be reset.
    assert len(loop.resets) <= 2, loop.resets
    assert after_kill, "the stub did not answer after the child was killed"
    for answer in after_kill:
        assert answer.status == 503
        assert answer.json() == {"status": "down", "cause": "killed"}
    assert status == 137
    data = read_report(report)
    assert data["cause"] == "killed"
    assert data["phase"] == "running"
    assert data["signal"] == "SIGKILL"


def test_connections_waiting_in_the_backlog_when_the_child_dies_are_answered(
    supervise: Supervise,
) -> None:
    port = free_port()
    run = supervise("--", *uvicorn("e2e_slow_import", port), env=app_env(0))
    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    wait_app_answers(port)
    server = the_child(run)
    server.suspend()  # it stops accepting: new connections wait in the backlog
    waiting = [socket.create_connection((HOST, port), timeout=EVENTUALLY_S) for _ in range(5)]
    try:
        for sock in waiting:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        server.kill()
        answers = []
        for sock in waiting:
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            answers.append(parse_answer(data))
    finally:
        for sock in waiting:
            sock.close()
    assert run.finish()[0] == 137
    assert [answer.status for answer in answers] == [503] * 5
    assert answers[0].json() == {"status": "down", "cause": "killed"}


# -- 3. early requests ------------------------------------------------------------------


def test_early_request_during_startup_gets_the_apps_answer(
    supervise: Supervise, tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    before_exec = time.monotonic()
    run = supervise("--report-file", str(report), "--",
                    *uvicorn("e2e_slow_import", port), env=app_env(3))
    stub, _ = first_answer(port, "/healthz")
    assert stub.json() == STARTING
    sent_after_s = time.monotonic() - before_exec
    early = get(port, "/early?x=1", timeout=60)
    print(f"\nGET /early sent {sent_after_s:.2f} s after exec, answered by the app "
          f"{time.monotonic() - before_exec:.2f} s after exec")
    assert early.status == 200
    assert early.from_app, early
    assert early.json()["path"] == "/early"

    run.signal(signal.SIGTERM)
    run.finish()
    ready_after_s = read_report(report)["ready_after_s"]
    assert ready_after_s is not None and sent_after_s < ready_after_s


def test_early_requests_reject_answers_503_with_retry_after_at_once(
    supervise: Supervise,
) -> None:
    port = free_port()
    run = supervise("--early-requests", "reject", "--",
                    *uvicorn("e2e_slow_import", port), env=app_env(3))
    first_answer(port, "/healthz")
    # Answered by the stub while the app imports (how fast: bench/, health).
    early = get(port, "/early")
    assert early.status == 503
    assert early.headers.get("retry-after", "").isdigit(), early.headers
    assert early.json() == STARTING
    assert get(port, "/healthz").json() == STARTING  # still starting: not the app's answer
    run.signal(signal.SIGTERM)
    run.finish()


# -- 4. workers ----------------------------------------------------------------------------


def test_readiness_with_two_uvicorn_workers(supervise: Supervise, tmp_path: Path) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--",
                    *uvicorn("e2e_slow_import", port, "--workers", "2"), env=app_env(1))
    assert first_answer(port, "/healthz")[0].json() == STARTING
    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    wait_app_answers(port)
    master = the_child(run)
    workers = {process.pid for process in master.children()}
    for path in ("/healthz", "/", "/a/b"):
        answer = get(port, path)
        assert answer.from_app, (path, answer)
        assert answer.json()["pid"] in workers
    run.signal(signal.SIGTERM)
    run.finish()
    data = read_report(report)
    assert data["ready_after_s"] is not None and data["ready_after_s"] >= 1.0
    assert data["cause"] == "stopped"


# -- 5. --starting-status and --ready-path ----------------------------------------------


def test_starting_status_503_until_the_app_answers(supervise: Supervise) -> None:
    port = free_port()
    run = supervise("--starting-status", "503", "--",
                    *uvicorn("e2e_slow_import", port), env=app_env(1))
    stub, _ = first_answer(port, "/healthz")
    assert stub.status == 503
    assert stub.json() == STARTING
    head = get(port, "/healthz", method="HEAD")
    assert head.status == 503 and head.body == b""
    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    answer = wait_app_answers(port)
    assert answer.status == 200
    run.signal(signal.SIGTERM)
    assert run.finish()[0] == 143


def test_ready_path_is_503_until_ready_then_the_apps(supervise: Supervise) -> None:
    port = free_port()
    run = supervise("--ready-path", "/ready", "--",
                    *uvicorn("e2e_slow_import", port), env=app_env(1))
    health, _ = first_answer(port, "/healthz")
    ready = get(port, "/ready")
    assert health.status == 200 and health.json() == STARTING
    assert ready.status == 503 and ready.json() == STARTING
    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    answer = wait_app_answers(port, "/ready")
    assert answer.status == 200
    assert answer.json()["path"] == "/ready"
    run.signal(signal.SIGTERM)
    run.finish()


# -- 6. systemd's socket-activation protocol ----------------------------------------------


def test_systemd_protocol_server_answers_on_the_public_port(
    supervise: Supervise, tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--handoff", "systemd", "--host", HOST,
                    "--port", str(port), "--", PYTHON, child("e2e_systemd.py"))
    server = the_child(run)
    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    answer = wait_app_answers(port, "/anything")
    facts = answer.json()
    assert facts["pid"] == server.pid
    assert facts["listen_pid"] == str(server.pid)
    assert facts["listen_fds"] == "1"
    assert facts["names"] == "http"
    run.signal(signal.SIGTERM)
    status, _, _ = run.finish()
    data = read_report(report)
    # An asyncio server registers fd 3 in its epoll set: readiness is seen.
    assert data["ready_after_s"] is not None
    assert data["cause"] == "stopped" and status == 143


def test_a_poll_based_systemd_server_is_seen_ready_when_it_accepts(
    supervise: Supervise, tmp_path: Path
) -> None:
    """No epoll registration to see (gunicorn's sync workers wait with select):
    readiness comes from the app accepting a connection while the stub steps aside."""
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--handoff", "systemd", "--host", HOST,
                    "--port", str(port), "--startup-timeout", "30s", "--",
                    PYTHON, child("e2e_poll_server.py"))
    first_answer(port, "/healthz")
    run.wait_for_stderr("ready after", timeout=60)
    # Once seen ready, every connection is the app's.
    answers = [get(port, "/healthz") for _ in range(20)]
    assert all(answer.status == 200 and answer.from_app for answer in answers)
    run.signal(signal.SIGTERM)
    run.finish()
    data = read_report(report)
    # How soon: bench/ (readiness: poll-based server, accept probe).
    assert data["ready_after_s"] is not None
    assert data["cause"] in ("stopped", "killed")


def test_blocking_accept_server_does_not_freeze_the_supervisor(
    supervise: Supervise, tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--handoff", "systemd", "--host", HOST,
                    "--port", str(port), "--startup-timeout", "30s", "--",
                    PYTHON, child("app_systemd.py"))
    server = the_child(run)
    wait_for(lambda: Path(f"/proc/{server.pid}/wchan").read_text() == "inet_csk_accept",
             timeout=60, what="the server to block in accept()")
    for _ in range(10):
        assert get(port, "/healthz").status == 200
    run.signal(signal.SIGTERM)
    status, _, _ = run.finish()
    assert status == 143
    assert read_report(report)["cause"] == "stopped"


# -- 7. port mode ---------------------------------------------------------------------------


def test_port_mode_stub_says_starting_then_ok_once_the_app_listens(
    supervise: Supervise, tmp_path: Path
) -> None:
    app_port, health_port = free_port(), free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--handoff", "port", "--health-port",
                    str(health_port), "--", *uvicorn("e2e_slow_import", app_port),
                    env=app_env(1))
    stub, _ = first_answer(health_port, "/healthz")
    assert stub.status == 200 and stub.json() == STARTING
    with pytest.raises(ConnectionRefusedError):
        get(app_port, "/")  # the app binds its own port, later

    def says_ok() -> bool:
        answer = get(health_port, "/healthz")
        assert answer.status == 200
        return bool(answer.json() == {"status": "ok"})

    wait_for(says_ok, timeout=60, interval=0.02, what="the stub to say ok")
    assert get(app_port, "/x").from_app
    run.signal(signal.SIGTERM)
    run.finish()
    assert read_report(report)["ready_after_s"] >= 1.0


def run_port_in_use(supervise: Supervise, tmp_path: Path) -> tuple[int, dict[str, Any], int]:
    app_port, health_port = free_port(), free_port()
    report = tmp_path / "report.json"
    with socket.socket() as taken:
        taken.bind((HOST, app_port))
        taken.listen(16)
        run = supervise("--report-file", str(report), "--handoff", "port", "--health-port",
                        str(health_port), "--", *uvicorn("e2e_slow_import", app_port),
                        env=app_env(0))
        status, _, _ = run.finish()
    return status, read_report(report), app_port


def test_port_mode_port_in_use_is_the_cause(supervise: Supervise, tmp_path: Path) -> None:
    status, data, _ = run_port_in_use(supervise, tmp_path)
    assert data["cause"] == "port_in_use"
    assert status == data["status"] != 0


def test_port_in_use_summary_names_the_bind_error(
    supervise: Supervise, tmp_path: Path
) -> None:
    _, data, app_port = run_port_in_use(supervise, tmp_path)
    assert "address already in use" in data["summary"]
    assert str(app_port) in data["summary"]


def test_port_mode_readiness_is_not_fooled_by_another_listener(
    supervise: Supervise, tmp_path: Path
) -> None:
    _, data, _ = run_port_in_use(supervise, tmp_path)
    assert data["ready_after_s"] is None
    assert data["phase"] == "starting"


# -- 8. startup timeout -----------------------------------------------------------------------


def test_startup_timeout_names_the_frame_where_the_app_hung(
    supervise: Supervise, tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--startup-timeout", "1s", "--",
                    *uvicorn("e2e_hang", port))
    assert first_answer(port, "/healthz")[0].json() == STARTING
    status, _, stderr = run.finish()
    data = read_report(report)
    where = f"e2e_hang.py:{line_of(child('e2e_hang.py'), 'HANG')} in fetch_remote_config"
    assert status == 124
    assert data["cause"] == "startup_timeout"
    assert data["status"] == 124
    assert data["phase"] == "starting"
    assert data["ready_after_s"] is None
    assert where in data["summary"], data["summary"]
    assert data["where"] is not None and data["where"].endswith(where), data["where"]
    # faulthandler's dump, relayed: SIGABRT ended it (how soon: bench/, readiness).
    assert b"fetch_remote_config" in stderr


# -- 9. keep-alive latency through the handed-off socket ----------------------------------


def test_keep_alive_through_the_handed_off_socket_answers_every_request(
    supervise: Supervise,
) -> None:
    # Latency against bare uvicorn is measured in bench/ (health: keep-alive p50).
    port = free_port()
    run = supervise("--", *uvicorn("e2e_slow_import", port, "--no-access-log"),
                    env=app_env(0))
    run.wait_for_stderr("ready after", timeout=60)
    wait_app_answers(port, "/")
    answers = keep_alive_requests(port, 50)
    assert all(answer.status == 200 and answer.from_app for answer in answers)
    run.signal(signal.SIGTERM)
    run.finish()


# -- 10. phases in the report --------------------------------------------------------------


def test_crash_after_readiness_is_reported_in_phase_running(
    supervise: Supervise, tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--",
                    *uvicorn("e2e_slow_import", port), env=app_env(0))
    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    wait_app_answers(port)
    with pytest.raises((ConnectionResetError, IndexError, ValueError)):
        get(port, "/crash")  # the app exits 7 while answering
    status, _, _ = run.finish()
    data = read_report(report)
    assert status == 7
    assert data["exit_code"] == 7
    assert data["phase"] == "running"
    assert data["ready_after_s"] is not None
    assert data["cause"] == "exit_code"


def test_sigterm_after_readiness_is_stopped_in_phase_stopping(
    supervise: Supervise, tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--",
                    *uvicorn("e2e_slow_import", port), env=app_env(0))
    # The app may answer a moment before the supervisor sees it ready.
    run.wait_for_stderr("ready after", timeout=60)
    wait_app_answers(port)
    run.signal(signal.SIGTERM)
    status, _, _ = run.finish()
    data = read_report(report)
    assert status == 143
    assert data["cause"] == "stopped"
    assert data["phase"] == "stopping"
    assert data["signals_received"][0]["signal"] == "SIGTERM"


# -- 11. bad values -------------------------------------------------------------------------


MARKER_COMMAND = [PYTHON, "-c", "open('child-started', 'w').close()"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "70000", "--", *MARKER_COMMAND], ["--port", "70000"]),
        (["--health-path", "healthz", "--", *MARKER_COMMAND], ["--health-path", "healthz"]),
        (["--handoff", "fd", "--", *MARKER_COMMAND], ["--handoff", "fd"]),
        (["--health-port", "0", "--", *MARKER_COMMAND], ["--health-port", "0"]),
        (["--starting-status", "abc", "--", *MARKER_COMMAND], ["--starting-status", "abc"]),
        (["--early-requests", "queue", "--", *MARKER_COMMAND], ["--early-requests", "queue"]),
    ],
    ids=["port-70000", "health-path-no-slash", "handoff-fd-not-uvicorn", "health-port-0",
         "starting-status-abc", "early-requests-queue"],
)
def test_bad_value_exits_2_with_one_line_naming_the_option(
    supervise: Supervise, tmp_path: Path, args: list[str], named: list[str]
) -> None:
    port = free_port()
    run = supervise(*args, env={"PORT": str(port)})
    status, stdout, stderr = run.finish()
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert status == 2
    assert len(lines) == 1, lines
    for word in named:
        assert word in lines[0], lines[0]
    assert stdout == b""
    assert not (tmp_path / "child-started").exists()
    with pytest.raises(ConnectionRefusedError):
        get(port, "/healthz", timeout=1)  # nothing was bound either


def test_command_that_cannot_start_exits_127_and_frees_the_port(supervise: Supervise) -> None:
    port = free_port()
    run = supervise("--host", HOST, "--port", str(port), "--handoff", "systemd", "--",
                    "/nonexistent/server")
    status, _, _ = run.finish()
    assert status == 127
    with pytest.raises(ConnectionRefusedError):
        get(port, "/healthz", timeout=1)


def test_gunicorn_sync_workers_get_the_socket_and_are_seen_ready(
    supervise: Supervise, tmp_path: Path
) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn is a test extra")
    port = free_port()
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), "--", PYTHON, "-m", "gunicorn",
                    "--chdir", CHILDREN, "-w", "2", "-b", f"{HOST}:{port}", "wsgi_hello:app")
    first_answer(port, "/healthz")
    run.wait_for_stderr("ready after", timeout=60)
    with socket.create_connection((HOST, port), timeout=EVENTUALLY_S) as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    assert reply.endswith(b"hello from gunicorn")
    run.signal(signal.SIGTERM)
    status, _, _ = run.finish()
    data = read_report(report)
    assert status == 0
    assert data["cause"] == "stopped"
    assert data["handoff"] == "systemd"
    assert data["ready_after_s"] is not None


def test_an_app_without_the_health_path_gets_a_clear_warning(supervise: Supervise) -> None:
    port = free_port()
    run = supervise("--", *uvicorn("e2e_no_health", port))
    run.wait_for_stderr("ready after", timeout=60)
    # After the hand-off the platform asks the app itself, which answers 404.
    run.wait_for_stderr("the app answers 404 on /healthz", timeout=60)
    run.signal(signal.SIGTERM)
    status, _, _ = run.finish()
    assert status == 143
