"""After hand-off, one look at the app from outside: does it serve the health path?

Owns: one plain HTTP/1.1 request to the app, driven by the loop's reactor
(a non-blocking socket, no thread), and the warning when it answers 404 (the
platform's check would then fail).
Must not know: the loop's state.

The app's address is the listener's own numeric address: connecting to it
needs no name lookup (which would load the IDNA codec), and running on the
reactor needs no thread. The supervisor holds this module for the app's
whole life, so it imports nothing more than the loop already has.
"""

from __future__ import annotations

import errno
import socket

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .log import Logger
    from .reactor import Reactor, Timer

# An app that has not answered by then is busy: the check is not worth a wait.
ANSWER_WITHIN_S = 5.0
_ENOUGH = 64  # the status line fits


def warn_if_health_path_missing(
    reactor: Reactor, log: Logger, address: tuple[str, int], health_path: str
) -> None:
    """Ask the app for ``health_path``; warn on a 404."""

    def on_status(status: int) -> None:
        if status == 404:
            log.warning(
                f"the app answers 404 on {health_path}: the platform's health check will "
                "fail now that the app owns the port (point the check, or --health-path, "
                "at a path the app serves)"
            )

    try:
        StatusRequest(reactor, address, health_path, on_status).start()
    except OSError as error:  # EMFILE: no socket to spare
        log.warning(f"cannot check the app's {health_path} ({error.strerror or error}); "
                    "skipped")


def request_bytes(host: str, port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "User-Agent: supervisor\r\nConnection: close\r\n\r\n"
    ).encode("ascii", "replace")


def status_in(head: bytes) -> int:
    """The status code in a response's first bytes, or 0 when there is none."""
    parts = head.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


class StatusRequest:
    """``GET path`` to a numeric address; ``on_status`` gets the code, 0 for no answer."""

    def __init__(self, reactor: Reactor, address: tuple[str, int], path: str,
                 on_status: Callable[[int], None]) -> None:
        self._reactor = reactor
        self._address = address
        self._request = request_bytes(address[0], address[1], path)
        self._on_status = on_status
        self._received = b""
        self._socket: Optional[socket.socket] = None
        self._timer: Optional[Timer] = None

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        self._socket = sock
        code = sock.connect_ex(self._address)
        if code not in (0, errno.EINPROGRESS):
            self._end()
            return
        self._timer = self._reactor.call_later(ANSWER_WITHIN_S, self._end)
        self._reactor.add_writer(sock.fileno(), self._on_connected)

    def _on_connected(self) -> None:
        sock = self._socket
        assert sock is not None
        self._reactor.remove_writer(sock.fileno())
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                raise ConnectionRefusedError
            sock.send(self._request)  # far below a socket buffer: sent whole
        except OSError:
            self._end()
            return
        self._reactor.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self._socket is not None
        try:
            chunk = self._socket.recv(_ENOUGH)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self._received += chunk
        if chunk and b"\r\n" not in self._received and len(self._received) < _ENOUGH:
            return  # the status line is not whole yet
        self._end()

    def _end(self) -> None:
        """Report what came (0 for nothing) and let go of everything, once."""
        sock, self._socket = self._socket, None
        if sock is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._reactor.remove_reader(sock.fileno())
        self._reactor.remove_writer(sock.fileno())
        sock.close()
        self._on_status(status_in(self._received))
