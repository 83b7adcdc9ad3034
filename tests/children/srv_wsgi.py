"""A WSGI app for gunicorn's sync workers: slow (SRV_SLEEP) or broken (SRV_BOOM) at import."""

import os
import time

time.sleep(float(os.environ.get("SRV_SLEEP", "0")))
if os.environ.get("SRV_BOOM"):
    raise RuntimeError("boom at import")


def app(environ, start_response):  # type: ignore[no-untyped-def]
    healthz = environ["PATH_INFO"] == "/healthz"
    body = b'{"status":"ok"}' if healthz else b"hello from the app"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
