"""Accept one client on the listening socket inherited as fd argv[1], greet it, exit."""

from __future__ import annotations

import socket
import sys

listener = socket.socket(fileno=int(sys.argv[1]))
listener.setblocking(True)
client, _ = listener.accept()
with client:
    client.sendall(b"hello from the namespace\n")
