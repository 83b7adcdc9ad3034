"""A minimal ASGI app for the bench: no framework, so the figures are uvicorn's and ours.

``BENCH_IMPORT_SLEEP`` (seconds) makes the import slow, like an app that loads
a model or calls a remote service before it can serve.
"""

from __future__ import annotations

import os
import time
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_IMPORT_SLEEP_S = float(os.environ.get("BENCH_IMPORT_SLEEP", "0") or "0")
if _IMPORT_SLEEP_S > 0:
    time.sleep(min(_IMPORT_SLEEP_S, 60.0))

# The body says who answered: the supervisor's stub says "starting".
_HEALTH = b'{"status":"ok","from":"app"}'
_HELLO = b"hello from the app\n"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        # Speak the lifespan protocol so that uvicorn's startup is complete
        # (and the socket registered for readiness) as in a real app.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        body, kind = _HEALTH, b"application/json"
    else:
        body, kind = _HELLO, b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
