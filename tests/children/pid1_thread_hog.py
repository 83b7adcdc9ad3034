"""An ASGI app that takes every pid its cgroup has left, before it says it is ready.

In lifespan startup it starts threads until the pids limit refuses one, then
keeps taking any pid that comes free (every 5 ms), so that nobody else in the
group (its supervisor) can start a thread. It still serves: ``GET /`` answers
``{"threads": N}``. Run with ``uvicorn --lifespan on``.
"""

import asyncio
import threading

held = threading.Event()
threads = []
keepers = []


def take_what_is_left() -> None:
    while True:
        thread = threading.Thread(target=held.wait, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": the limit
            return
        threads.append(thread)


async def keep_taking() -> None:
    while True:
        take_what_is_left()
        await asyncio.sleep(0.005)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                take_what_is_left()
                keepers.append(asyncio.get_running_loop().create_task(keep_taking()))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                held.set()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b'{"threads": %d}' % len(threads)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
