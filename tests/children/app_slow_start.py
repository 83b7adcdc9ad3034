"""A tiny ASGI app whose lifespan startup takes APP_STARTUP_S seconds (default 1).

Every path answers 200 with JSON naming the path, the method, the body length
and the worker's pid, so a test can tell the app's answers from the stub's.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Awaitable, Callable

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Blocking on purpose: like a slow import or a blocking call at startup.
                time.sleep(float(os.environ.get("APP_STARTUP_S", "1")))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps(
        {
            "app": True,
            "path": scope["path"],
            "method": scope["method"],
            "body_bytes": size,
            "pid": os.getpid(),
        }
    ).encode()
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
