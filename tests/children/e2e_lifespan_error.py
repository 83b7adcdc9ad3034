"""An ASGI app whose lifespan startup fails: the database is not reachable."""

from __future__ import annotations

from typing import Any


def connect_database() -> None:
    raise RuntimeError("could not connect to the database at db:5432")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        if message["type"] == "lifespan.startup":
            connect_database()
