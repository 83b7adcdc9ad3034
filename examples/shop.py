"""A small ASGI app to try the supervisor on, with the failures people meet.

    SHOP_FAIL=import   a module imported at start-up is missing (the classic)
    SHOP_FAIL=env      a required environment variable is not set
    SHOP_FAIL=memory   start-up loads far more data than the instance has
    SHOP_FAIL=slow     start-up takes 3 s (a slow import or remote call)
    SHOP_FAIL=cpu      start-up computes for 8 CPU-seconds (fine on a laptop, not on 0.25 vCPU)
"""

import os
import time

FAIL = os.environ.get("SHOP_FAIL", "")

if FAIL == "import":
    from shop_payments import charge  # noqa: F401  (there is no such module)
if FAIL == "env":
    DATABASE_URL = os.environ["SHOP_DATABASE_URL"]
if FAIL == "slow":
    time.sleep(3)


def build_search_index(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        sum(range(1000))


if FAIL == "cpu":
    build_search_index(8.0)

_cache: list = []


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if FAIL == "memory":
                    # Grow by 50 MB steps, as a catalogue loaded into memory would.
                    while True:
                        _cache.append(bytearray(50 << 20))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b'{"shop": "open"}'
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    })
    await send({"type": "http.response.body", "body": body})
