"""Readiness from /proc: real process trees and a real uvicorn on a socket we bound."""

from __future__ import annotations

import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from supervisor import readiness
from supervisor.health import bind_listener
from supervisor.readiness import descendants, proc_readiness_supported, socket_in_epoll

CHILDREN = Path(__file__).resolve().parent.parent / "children"

pytestmark = pytest.mark.skipif(not proc_readiness_supported(), reason="needs Linux /proc")


def wait_for(condition: Callable[[], bool], timeout: float, every: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        threading.Event().wait(every)
    return condition()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = bind_listener("127.0.0.1", 0)
    yield sock
    sock.close()


def start_uvicorn(
    processes: list[subprocess.Popen[bytes]],
    listener: socket.socket,
    startup_s: float,
    *args: str,
) -> subprocess.Popen[bytes]:
    fd = listener.fileno()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app_slow_start:app",
            "--app-dir",
            str(CHILDREN),
            "--fd",
            str(fd),
            *args,
        ],
        pass_fds=(fd,),
        env=dict(os.environ, APP_STARTUP_S=str(startup_s), PYTHONUNBUFFERED="1"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    processes.append(process)
    return process


class StartupWatch:
    """Polls readiness every few ms while reading uvicorn's stderr, timing both."""

    def __init__(self, process: subprocess.Popen[bytes], inode: int) -> None:
        self.process = process
        self.inode = inode
        self.started = time.monotonic()
        self.checks_before_ready = 0
        self.ready_at: Optional[float] = None
        self.logged_at: Optional[float] = None
        self.log = b""

    def run(self, timeout: float) -> None:
        assert self.process.stderr is not None
        stderr = self.process.stderr.fileno()
        os.set_blocking(stderr, False)
        deadline = self.started + timeout
        while time.monotonic() < deadline and (self.ready_at is None or self.logged_at is None):
            readable, _, _ = select.select([stderr], [], [], 0.005)
            if readable:
                chunk = os.read(stderr, 65536)
                self.log += chunk
                if self.logged_at is None and b"Application startup complete." in self.log:
                    self.logged_at = time.monotonic()
            if self.ready_at is None:
                if socket_in_epoll(descendants(self.process.pid), self.inode):
                    self.ready_at = time.monotonic()
                elif self.logged_at is None:
                    self.checks_before_ready += 1
            assert self.process.poll() is None, self.log.decode(errors="replace")


def test_epoll_registration_marks_readiness_after_slow_startup(
    processes: list[subprocess.Popen[bytes]], listener: socket.socket
) -> None:
    inode = os.fstat(listener.fileno()).st_ino
    process = start_uvicorn(processes, listener, 1.0)
    watch = StartupWatch(process, inode)
    watch.run(timeout=20)
    assert watch.ready_at is not None and watch.logged_at is not None
    # Not ready through the one-second startup, then ready with the log line.
    assert watch.checks_before_ready > 20
    assert watch.ready_at - watch.started > 0.9
    assert abs(watch.ready_at - watch.logged_at) < 0.25
    print(f"\nready {1000 * (watch.ready_at - watch.logged_at):+.1f} ms from the log line")


def test_readiness_with_two_workers(
    processes: list[subprocess.Popen[bytes]], listener: socket.socket
) -> None:
    inode = os.fstat(listener.fileno()).st_ino
    process = start_uvicorn(processes, listener, 1.0, "--workers", "2")
    watch = StartupWatch(process, inode)
    watch.run(timeout=30)
    assert watch.ready_at is not None
    assert watch.checks_before_ready > 20
    # The master never polls the socket itself: it is a worker that was seen.
    assert not socket_in_epoll([process.pid], inode)
    tree = descendants(process.pid)
    assert len(tree) >= 3

    # The cost of one check on this tree (it runs every ~20 ms during startup only).
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        socket_in_epoll(descendants(process.pid), inode)
        timings.append((time.perf_counter() - started) * 1000)
    cost = statistics.median(timings)
    print(f"\none readiness check, {len(tree)} processes: {cost:.3f} ms (median of 200)")
    assert cost < 10


def test_descendants_finds_children_and_grandchildren(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    process = subprocess.Popen(
        ["sh", "-c", 'sh -c "sleep 60 & wait" & sleep 60 & wait'], start_new_session=True
    )
    processes.append(process)
    assert wait_for(lambda: len(descendants(process.pid)) == 4, 10), descendants(process.pid)
    tree = descendants(process.pid)
    assert tree[0] == process.pid and len(set(tree)) == 4
    # The fallback scan of /proc/*/stat sees the same tree.
    parents = readiness._parent_map()
    found = [process.pid]
    for pid in found:
        found.extend(parents.get(pid, []))
    assert sorted(found) == sorted(tree)


def test_vanished_processes_are_tolerated(processes: list[subprocess.Popen[bytes]]) -> None:
    process = subprocess.Popen(["true"], start_new_session=True)
    processes.append(process)
    process.wait(10)
    assert descendants(process.pid) == [process.pid]
    assert socket_in_epoll([process.pid, 2**22 + 12345, os.getpid()], 1) is False


def test_own_epoll_is_seen_and_unregistered_socket_is_not() -> None:
    with socket.socket() as watched, socket.socket() as other:
        epoll = select.epoll()
        try:
            epoll.register(watched.fileno(), select.EPOLLIN)
            me = [os.getpid()]
            assert socket_in_epoll(me, os.fstat(watched.fileno()).st_ino)
            assert not socket_in_epoll(me, os.fstat(other.fileno()).st_ino)
            epoll.unregister(watched.fileno())
            assert not socket_in_epoll(me, os.fstat(watched.fileno()).st_ino)
        finally:
            epoll.close()
    assert proc_readiness_supported()
