"""An ASGI app whose import takes E2E_IMPORT_S seconds (default 3), like a heavy import.

Every path answers 200 with JSON naming the path and the worker's pid, so a
test can tell the app's answers from the stub's ({"status": "starting"}).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Awaitable, Callable

# Blocking on purpose, at import: uvicorn cannot listen before this returns.
time.sleep(float(os.environ.get("E2E_IMPORT_S", "3")))

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


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
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"] == "/crash":
        os._exit(7)  # a crash after readiness: the process ends at once
    body = json.dumps({"app": True, "path": scope["path"], "pid": os.getpid()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
