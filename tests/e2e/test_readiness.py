"""Readiness from /proc: real process trees and a real uvicorn on a socket we bound.

How soon readiness is seen after uvicorn's startup line, and what one check
costs, are measured in bench/ (readiness).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from supervisor import procfs
from supervisor.listener import bind_listener
from supervisor.readiness import descendants, proc_readiness_supported, socket_in_epoll
from tests.conftest import wait_for

CHILDREN = Path(__file__).resolve().parent.parent / "children"

pytestmark = pytest.mark.skipif(not proc_readiness_supported(), reason="needs Linux /proc")


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
    """Polls readiness every few ms while reading uvicorn's stderr, noting which came first."""

    def __init__(self, process: subprocess.Popen[bytes], inode: int) -> None:
        self.process = process
        self.inode = inode
        self.started = time.monotonic()
        self.checks_before_ready = 0
        self.ready_at: Optional[float] = None
        self.logged_at: Optional[float] = None
        self.log = b""
        self.log_at_ready = b""

    def run(self, timeout: float) -> None:
        assert self.process.stderr is not None
        stderr = self.process.stderr.fileno()
        os.set_blocking(stderr, False)
        deadline = self.started + timeout
        while time.monotonic() < deadline and (self.ready_at is None or self.logged_at is None):
            readable, _, _ = select.select([stderr], [], [], 0.005)
            if readable:
                self._read_log(stderr)
            if self.ready_at is None:
                if socket_in_epoll(descendants(self.process.pid), self.inode):
                    self.ready_at = time.monotonic()
                    # What uvicorn wrote before the socket was seen may still be in the pipe.
                    self._read_log(stderr)
                    self.log_at_ready = self.log
                elif self.logged_at is None:
                    self.checks_before_ready += 1
            assert self.process.poll() is None, self.log.decode(errors="replace")

    def _read_log(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        self.log += chunk
        if self.logged_at is None and b"Application startup complete." in self.log:
            self.logged_at = time.monotonic()


def test_epoll_registration_marks_readiness_after_slow_startup(
    processes: list[subprocess.Popen[bytes]], listener: socket.socket
) -> None:
    inode = os.fstat(listener.fileno()).st_ino
    process = start_uvicorn(processes, listener, 1.0)
    watch = StartupWatch(process, inode)
    watch.run(timeout=60)
    assert watch.ready_at is not None and watch.logged_at is not None
    # Not ready while the lifespan startup runs, then ready once it completed.
    assert watch.checks_before_ready > 0
    assert b"Waiting for application startup." in watch.log_at_ready
    assert b"Application startup complete." in watch.log_at_ready


def test_readiness_with_two_workers(
    processes: list[subprocess.Popen[bytes]], listener: socket.socket
) -> None:
    inode = os.fstat(listener.fileno()).st_ino
    process = start_uvicorn(processes, listener, 1.0, "--workers", "2")
    watch = StartupWatch(process, inode)
    watch.run(timeout=60)
    assert watch.ready_at is not None
    assert watch.checks_before_ready > 0
    # The master never polls the socket itself: it is a worker that was seen.
    assert not socket_in_epoll([process.pid], inode)
    assert len(descendants(process.pid)) >= 3


def test_descendants_finds_children_and_grandchildren(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    process = subprocess.Popen(
        ["sh", "-c", 'sh -c "sleep 60 & wait" & sleep 60 & wait'], start_new_session=True
    )
    processes.append(process)
    wait_for(lambda: len(descendants(process.pid)) == 4, timeout=60,
             what=f"4 processes in the tree (now {descendants(process.pid)})")
    tree = descendants(process.pid)
    assert tree[0] == process.pid and len(set(tree)) == 4
    # The fallback scan of /proc/*/stat sees the same tree.
    parents = procfs.parent_map()
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
