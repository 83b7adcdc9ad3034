"""A FastAPI app for ``fastapi run``: slow (SRV_SLEEP) or broken (SRV_BOOM) at import."""

import os
import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

time.sleep(float(os.environ.get("SRV_SLEEP", "0")))
if os.environ.get("SRV_BOOM"):
    raise RuntimeError("boom at import")

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
def hello() -> str:
    return "hello from the app"


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
