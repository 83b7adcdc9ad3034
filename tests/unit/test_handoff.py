"""The hand-off plan over many command shapes, and systemd's protocol with a real server.

What each server reads is checked against the real servers in tests/e2e/test_servers.py;
here the planning is checked as a pure function.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from supervisor import servers
from supervisor.handoff import (
    LISTEN_PID_PLACEHOLDER,
    SYSTEMD_FIRST_FD,
    HandoffMode,
    HandoffPlan,
    choose_mode,
    is_uvicorn,
    plan_handoff,
    resolve_listen_pid,
    substitute_placeholder,
    systemd_command,
    systemd_environment,
)
from supervisor.listener import bind_listener

CHILDREN = Path(__file__).resolve().parent.parent / "children"


@pytest.mark.parametrize(
    "argv",
    [
        ["uvicorn", "app.main:app"],
        ["/usr/local/bin/uvicorn", "app.main:app", "--port", "80"],
        ["python", "-m", "uvicorn", "app:app"],
        ["python3", "-m", "uvicorn", "app:app"],
        ["python3.11", "-m", "uvicorn", "app:app"],
        ["/opt/venv/bin/python3.12", "-u", "-m", "uvicorn", "app:app"],
        ["python", "-X", "importtime", "-W", "error", "-m", "uvicorn", "app:app"],
        ["python", "-Xdev", "-muvicorn", "app:app"],
        ["python", "-um", "uvicorn", "app:app"],
        ["python", "-OO", "-B", "-m", "uvicorn.__main__", "app:app"],
        ["pypy3", "-m", "uvicorn", "app:app"],
    ],
)
def test_uvicorn_commands_are_recognised(argv: list[str]) -> None:
    assert is_uvicorn(argv)
    assert choose_mode("auto", argv) is HandoffMode.FD


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["gunicorn", "app:app"],
        ["python", "app.py", "-m", "uvicorn"],
        ["python", "-c", "import uvicorn", "-m", "uvicorn"],
        ["python", "-m", "uvicorn_worker"],
        ["python", "-m"],
        ["python", "-"],
        ["sh", "-c", "uvicorn app:app"],
        ["uvicornx", "app:app"],
        ["node", "server.js"],
    ],
)
def test_other_commands_are_not_uvicorn(argv: list[str]) -> None:
    assert not is_uvicorn(argv)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["uvicorn", "a:app"], (None, None)),
        (["uvicorn", "a:app", "--host", "0.0.0.0", "--port", "8000"], ("0.0.0.0", 8000)),
        (["uvicorn", "a:app", "--host=::", "--port=8080"], ("::", 8080)),
        (["uvicorn", "--port", "1", "a:app", "--port", "2"], (None, 2)),
        (["uvicorn", "a:app", "--port", "http"], (None, None)),
        (["uvicorn", "a:app", "--port", "70000"], (None, None)),
        (["uvicorn", "a:app", "--port"], (None, None)),
        (["python", "-m", "uvicorn", "a:app", "--host", "127.0.0.1"], ("127.0.0.1", None)),
        (["uvicorn", "a:app", "--", "--port", "9"], (None, None)),
    ],
)
def test_uvicorn_address(argv: list[str], expected: tuple[Optional[str], Optional[int]]) -> None:
    assert servers.UVICORN.address(argv, {}) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["uvicorn", "a:app"], ["uvicorn", "a:app", "--fd", "3"]),
        (
            ["uvicorn", "a:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"],
            ["uvicorn", "a:app", "--workers", "2", "--fd", "3"],
        ),
        (
            ["uvicorn", "--host=0.0.0.0", "--port=8000", "a:app", "--proxy-headers"],
            ["uvicorn", "a:app", "--proxy-headers", "--fd", "3"],
        ),
        (["uvicorn", "a:app", "--uds", "/tmp/s.sock"], ["uvicorn", "a:app", "--fd", "3"]),
        (["uvicorn", "a:app", "--fd", "7"], ["uvicorn", "a:app", "--fd", "3"]),
        (["uvicorn", "a:app", "--fd=7", "--port"], ["uvicorn", "a:app", "--fd", "3"]),
        (
            ["python", "-m", "uvicorn", "a:app", "--port", "80", "--root-path", "/api"],
            ["python", "-m", "uvicorn", "a:app", "--root-path", "/api", "--fd", "3"],
        ),
        (
            ["uvicorn", "a:app", "--port", "80", "--", "--port"],
            ["uvicorn", "a:app", "--fd", "3", "--", "--port"],
        ),
    ],
)
def test_uvicorn_rewrite(argv: list[str], expected: list[str]) -> None:
    rewrite = servers.UVICORN.rewrite
    assert rewrite is not None
    assert rewrite(argv, 3) == expected
    assert rewrite(expected, 3) == expected  # idempotent


def test_rewrite_keeps_the_argument_list_untouched() -> None:
    argv = ["uvicorn", "a:app", "--port", "80"]
    for server in (servers.UVICORN, servers.HYPERCORN, servers.DAPHNE):
        assert server.rewrite is not None
        server.rewrite(argv, 5)
    assert argv == ["uvicorn", "a:app", "--port", "80"]


def test_placeholder_is_substituted_anywhere_in_an_argument() -> None:
    argv = ["hypercorn", "--bind", "fd://{fd}", "app:app"]
    assert substitute_placeholder(argv, 5) == (["hypercorn", "--bind", "fd://5", "app:app"], True)
    assert substitute_placeholder(["srv", "--fds={fd},{fd}"], 4) == (["srv", "--fds=4,4"], True)
    assert substitute_placeholder(["srv", "--port", "80"], 4) == (["srv", "--port", "80"], False)


@pytest.mark.parametrize(
    ("requested", "argv", "mode"),
    [
        ("auto", ["uvicorn", "a:app"], HandoffMode.FD),
        ("auto", ["hypercorn", "--bind", "fd://{fd}", "a:app"], HandoffMode.FD),
        ("auto", ["hypercorn", "-b", "0.0.0.0:80", "a:app"], HandoffMode.FD),
        ("auto", ["python", "-m", "hypercorn", "a:app"], HandoffMode.FD),
        ("auto", ["daphne", "proj.asgi:application"], HandoffMode.FD),
        ("auto", ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "a:app"], HandoffMode.SYSTEMD),
        ("auto", ["granian", "--interface", "asgi", "a:app"], HandoffMode.BIND),
        # Each worker binds its own socket: LISTEN_FDS would be ignored.
        ("auto", ["gunicorn", "--reuse-port", "-w", "2", "a:app"], HandoffMode.BIND),
        ("auto", ["fastapi", "run", "main.py"], HandoffMode.BIND),
        ("auto", ["python", "server.py"], HandoffMode.BIND),  # the plan needs a port for it
        ("auto", ["python", "server.py", "--fd", "{fd}"], HandoffMode.FD),
        ("fd", ["python", "-m", "uvicorn", "a:app"], HandoffMode.FD),
        ("fd", ["daphne", "a:app"], HandoffMode.FD),
        ("systemd", ["python", "server.py"], HandoffMode.SYSTEMD),
        ("port", ["uvicorn", "a:app"], HandoffMode.PORT),
        ("none", ["uvicorn", "a:app"], HandoffMode.NONE),
    ],
)
def test_choose_mode(requested: str, argv: list[str], mode: HandoffMode) -> None:
    assert choose_mode(requested, argv) is mode


def test_choose_mode_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="fd option"):
        choose_mode("fd", ["python", "server.py"])
    with pytest.raises(ValueError, match="fd option"):
        choose_mode("fd", ["granian", "a:app"])
    with pytest.raises(ValueError, match="auto, fd, systemd, port, none"):
        choose_mode("socket", ["uvicorn", "a:app"])


def test_systemd_environment() -> None:
    assert systemd_environment() == {
        "LISTEN_FDS": "1",
        "LISTEN_PID": LISTEN_PID_PLACEHOLDER,
        "LISTEN_FDNAMES": "http",
    }
    two = systemd_environment(2, ("http", "admin"))
    assert two["LISTEN_FDS"] == "2" and two["LISTEN_FDNAMES"] == "http:admin"
    with pytest.raises(ValueError):
        systemd_environment(2, ("http",))
    assert resolve_listen_pid(systemd_environment(), 42)["LISTEN_PID"] == "42"
    assert resolve_listen_pid({"LISTEN_PID": "7"})["LISTEN_PID"] == "7"
    assert resolve_listen_pid(systemd_environment())["LISTEN_PID"] == str(os.getpid())
    with pytest.raises(ValueError):
        systemd_command(["srv"], 12)


def _ask(port: int) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return dict(json.loads(data.partition(b"\r\n\r\n")[2]))
        except ConnectionResetError:
            # Only while the server starts: the listener is ours, so never refused.
            if time.monotonic() > deadline:
                raise


def test_systemd_trampoline_gives_a_real_server_its_socket_and_pid() -> None:
    listener = bind_listener("127.0.0.1", 0)
    fd = listener.fileno()
    # The trampoline takes fds 0..9 (a POSIX shell limit); pytest holds many fds, so a
    # tiny launcher puts the socket on fd 5 first, as the loop would with a low fd.
    low = 6 if fd == 5 else 5
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), int(sys.argv[2])); "
        "os.close(int(sys.argv[1])); os.execv(sys.argv[3], sys.argv[3:])"
    )
    server = [sys.executable, str(CHILDREN / "app_systemd.py")]
    argv = [sys.executable, "-c", launcher, str(fd), str(low), *systemd_command(server, low)]
    env = dict(os.environ, **systemd_environment())
    process = subprocess.Popen(argv, env=env, pass_fds=(fd,), start_new_session=True)
    try:
        answer = _ask(listener.getsockname()[1])
        assert answer == {"pid": process.pid, "listen_pid": str(process.pid), "names": "http"}
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        listener.close()


def test_systemd_fork_exec_with_resolved_pid() -> None:
    # The other way the loop can do it: fork, move the socket to fd 3, resolve, exec.
    listener = bind_listener("127.0.0.1", 0)
    env = dict(os.environ, **systemd_environment())
    argv = [sys.executable, str(CHILDREN / "app_systemd.py")]
    assert threading.active_count() == 1, "fork needs a single-threaded process"
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe-ish steps until exec
        try:
            os.setsid()
            os.dup2(listener.fileno(), SYSTEMD_FIRST_FD)
            os.execve(argv[0], argv, resolve_listen_pid(env))
        finally:
            os._exit(127)
    try:
        answer = _ask(listener.getsockname()[1])
        assert answer["pid"] == pid and answer["listen_pid"] == str(pid)
    finally:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        listener.close()


@pytest.mark.parametrize(
    ("argv", "address"),
    [
        (["gunicorn", "-b", "127.0.0.1:8133", "app:app"], ("127.0.0.1", 8133)),
        (["gunicorn", "--bind=0.0.0.0:9000", "app:app"], ("0.0.0.0", 9000)),
        (["gunicorn", "-b0.0.0.0:9001", "app:app"], ("0.0.0.0", 9001)),
        (["gunicorn", "-b", "unix:/run/app.sock", "-b", "127.0.0.1:9003", "a:b"],
         ("127.0.0.1", 9003)),
        (["gunicorn", "-b", "[::1]:9004", "app:app"], ("::1", 9004)),
        (["gunicorn", "-b", "fd://5", "app:app"], (None, None)),
        (["gunicorn", "app:app"], (None, None)),
    ],
)
def test_gunicorn_binds_are_the_address_the_supervisor_binds(
    argv: list[str], address: tuple[object, object]
) -> None:
    assert servers.GUNICORN.address(argv, {}) == address
    plan = plan_handoff("auto", argv, None, None, None, {})
    assert plan.mode is HandoffMode.SYSTEMD
    assert plan.argv == tuple(argv)  # LISTEN_FDS wins over every -b
    assert plan.env["LISTEN_FDS"] == "1"
    expected = (address[0] or "0.0.0.0", address[1] or 8000)
    assert plan.stub_address == expected


def test_gunicorn_reads_port_and_its_command_line_variable_as_it_does() -> None:
    assert servers.GUNICORN.address(["gunicorn", "a:b"], {"PORT": "5000"}) == ("0.0.0.0", 5000)
    env = {"GUNICORN_CMD_ARGS": "--workers 2 --bind 0.0.0.0:7000"}
    assert servers.GUNICORN.address(["gunicorn", "a:b"], env) == ("0.0.0.0", 7000)
    assert servers.GUNICORN.address(["gunicorn", "-b", "unix:/s", "a:b"], {}) == "/s"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["hypercorn", "a:app"], ["hypercorn", "a:app", "-b", "fd://3"]),
        (["hypercorn", "a:app", "-b", "0.0.0.0:8000"], ["hypercorn", "a:app", "-b", "fd://3"]),
        (["hypercorn", "-b0.0.0.0:8000", "--bind=[::]:8000", "-w", "2", "a:app"],
         ["hypercorn", "-w", "2", "a:app", "-b", "fd://3"]),
        # Another port stays hypercorn's own: it serves every bind it is given.
        (["hypercorn", "-b", "0.0.0.0:8000", "-b", "0.0.0.0:9000", "a:app"],
         ["hypercorn", "-b", "0.0.0.0:9000", "a:app", "-b", "fd://3"]),
        (["hypercorn", "-b", "unix:/run/s.sock", "a:app"], ["hypercorn", "a:app", "-b", "fd://3"]),
        (["hypercorn", "--insecure-bind", "0.0.0.0:80", "a:app"],
         ["hypercorn", "--insecure-bind", "0.0.0.0:80", "a:app", "-b", "fd://3"]),
    ],
)
def test_hypercorn_gets_an_fd_bind(argv: list[str], expected: list[str]) -> None:
    # hypercorn 0.18 reads no LISTEN_FDS: config._create_sockets takes "fd://N" binds.
    assert servers.HYPERCORN.rewrite is not None
    assert servers.HYPERCORN.rewrite(argv, 3) == expected
    assert plan_handoff("auto", argv, None, None, None, {}).argv == tuple(expected)


@pytest.mark.parametrize(
    ("argv", "address", "expected"),
    [
        (["daphne", "p.asgi:application"], (None, None), ["daphne", "p.asgi:application",
                                                          "--fd", "3"]),
        (["daphne", "-b", "0.0.0.0", "-p", "8000", "p.asgi:application"], ("0.0.0.0", 8000),
         ["daphne", "p.asgi:application", "--fd", "3"]),
        (["daphne", "-b0.0.0.0", "-p8001", "--port=8002", "-v", "2", "p.asgi:application"],
         ("0.0.0.0", 8002), ["daphne", "-v", "2", "p.asgi:application", "--fd", "3"]),
        (["daphne", "-u", "/run/d.sock", "p.asgi:application"], "/run/d.sock",
         ["daphne", "p.asgi:application", "--fd", "3"]),
        (["daphne", "-e", "ssl:443:privateKey=k.pem", "p.asgi:application"], (None, None),
         ["daphne", "-e", "ssl:443:privateKey=k.pem", "p.asgi:application", "--fd", "3"]),
    ],
)
def test_daphne_gets_its_fd_option(argv: list[str], address: object, expected: list[str]) -> None:
    assert servers.DAPHNE.address(argv, {}) == address
    assert servers.DAPHNE.rewrite is not None
    assert servers.DAPHNE.rewrite(argv, 3) == expected


@pytest.mark.parametrize(
    ("argv", "environ", "address"),
    [
        (["granian", "--interface", "asgi", "a:app"], {}, (None, None)),
        (["granian", "--host", "0.0.0.0", "--port", "9000", "a:app"], {}, ("0.0.0.0", 9000)),
        (["granian", "a:app"], {"GRANIAN_PORT": "9100"}, (None, 9100)),
        (["granian", "--uds", "/run/g.sock", "a:app"], {}, "/run/g.sock"),
        (["fastapi", "run", "main.py", "--port", "8001"], {}, (None, 8001)),
        (["fastapi", "run", "main.py"], {"PORT": "8002"}, (None, 8002)),
        (["flask", "run", "-h", "0.0.0.0", "-p", "5001"], {}, ("0.0.0.0", 5001)),
        (["flask", "run"], {"FLASK_RUN_PORT": "5002"}, (None, 5002)),
        (["python", "manage.py", "runserver", "0.0.0.0:8003"], {}, ("0.0.0.0", 8003)),
        (["python", "manage.py", "runserver", "8004"], {}, (None, 8004)),
        (["python", "manage.py", "runserver", "[::]:8005", "--noreload"], {}, ("::", 8005)),
        (["python", "main.py", "--port", "8006"], {}, (None, 8006)),
        (["python", "main.py"], {}, (None, None)),
    ],
)
def test_the_address_of_servers_that_bind_their_own(
    argv: list[str], environ: dict[str, str], address: object
) -> None:
    server = servers.identify(argv)
    assert server.way == servers.BINDS_ITSELF
    assert server.address(argv, environ) == address


def test_servers_are_told_apart_by_program_module_and_script() -> None:
    assert servers.identify(["/venv/bin/granian", "a:app"]) is servers.GRANIAN
    assert servers.identify(["python", "-m", "gunicorn", "a:app"]) is servers.GUNICORN
    assert servers.identify(["python", "-m", "daphne", "a:app"]) is servers.DAPHNE
    assert servers.identify(["python", "manage.py", "migrate"]) is servers.UNKNOWN
    assert servers.identify(["./manage.py", "runserver"]) is servers.RUNSERVER
    assert servers.identify(["python", "/srv/main.py"]) is servers.UNKNOWN
    assert servers.identify([]) is servers.UNKNOWN


def plan(argv: list[str], environ: Optional[dict[str, str]] = None, *, port: Optional[int] = None,
         host: Optional[str] = None, requested: str = "auto",
         unavailable: Optional[str] = None) -> HandoffPlan:
    return plan_handoff(requested, argv, host, port, None, environ or {}, unavailable)


def lines(result: HandoffPlan, level: Optional[str] = None) -> list[str]:
    return [text for kind, text in result.notices if level in (None, kind)]


def test_a_uvicorn_unix_socket_is_bound_by_the_supervisor_and_handed_over() -> None:
    result = plan(["uvicorn", "a:app", "--uds", "/run/app.sock", "--workers", "2"])
    assert result.mode is HandoffMode.FD and result.passes_socket and result.has_stub
    assert result.unix_path == "/run/app.sock" and result.stub_address is None
    assert result.argv == ("uvicorn", "a:app", "--workers", "2", "--fd", "3")
    assert result.notices == ()
    # The supervisor's own flags win over the command's socket.
    flagged = plan(["uvicorn", "a:app", "--uds", "/run/app.sock"], port=9000)
    assert flagged.unix_path is None and flagged.stub_address == ("0.0.0.0", 9000)
    assert lines(flagged) == ["the command's unix socket /run/app.sock is served on port 9000 "
                              "(--host/--port)"]
    for command in (["hypercorn", "-b", "unix:/run/h.sock", "a:app"],
                    ["gunicorn", "-b", "unix:/run/h.sock", "a:app"],
                    ["daphne", "-u", "/run/h.sock", "a:app"]):
        assert plan(command).unix_path == "/run/h.sock"
    # granian binds its unix socket itself: left to it, and said.
    granian = plan(["granian", "--uds", "/run/g.sock", "a:app"])
    assert (granian.mode, granian.has_stub) == (HandoffMode.NONE, False)
    assert "(its bind() of a unix socket (/run/g.sock) is left to it)" in lines(granian)[0]


def test_servers_that_bind_their_own_address_have_that_bind_answered() -> None:
    fastapi = plan(["fastapi", "run", "main.py", "--port", "8001"])
    assert fastapi.mode is HandoffMode.BIND and not fastapi.passes_socket
    assert fastapi.stub_address == ("0.0.0.0", 8001) and fastapi.bind_port == 8001
    assert fastapi.argv == ("fastapi", "run", "main.py", "--port", "8001")
    assert fastapi.env == {"_TYPER_STANDARD_TRACEBACK": "1"}
    assert fastapi.notices == ()
    # flask binds 5000 unless told: that bind gets the socket of the public port.
    flask = plan(["flask", "run"], {"PORT": "8080"})
    assert flask.stub_address == ("0.0.0.0", 8080) and flask.bind_port == 5000
    assert lines(flask) == ["`flask` binds port 5000: that bind() gets the socket of port 8080"]
    # Any other command, once a port is named: by $PORT, a flag, or its own --port.
    for unknown in (plan(["python", "main.py"], {"PORT": "8080"}),
                    plan(["python", "main.py"], port=8080),
                    plan(["./server", "--port", "8080"])):
        assert unknown.mode is HandoffMode.BIND and unknown.bind_port == 8080
        assert unknown.stub_address == ("0.0.0.0", 8080) and unknown.notices == ()
        assert not unknown.known_server and fastapi.known_server
    # Without a port it is a plain process, as under tini: no stub, nothing said.
    plain = plan(["python", "worker.py"])
    assert (plain.mode, plain.has_stub, plain.notices) == (HandoffMode.NONE, False, ())


def test_a_command_that_cannot_get_a_socket_says_so_and_how_to_get_the_stub() -> None:
    result = plan(["granian", "--interface", "asgi", "a:app"], {"PORT": "8080"}, port=9000,
                  unavailable="Linux 5.4.0 is older than 5.9")
    assert result.mode is HandoffMode.NONE and not result.has_stub
    [(level, line)] = result.notices
    assert level == "warning"
    assert line.startswith("no stub and no hand-off for `granian`: it binds its own address")
    assert "(Linux 5.4.0 is older than 5.9)" in line
    assert "tracked, and nothing answers on --port 9000 or PORT=8080 until the app binds" in line
    assert line.endswith("For the stub, granian takes no socket: --handoff port "
                         "--health-port N (the stub on a port of its own)")
    script = plan(["python", "main.py"], port=8080, unavailable="not Linux")
    assert "put {fd} in the command" in lines(script)[0]
    # A server that takes a socket does not need the interception at all.
    assert plan(["uvicorn", "a:app"], unavailable="not Linux").mode is HandoffMode.FD


def test_an_explicit_port_that_is_not_served_gets_a_line() -> None:
    none = plan(["python", "worker.py"], {"PORT": "8080"}, port=9000, requested="none")
    assert lines(none, "warning") == [
        "with --handoff none the supervisor binds no address: nothing answers on --port 9000 "
        "or PORT=8080 until the app binds it"]
    assert plan(["python", "worker.py"], requested="none").notices == ()
    # $PORT names one port, the command another: the command's is served, and said.
    mismatch = plan(["uvicorn", "a:app", "--port", "8000"], {"PORT": "8080"})
    assert mismatch.stub_address == ("0.0.0.0", 8000)
    [warning] = lines(mismatch, "warning")
    assert warning.startswith("PORT=8080 is set, but the app is served on port 8000 (the "
                              "command names it)")
    assert warning.endswith("--port 8080")
    # --port replaces the command's own port, and says so.
    override = plan(["uvicorn", "a:app", "--port", "8000"], port=9000)
    assert override.argv[-2:] == ("--fd", "3") and override.stub_address == ("0.0.0.0", 9000)
    assert lines(override) == ["the command's port 8000 is served on port 9000 (--port)"]
    # Nothing said when everything asked for is served.
    assert plan(["uvicorn", "a:app"], {"PORT": "8080"}).notices == ()
    assert plan(["gunicorn", "a:app"], {"PORT": "8080"}).notices == ()


def test_reloading_commands_are_known() -> None:
    assert plan(["uvicorn", "a:app", "--reload"]).reloads
    assert plan(["fastapi", "dev", "main.py"]).reloads
    assert plan(["python", "manage.py", "runserver"]).reloads
    assert not plan(["python", "manage.py", "runserver", "--noreload"]).reloads
    assert not plan(["uvicorn", "a:app", "--workers", "2"]).reloads


def test_a_bad_port_variable_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="PORT: invalid value 'http'"):
        plan(["uvicorn", "a:app"], {"PORT": "http"})
