"""ASGI apps that fail at start the ways deployments do; FAIL picks one (none: healthy).

FAIL=import: a module that is not installed; FAIL=oom: ALLOC_MB of memory at
import; FAIL=silent: exit 1 at import without a word; FAIL=settings: a
variable read at import (DATABASE_URL).
"""

import os
import sys

FAIL = os.environ.get("FAIL", "")

if FAIL == "import":
    import twilio_client_missing_for_tests  # noqa: F401
elif FAIL == "oom":
    chunks = []
    for _ in range(int(os.environ.get("ALLOC_MB", "400"))):
        chunks.append(bytearray(b"x" * (1 << 20)))  # written, so really resident
elif FAIL == "silent":
    sys.stdout.flush()
    os._exit(1)
elif FAIL == "settings":
    DATABASE_URL = os.environ["DATABASE_URL"]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
