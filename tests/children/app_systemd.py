"""A minimal server that takes its socket by systemd's protocol (LISTEN_FDS, fd 3).

It answers every request with JSON saying its pid and what it read from the
environment, and exits 3 when the variables are not meant for it.
"""

from __future__ import annotations

import json
import os
import socket

FIRST_FD = 3


def main() -> int:
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return 3
    listener = socket.socket(fileno=FIRST_FD)
    facts = {
        "pid": os.getpid(),
        "listen_pid": os.environ["LISTEN_PID"],
        "names": os.environ.get("LISTEN_FDNAMES", ""),
    }
    body = json.dumps(facts).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    listener.setblocking(True)
    while True:
        client, _ = listener.accept()
        with client:
            client.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
            client.sendall(head + body)


if __name__ == "__main__":
    raise SystemExit(main())
