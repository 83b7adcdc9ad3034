"""Argv rewriting over many command shapes, and systemd's protocol with a real server."""

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

from supervisor.handoff import (
    LISTEN_PID_PLACEHOLDER,
    SYSTEMD_FIRST_FD,
    HandoffMode,
    choose_mode,
    is_uvicorn,
    resolve_listen_pid,
    rewrite_for_fd,
    substitute_placeholder,
    systemd_command,
    systemd_environment,
    uvicorn_address,
)
from supervisor.health import bind_listener

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
    assert uvicorn_address(argv) == expected


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
def test_rewrite_for_fd(argv: list[str], expected: list[str]) -> None:
    assert rewrite_for_fd(argv, 3) == expected
    assert rewrite_for_fd(expected, 3) == expected  # idempotent


def test_rewrite_keeps_the_argument_list_untouched() -> None:
    argv = ["uvicorn", "a:app", "--port", "80"]
    rewrite_for_fd(argv, 5)
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
        ("auto", ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "a:app"], HandoffMode.SYSTEMD),
        ("auto", ["python", "-m", "hypercorn", "a:app"], HandoffMode.SYSTEMD),
        ("auto", ["python", "server.py"], HandoffMode.NONE),
        ("fd", ["python", "-m", "uvicorn", "a:app"], HandoffMode.FD),
        ("systemd", ["python", "server.py"], HandoffMode.SYSTEMD),
        ("port", ["uvicorn", "a:app"], HandoffMode.PORT),
    ],
)
def test_choose_mode(requested: str, argv: list[str], mode: HandoffMode) -> None:
    assert choose_mode(requested, argv) is mode


def test_choose_mode_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="fd"):
        choose_mode("fd", ["python", "server.py"])
    with pytest.raises(ValueError, match="auto, fd, systemd, port"):
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
        (["hypercorn", "--bind", "[::1]:9002", "app:app"], ("::1", 9002)),
        (["gunicorn", "-b", "unix:/run/app.sock", "-b", "127.0.0.1:9003", "a:b"],
         ("127.0.0.1", 9003)),
        (["gunicorn", "app:app"], (None, None)),
    ],
)
def test_gunicorn_and_hypercorn_binds_are_the_address_the_supervisor_binds(
    argv: list[str], address: tuple[object, object]
) -> None:
    from supervisor.handoff import bind_address, plan_handoff

    assert bind_address(argv) == address
    plan = plan_handoff("auto", argv, None, None, None, {})
    assert plan.mode is HandoffMode.SYSTEMD
    expected = (address[0] or "0.0.0.0", address[1] or 8000)
    assert plan.stub_address == expected
