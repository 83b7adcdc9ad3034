"""An ASGI app that hangs at import in a blocking call that never returns."""

from __future__ import annotations

import time
from typing import Any


def fetch_remote_config() -> dict[str, Any]:
    time.sleep(600)  # HANG: a network call at import that never answers
    return {}


CONFIG = fetch_remote_config()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise RuntimeError("never reached")
