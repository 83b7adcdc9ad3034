"""A plain ASGI app for the server matrix: slow (SRV_SLEEP) or broken (SRV_BOOM) at import."""

import os
import time

time.sleep(float(os.environ.get("SRV_SLEEP", "0")))
if os.environ.get("SRV_BOOM"):
    raise RuntimeError("boom at import")


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
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
    healthz = scope["path"] == "/healthz"
    body = b'{"status":"ok"}' if healthz else b"hello from the app"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json" if healthz else b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
