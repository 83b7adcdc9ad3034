"""HTTP/1.1 on the wire for the health stub: request heads in, responses out.

Owns: where a request head ends, parsing it into a ``Request`` (or a
``Reject`` carrying the status it deserves), and rendering the stub's small
JSON responses. Pure functions over bytes.
Must not know: sockets, clocks, connections, the stub's phases or paths, the app.

It is imported right after the child is spawned, before the stub's first
answer, so it imports nothing that costs (no ``re``, ``json``, ``typing`` or
``dataclasses``): ``bytes.find`` and ``bytes.translate`` scan in C.
``tests/unit/test_http_wire.py`` checks it against h11 (the parser uvicorn
uses) and names every place where it is stricter or more lenient, and why.
"""

from __future__ import annotations

from supervisor.values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Optional, Union

# A request head (request line, header fields and the blank line) longer than
# this is refused: 431, or 414 when the request line alone is too long. 8 KiB is
# what nginx and Apache accept by default; health checkers send a few hundred bytes.
MAX_HEAD_BYTES = 8 * 1024
# Content-Length values of more digits are refused: 18 digits always fit in 63 bits.
MAX_LENGTH_DIGITS = 18

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# RFC 9110 token characters; visible ASCII (a request target); what a field
# value may hold (tab, space, visible ASCII, obs-text). ``bytes.translate`` with
# one of these as the deleted set leaves exactly the characters it does not allow.
_TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VISIBLE = bytes(range(0x21, 0x7F))
_VALUE_CHARS = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))


@frozen
class Request:
    """One request head, parsed: what the stub acts on, and the fields as sent."""

    method: bytes
    target: bytes
    path: str  # the target's path, without query or fragment
    version: bytes  # b"1.0", b"1.1" (the major version is always 1)
    headers: tuple[tuple[bytes, bytes], ...]  # (lower-cased name, value without outer blanks)
    keep_alive: bool
    content_length: int
    chunked: bool  # the body is chunked: its end is not known from the head
    head_bytes: int  # the head's length on the wire, its blank line included

    @property
    def http11(self) -> bool:
        return self.version != b"1.0"


@frozen
class Reject:
    """A request head the stub refuses, with the status it answers and why."""

    status: int
    reason: str


def skip_empty_lines(buffer: bytearray) -> None:
    """Drop the empty lines a client may send before a request line (RFC 9112, 2.2)."""
    start = 0
    while True:
        if buffer[start : start + 1] == b"\n":
            start += 1
        elif buffer[start : start + 2] == b"\r\n":
            start += 2
        else:
            break
    if start:
        del buffer[:start]


def read_request(buffer: Union[bytes, bytearray]) -> Union[Request, Reject, None]:
    """The request whose head starts ``buffer``; None while the head is incomplete."""
    end = head_end(buffer, MAX_HEAD_BYTES)
    if end < 0:
        if len(buffer) < MAX_HEAD_BYTES:
            return None
        if b"\n" in buffer[:MAX_HEAD_BYTES]:
            return Reject(431, "request head too large")
        return Reject(414, "request line too long")
    return parse_head(bytes(buffer[:end]))


def head_end(buffer: Union[bytes, bytearray], limit: int) -> int:
    """The offset just past the blank line ending a head (``\\n\\r?\\n``), or -1.

    Only the first ``limit`` bytes are searched.
    """
    bare = buffer.find(b"\n\n", 0, limit)
    crlf = buffer.find(b"\n\r\n", 0, limit)
    if crlf >= 0 and (bare < 0 or crlf < bare):
        return crlf + 3
    return bare + 2 if bare >= 0 else -1


def parse_head(head: bytes) -> Union[Request, Reject]:
    """Parse a whole head: request line, header lines and the blank line."""
    lines = head.split(b"\n")
    del lines[-2:]  # the blank line
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    first = _request_line(lines[0]) if lines else None
    if first is None:
        return Reject(400, "malformed request line")
    method, target, version = first
    if version[:1] != b"1":
        return Reject(505, "not HTTP/1.x")
    headers: list[tuple[bytes, bytes]] = []
    connection: list[bytes] = []
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    for line in lines[1:]:
        raw_name, colon, raw_value = line.partition(b":")
        value = raw_value.strip(b" \t")
        # A continuation line (obs-fold) or a blank before the colon makes the
        # name no token: both are refused, as request-smuggling vectors.
        if not colon or not _is_token(raw_name) or value.translate(None, _VALUE_CHARS):
            return Reject(400, "malformed header field")
        name = raw_name.lower()
        headers.append((name, value))
        if name == b"connection":
            connection.extend(token.strip().lower() for token in value.split(b","))
        elif name == b"content-length":
            lengths.add(value)
        elif name == b"transfer-encoding":
            codings.extend(token.strip().lower() for token in value.split(b","))
    content_length = 0
    if lengths:
        length = lengths.pop()
        # Two lengths, or a length beside a transfer coding, make the body's end
        # ambiguous: the classic smuggling request.
        if lengths or codings or not length.isdigit() or len(length) > MAX_LENGTH_DIGITS:
            return Reject(400, "bad Content-Length")
        content_length = int(length)
    if codings and codings[-1] != b"chunked":
        return Reject(400, "body length unknown: chunked is not the last transfer coding")
    http11 = version != b"1.0"
    keep_alive = b"close" not in connection and (http11 or b"keep-alive" in connection)
    return Request(
        method, target, path_of(target), version, tuple(headers), keep_alive,
        content_length, bool(codings), len(head),
    )


def _is_token(data: bytes) -> bool:
    return bool(data) and not data.translate(None, _TOKEN_CHARS)


def _request_line(line: bytes) -> Optional[tuple[bytes, bytes, bytes]]:
    """``METHOD SP TARGET SP HTTP/D.D``: (method, target, b"D.D"), or None."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if not _is_token(method) or not target or target.translate(None, _VISIBLE):
        return None
    if (
        len(version) != 8
        or not version.startswith(b"HTTP/")
        or version[6:7] != b"."
        or not version[5:6].isdigit()
        or not version[7:8].isdigit()
    ):
        return None
    return method, target, version[5:]


def path_of(target: bytes) -> str:
    """The path of a request target, origin or absolute form, without query or fragment."""
    text = target.decode("ascii", "replace")
    if "://" in text:
        after = text.split("://", 1)[1]
        slash = after.find("/")
        text = after[slash:] if slash >= 0 else "/"
    return text.split("?", 1)[0].split("#", 1)[0]


def json_object(payload: dict[str, str]) -> bytes:
    """A flat JSON object of strings, as ``json.dumps`` writes it with compact separators."""

    def quote(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(
            c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped
        ) + '"'

    inner = ",".join(f"{quote(key)}:{quote(value)}" for key, value in payload.items())
    return ("{" + inner + "}").encode("utf-8")


def response(
    status: int,
    payload: dict[str, str],
    *,
    head_only: bool = False,
    close: bool = True,
    keep_alive_header: bool = False,
    retry_after_s: int = 0,
    allow: str = "",
) -> bytes:
    """A whole response with a JSON body (only its head for HEAD requests).

    ``close`` says ``Connection: close``; ``keep_alive_header`` says
    ``Connection: keep-alive`` to an HTTP/1.0 client that asked for it.
    ``retry_after_s`` (when not 0) and ``allow`` add those headers.
    """
    body = json_object(payload) + b"\n"
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
    ]
    if retry_after_s:
        lines.append(f"Retry-After: {retry_after_s}")
    if allow:
        lines.append(f"Allow: {allow}")
    if close:
        lines.append("Connection: close")
    elif keep_alive_header:
        lines.append("Connection: keep-alive")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data if head_only else data + body
