"""A real Sentry ingestion endpoint on 127.0.0.1 for tests.

Owns: accepting envelope POSTs at ``/api/<project>/envelope/``, undoing their
compression (gzip, brotli or none), parsing envelopes (header, items,
payloads, attachments included) and keeping them for assertions; misbehaving
on request (HTTP 500, accepting and never answering); a DSN on which nothing
listens. Must not know: what the supervisor puts in an event.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Optional

ENVELOPE_PATH = re.compile(r"^/api/(?P<project>\d+)/envelope/$")
PUBLIC_KEY = "0123456789abcdef0123456789abcdef"
MODES = ("ok", "500", "hang")


@dataclass(frozen=True)
class Item:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type"))

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True)
class Envelope:
    """One received POST: request headers, the decoded body and its parts."""

    project: str
    request_headers: dict[str, str]
    raw: bytes  # decompressed body, for "appears nowhere" assertions
    headers: dict[str, Any]
    items: list[Item] = field(default_factory=list)

    def event(self) -> dict[str, Any]:
        for item in self.items:
            if item.type == "event":
                value: dict[str, Any] = item.json()
                return value
        raise AssertionError(f"no event item in {[i.type for i in self.items]}")

    def attachments(self) -> dict[str, Item]:
        return {str(i.headers.get("filename")): i for i in self.items if i.type == "attachment"}


def decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli

        return bytes(brotli.decompress(body))
    raise ValueError(f"unknown Content-Encoding {encoding!r}")


def parse_envelope(data: bytes) -> tuple[dict[str, Any], list[Item]]:
    """Envelope format: a header line, then per item a header line and a payload
    of ``length`` bytes (or up to the next newline when no length is given)."""
    header_line, _, rest = data.partition(b"\n")
    headers = json.loads(header_line)
    items: list[Item] = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        if not item_line.strip():
            continue
        item_headers = json.loads(item_line)
        length = item_headers.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:]
            if len(payload) != length:
                raise ValueError(f"item shorter than its length {length}")
            if rest.startswith(b"\n"):
                rest = rest[1:]
        items.append(Item(item_headers, payload))
    return headers, items


class Receiver:
    """A threaded HTTP server; use as a context manager or call ``close()``."""

    def __init__(self, mode: str = "ok") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.envelopes: list[Envelope] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._release = threading.Event()  # ends "hang" handlers at close
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sentry-receiver",
            daemon=True,
        )
        self._thread.start()

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/42"

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Envelope]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.envelopes) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(self.envelopes)} envelope(s) after {timeout} s, wanted {count}; "
                        f"errors: {self.errors}"
                    )
                self._changed.wait(remaining)
            return list(self.envelopes)

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, envelope: Optional[Envelope], error: Optional[str]) -> None:
        with self._changed:
            if envelope is not None:
                self.envelopes.append(envelope)
            if error is not None:
                self.errors.append(error)
            self._changed.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                match = ENVELOPE_PATH.match(self.path)
                if match is None:
                    receiver._record(None, f"unexpected path {self.path}")
                    self._answer(404, {"detail": "not found"})
                    return
                if receiver.mode == "hang":
                    # Accept, read, and never answer, like a stuck proxy.
                    receiver._release.wait(60)
                    self.close_connection = True
                    return
                try:
                    raw = decode_body(body, self.headers.get("Content-Encoding", ""))
                    headers, items = parse_envelope(raw)
                except Exception as error:
                    receiver._record(None, f"undecodable envelope: {error!r}")
                    self._answer(400, {"detail": str(error)})
                    return
                envelope = Envelope(
                    project=match.group("project"),
                    request_headers={k.lower(): v for k, v in self.headers.items()},
                    raw=raw,
                    headers=headers,
                    items=items,
                )
                receiver._record(envelope, None)
                if receiver.mode == "500":
                    self._answer(500, {"detail": "internal error"})
                else:
                    self._answer(200, {"id": headers.get("event_id")})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output to what the tests print

        return Handler


@contextlib.contextmanager
def refused_dsn() -> Iterator[str]:
    """A DSN whose port refuses connections: the port is bound (so nobody else
    takes it) but not listening, and Linux answers a SYN there with RST."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://{PUBLIC_KEY}@127.0.0.1:{sock.getsockname()[1]}/42"
    finally:
        sock.close()
