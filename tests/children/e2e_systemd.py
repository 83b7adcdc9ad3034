"""A small asyncio HTTP server that takes its socket by systemd's protocol.

It reads LISTEN_FDS/LISTEN_PID, serves on fd 3 with asyncio (so the listener
sits in an epoll set, as in any event-loop server) and answers every request
with JSON naming its pid, LISTEN_PID and LISTEN_FDNAMES. Exits 3 when the
variables are not meant for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket

FIRST_FD = 3


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    facts = {
        "app": True,
        "pid": os.getpid(),
        "listen_pid": os.environ.get("LISTEN_PID"),
        "listen_fds": os.environ.get("LISTEN_FDS"),
        "names": os.environ.get("LISTEN_FDNAMES", ""),
    }
    body = json.dumps(facts).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    writer.close()


async def serve() -> None:
    listener = socket.socket(fileno=FIRST_FD)
    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main() -> int:
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return 3
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
