"""A server that takes fd 3 by systemd's protocol and waits with poll(2), not epoll.

The socket stays non-blocking and is never put in an epoll set, so readiness
from /proc cannot see it. Every request gets JSON naming the server's pid.
"""

from __future__ import annotations

import json
import os
import selectors
import socket

FIRST_FD = 3


def answer(client: socket.socket) -> None:
    client.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        if not chunk:
            return
        data += chunk
    body = json.dumps({"app": True, "pid": os.getpid()}).encode()
    client.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )


def main() -> int:
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return 3
    listener = socket.socket(fileno=FIRST_FD)
    listener.settimeout(0.0)
    selector = selectors.PollSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        selector.select()
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            continue  # the supervisor's stub took it
        with client:
            answer(client)


if __name__ == "__main__":
    raise SystemExit(main())
