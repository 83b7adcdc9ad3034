"""Helpers for the tests of the reproduction: unprivileged runs and started processes."""

from __future__ import annotations

import os
import subprocess
from typing import Callable, Iterator

import pytest

from supervisor.errors import UsageError


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed and reaped at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def run_as_nobody(action: Callable[[], None]) -> str:
    """Run ``action`` in a forked process with uid nobody; return the UsageError it raised."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked, unprivileged process
        message = b"no error"
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            action()
        except UsageError as exc:
            message = str(exc).encode()
        except BaseException as exc:
            message = f"unexpected {type(exc).__name__}: {exc}".encode()
        finally:
            os.write(write_fd, message)
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()
