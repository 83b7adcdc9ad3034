"""HTTP on 127.0.0.1 for the bench: a raw-socket client, and how to run the bench's app.

A raw client, not httpx or urllib: its own cost must be far below the
latencies it measures, and it must see refused connections as they happen.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Optional

from common import CHILDREN_DIR, LOCALHOST, PYTHON

MAX_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def uvicorn_argv(port: int) -> list[str]:
    """The bench's app under uvicorn, bound to 127.0.0.1 only, with no access log."""
    return [
        PYTHON, "-m", "uvicorn", "app:app",
        "--app-dir", str(CHILDREN_DIR),
        "--host", LOCALHOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((LOCALHOST, port), timeout=timeout)
        # Without it our own small requests would wait for delayed ACKs.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def get(self, path: str) -> Response:
        request = f"GET {path} HTTP/1.1\r\nHost: {LOCALHOST}\r\n\r\n".encode()
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        self._buffer = rest
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return Response(status, body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self._buffer += chunk
        if len(self._buffer) > MAX_RESPONSE:
            raise ConnectionError("response too large")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def get_once(port: int, path: str, timeout: float = 2.0) -> Optional[Response]:
    """One request on a fresh connection; None when refused, reset or timed out."""
    try:
        connection = Connection(port, timeout)
    except OSError:
        return None
    try:
        return connection.get(path)
    except (OSError, ValueError, IndexError):
        return None
    finally:
        connection.close()


def wait_for(port: int, path: str, seconds: float, body_has: bytes = b"",
             pause: float = 0.001) -> Optional[float]:
    """Poll until ``path`` answers 200 (with ``body_has`` in the body); the time it did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = get_once(port, path, timeout=1.0)
        if response is not None and response.status == 200 and body_has in response.body:
            return time.monotonic()
        time.sleep(pause)
    return None
