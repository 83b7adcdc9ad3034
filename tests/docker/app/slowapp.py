"""The app the Docker tests run: a slow import that the test ends, and a route that allocates.

Its import blocks until the file named by SLOWAPP_RELEASE exists (default
/tmp/release; the test creates it with `docker exec`) or SLOWAPP_WAIT_S
seconds pass (default 300), like a heavy import or a remote call at start-up.
Every path answers 200 with {"app": true, "path": ...}; /allocate grows the
process by 16 MiB steps, each page written, until the kernel says no.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Awaitable, Callable

_release = os.environ.get("SLOWAPP_RELEASE", "/tmp/release")
_deadline = time.monotonic() + float(os.environ.get("SLOWAPP_WAIT_S", "300"))
while not os.path.exists(_release) and time.monotonic() < _deadline:
    time.sleep(0.05)  # blocking on purpose: uvicorn cannot listen before this returns

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_held: list[bytes] = []


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/allocate":
        while True:
            _held.append(b"x" * (16 << 20))
    body = json.dumps({"app": True, "path": scope["path"]}).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
