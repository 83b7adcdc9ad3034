"""The public listening socket: bound by the supervisor before the child starts.

Owns: binding the public address with the options the hand-off needs, and
the loopback address through which the supervisor reaches it itself.
Must not know: HTTP or the child. It is on the path from exec to spawning
the child, so it imports ``socket`` and nothing heavy.
"""

from __future__ import annotations

import socket


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on the public address; raise ``OSError`` as the OS reports it.

    TCP_NODELAY is set on the listener because accepted sockets inherit it and
    uvicorn's ``--fd`` path never sets it (every keep-alive answer would wait
    for the peer's delayed ACK, about 40 ms). The socket is non-inheritable: the
    loop places it into the child explicitly.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    infos = socket.getaddrinfo(
        name or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(max(1024, socket.SOMAXCONN))
        sock.setblocking(False)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock


def loopback_address(listener: socket.socket) -> tuple[str, int]:
    """The address to connect to the listener from this host (for ``hand_off``).

    A wildcard bind (``0.0.0.0`` or ``::``) is reached through the loopback.
    """
    address = listener.getsockname()
    host, port = str(address[0]), int(address[1])
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port
