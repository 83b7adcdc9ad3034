"""The public listening socket: bound by the supervisor before the child starts.

Owns: binding the public address (TCP, or the unix socket a command names)
with the options the hand-off needs, the address through which the
supervisor reaches it itself, and how it is named in lines.
Must not know: HTTP or the child. It is on the path from exec to spawning
the child, so it imports ``socket`` and nothing heavy.
"""

from __future__ import annotations

import os
import socket
import stat

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .handoff import HandoffPlan

# What uvicorn gives its --uds socket file: anyone on the host may connect.
UNIX_SOCKET_MODE = 0o666


def bind_public(plan: HandoffPlan) -> Optional[socket.socket]:
    """The socket the plan's stub answers on (None when it has no stub); OSError as raised."""
    if plan.unix_path is not None:
        return bind_unix_listener(plan.unix_path)
    if plan.stub_address is None:
        return None
    return bind_listener(*plan.stub_address)


def plan_address_text(plan: HandoffPlan) -> str:
    if plan.unix_path is not None:
        return f"unix:{plan.unix_path}"
    assert plan.stub_address is not None
    host, port = plan.stub_address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_unix_listener(path: str) -> socket.socket:
    """Bind and listen on a unix socket at ``path``, replacing a stale socket file there.

    A file that is not a socket is left alone (bind fails with EADDRINUSE).
    """
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    def bind(sock: socket.socket) -> None:
        sock.bind(path)
        os.chmod(path, UNIX_SOCKET_MODE)

    return _listening(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), bind)


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on the public address; raise ``OSError`` as the OS reports it.

    TCP_NODELAY is set on the listener because accepted sockets inherit it and
    uvicorn's ``--fd`` path never sets it (every keep-alive answer would wait
    for the peer's delayed ACK, about 40 ms). The socket is non-inheritable: the
    loop places it into the child explicitly.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    # An ASCII host as bytes: a str makes getaddrinfo import the IDNA codec (and re),
    # about 4 ms before the spawn.
    wire: str | bytes | None = name.encode("ascii") if name.isascii() else name
    infos = socket.getaddrinfo(
        wire or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]

    def bind(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)

    return _listening(socket.socket(family, kind, proto), bind)


def _listening(sock: socket.socket, bind: Callable[[socket.socket], None]) -> socket.socket:
    """``bind(sock)``, then listen, non-blocking and not inherited; closed on any failure."""
    try:
        bind(sock)
        sock.listen(max(1024, socket.SOMAXCONN))
        sock.setblocking(False)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock


def loopback_address(listener: socket.socket) -> tuple[str, int]:
    """The address to connect to a TCP listener from this host (for ``hand_off``).

    A wildcard bind (``0.0.0.0`` or ``::``) is reached through the loopback.
    """
    address = listener.getsockname()
    host, port = str(address[0]), int(address[1])
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def is_unix(listener: socket.socket) -> bool:
    return listener.family == socket.AF_UNIX


def address_text(listener: socket.socket) -> str:
    """``0.0.0.0:8000``, ``[::]:8000`` or ``unix:/run/app.sock``, for the supervisor's lines."""
    address = listener.getsockname()
    if isinstance(address, (str, bytes)):
        return f"unix:{os.fsdecode(address)}"
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
