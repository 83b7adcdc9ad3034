"""An app that fetches its configuration at import from CONFIG_PORT on 127.0.0.1."""

import os
import socket


def fetch_remote_config() -> bytes:
    with socket.create_connection(("127.0.0.1", int(os.environ["CONFIG_PORT"])), timeout=2) as c:
        return c.recv(100)


CONFIG = fetch_remote_config()


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    raise RuntimeError("never served")
