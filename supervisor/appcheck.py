"""After hand-off, one look at the app from outside: does it serve the health path?

Owns: one plain HTTP/1.1 request to the app, in a worker thread, and the
warning when it answers 404 (the platform's check would then fail).
Must not know: the loop's state; it reports back through the reactor.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .log import Logger
    from .reactor import Reactor


def warn_if_health_path_missing(
    reactor: Reactor, log: Logger, address: tuple[str, int], health_path: str
) -> None:
    """Ask the app for ``health_path`` off the loop; warn on a 404."""

    def check() -> None:
        if status_of(address, health_path) == 404:
            message = (
                f"the app answers 404 on {health_path}: the platform's health check will "
                "fail now that the app owns the port (point the check, or --health-path, "
                "at a path the app serves)"
            )
            reactor.call_soon_threadsafe(lambda: log.warning(message))

    try:
        reactor.start_thread(check, name="supervisor-app-check")
    except (RuntimeError, OSError) as error:
        log.warning(f"cannot check the app's {health_path} ({error}); skipped")


def status_of(address: tuple[str, int], path: str) -> int:
    """The status of ``GET path``, or 0 when there is no answer.

    One request over a plain socket: an HTTP client library would add more to
    the supervisor's memory than everything else it holds.
    """
    host, port = address
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "User-Agent: supervisor\r\nConnection: close\r\n\r\n"
    ).encode("ascii", "replace")
    try:
        with socket.create_connection((host, port), timeout=5.0) as connection:
            connection.sendall(request)
            status_line = connection.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return 0
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
