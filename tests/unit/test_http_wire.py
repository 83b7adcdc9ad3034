"""The stub's request-head parser against h11 (the parser uvicorn uses), and its responses.

For every generated head, valid or not, the parser and h11 must both accept
or both refuse, with the same method, target, version and header fields. The
places where the stub differs from h11 on purpose are each written out below,
with the reason; everything else is h11's verdict.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Union

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from supervisor import http_wire as wire

ROOT = Path(__file__).resolve().parents[2]
BLANK_LINE = re.compile(rb"\n\r?\n")  # where h11 (and RFC 9112) ends a head
CTL = set(range(0x00, 0x09)) | set(range(0x0A, 0x20)) | {0x7F}
# Header names the oracle renames before h11 sees them (see ``h11_reads``).
ORACLE_HOST = b"x-oracle-host"
ORACLE_TE = b"x-oracle-transfer-encoding"
ORACLE_HOST_LINE = b"Host: oracle.invalid\r"


# -- generated heads -------------------------------------------------------------------
@st.composite
def usually(draw: st.DrawFn, valid: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> str:
    """``valid`` 19 times in 20, else ``odd``: most heads get far enough to test every field."""
    return draw(valid if draw(st.integers(0, 19)) else odd)


_token = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                 min_size=1, max_size=10)
_visible = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
_methods = usually(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "M-SEARCH", "get"]) | _token,
    st.sampled_from(["G T", "", "G\x00T", "GE(T", "GET\t", "G\u00e9T"]) | st.text(max_size=6),
)
_targets = usually(
    st.sampled_from(["/", "/healthz", "/healthz?probe=1", "/x#frag", "*", "example.com:443",
                     "http://example.com/healthz", "http://example.com",
                     "HTTP://EXAMPLE.COM:80/a?b"]) | _visible,
    st.sampled_from(["/a b", "/\x7f", "/\x80", "", "/\u00e9", "/\t"]) | st.text(max_size=10),
)
_versions = usually(
    st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.9"]),
    st.sampled_from(["HTTP/2.0", "HTTP/0.9", "HTTP/9.9", "HTTP/1.10", "http/1.1", "HTTP/1",
                     "HTTP/1.1 ", "HTTP/x.y", "HTTP/\u0661.\u0661", "HTTPS/1.1", ""]),
)
_names = usually(
    st.sampled_from(["Host", "HOST", "Content-Length", "content-length", "Transfer-Encoding",
                     "Connection", "X-Custom"]) | _token,
    st.sampled_from(["Bad Name", "", "Name ", " Name", "na\x00me", "\u00e9"])
    | st.text(max_size=8),
)
_values = usually(
    st.sampled_from(["", "t", "example.com", "5", "0", "05", "5, 5", "5,6", "-1", "+5", " 5 ",
                     "1" * 18, "1" * 19, "1" * 21, "chunked", "Chunked", "gzip, chunked",
                     "chunked, gzip", "chunked,", "gzip", "close", "keep-alive",
                     "Keep-Alive, Upgrade", "close, keep-alive", "a\tb", " padded\t",
                     "\x80\xff", "\u0661"]) | _visible,
    st.sampled_from(["a\x01b", "a\rb", "a\x0bb", "a\x0cb", "a\x00b", "a\x7fb", "a\x1fb"])
    | st.text(max_size=30),
)
_separators = usually(st.sampled_from([": ", ":", ":\t", ": \t "]), st.sampled_from([" : ", ""]))
_fields = st.tuples(_names, _separators, _values)
# Fields whose meaning the stub acts on, or which h11 and the stub treat differently.
_meaningful = st.sampled_from([
    ("Connection", ": ", "close"), ("Connection", ": ", "keep-alive"),
    ("connection", ":", "Keep-Alive, Close"), ("Connection", ": ", "upgrade"),
    ("Content-Length", ": ", "5"), ("Content-Length", ": ", "5, 5"),
    ("Content-Length", ": ", "1" * 19), ("Content-Length", ": ", "007"),
    ("Transfer-Encoding", ": ", "chunked"), ("Transfer-Encoding", ": ", "gzip, chunked"),
    ("Transfer-Encoding", ": ", "chunked, gzip"), ("transfer-encoding", ":", "CHUNKED"),
    ("Host", ": ", "example.com"), ("X-Ctl", ": ", "a\x01b"), ("X-Del", ": ", "a\x7fb"),
    ("X-Tab", ":", "\ta\tb\t"),
])
_endings = usually(st.just("\r\n"), st.sampled_from(["\n", "\r\r\n", "\r"]))


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head, mostly well formed, with the faults servers meet in the wild."""
    ending = draw(_endings)
    mixed = draw(st.booleans())  # one line ending per line, or one for the whole head

    def end() -> str:
        return draw(_endings) if mixed else ending

    if draw(st.integers(0, 5)) == 0:  # empty lines before the request line
        text = draw(st.sampled_from(["\r\n", "\n", "\r\n\r\n", "\n\r\n"]))
    else:
        text = ""
    text += f"{draw(_methods)} {draw(_targets)} {draw(_versions)}{end()}"
    fields = draw(st.lists(_fields, max_size=6)) + draw(st.lists(_meaningful, max_size=3))
    for name, separator, value in draw(st.permutations(fields)):
        text += f"{name}{separator}{value}{end()}"
        if draw(st.integers(0, 19)) == 0:  # obsolete line folding
            text += draw(st.sampled_from([" folded", "\tfolded", " ", "\t"])) + end()
    if draw(st.integers(0, 9)) == 0:
        # Around the size limit: the whole head lands just under or over it.
        size = draw(st.integers(wire.MAX_HEAD_BYTES - 100, wire.MAX_HEAD_BYTES + 100))
        text += "X-Big: " + "a" * max(0, size - len(text) - 11) + "\r\n"
    text += draw(usually(st.sampled_from(["\r\n", "\n"]), st.just("")))  # "": incomplete
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A generated head with bytes inserted, deleted or replaced."""
    data = bytearray(draw(heads()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 2))
        if action == 0:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == 1:
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.sampled_from(
                [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\x00", b"\r\n\r\n", b"\xff", b","]
            ))
    return bytes(data)


any_head = st.one_of(heads(), heads(), heads(), mutated(), st.binary(max_size=300))


# -- the oracle --------------------------------------------------------------------------
class Refused:
    def __init__(self, error: h11.RemoteProtocolError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Refused({self.error})"


def h11_reads(data: bytes) -> Union[h11.Request, Refused, type[h11.NEED_DATA]]:
    """h11's first event for ``data`` as a server receives it."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=len(data) + 1)
    if data:  # no bytes would mean the end of the stream
        connection.receive_data(data)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError as error:
        return Refused(error)
    assert isinstance(event, h11.Request) or event is h11.NEED_DATA, event
    return event


def h11_keeps_alive(data: bytes) -> bool:
    """Whether h11 would keep the connection open after answering this request."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=len(data) + 1)
    connection.receive_data(data)
    assert isinstance(connection.next_event(), h11.Request)
    connection.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
    connection.send(h11.EndOfMessage())
    return connection.our_state is h11.DONE


def field_lines(head: bytes) -> list[bytes]:
    """The header lines of a whole head, line endings removed (as RFC 9112 and h11 split)."""
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    return lines[1:-2]


def rename_for_h11(head: bytes) -> bytes:
    """The head with its Host and Transfer-Encoding fields renamed, and one Host added.

    Two deliberate differences, taken out of h11's verdict here and checked
    on their own in ``stub_refuses``:
    - h11 requires exactly one Host field in HTTP/1.1 (RFC 9112, 3.2). The stub
      does not route by host, and health checkers and load balancers are not all
      careful about it: it answers without one, and with two.
    - h11 supports only ``Transfer-Encoding: chunked``, once. The stub only needs
      to know where the body ends: any list of codings whose last is chunked.
    """
    lines = head.split(b"\n")
    for index in range(1, len(lines) - 2):
        name, colon, rest = lines[index].partition(b":")
        if colon and name.lower() == b"host":
            lines[index] = ORACLE_HOST + b":" + rest
        elif colon and name.lower() == b"transfer-encoding":
            lines[index] = ORACLE_TE + b":" + rest
    lines.insert(len(lines) - 2, ORACLE_HOST_LINE)
    return b"\n".join(lines)


def fields_from_h11(event: h11.Request) -> list[tuple[bytes, bytes]]:
    """h11's fields with the oracle's renaming undone."""
    fields = list(event.headers)
    assert fields[-1] == (b"host", ORACLE_HOST_LINE[6:-1])
    names = {ORACLE_HOST: b"host", ORACLE_TE: b"transfer-encoding"}
    return [(names.get(name, name), value) for name, value in fields[:-1]]


def stub_refuses(head: bytes, event: h11.Request) -> Optional[int]:
    """The status the stub answers for a head h11 accepts, when it is stricter on purpose."""
    # HTTP/2.0 and HTTP/0.9 heads parse as HTTP/1 grammar in h11; the stub says
    # 505 at once (an h2c preface or a confused client must not be held for the app).
    if event.http_version[:1] != b"1":
        return 505
    lines = field_lines(head)
    # Obsolete line folding: h11 joins the lines; RFC 9112 (5.2) lets a server
    # refuse instead, and refusing leaves no doubt about where a field ends.
    if any(line[:1] in (b" ", b"\t") for line in lines):
        return 400
    # Control characters in a value: h11 takes all but NUL, CR, LF, VT and FF;
    # RFC 9110 (5.5) allows none but tab.
    if any(CTL & set(value) - {0x09} for _, value in event.headers):
        return 400
    fields = [(name.lower(), value.strip(b" \t")) for name, _, value in
              (line.partition(b":") for line in lines)]
    lengths = {value for name, value in fields if name == b"content-length"}
    codings = [token.strip().lower() for name, value in fields
               if name == b"transfer-encoding" for token in value.split(b",")]
    # Content-Length: h11 takes "5, 5" and up to 20 digits; the stub takes the
    # same plain number repeated, of 18 digits at most (it fits in 63 bits).
    if len(lengths) > 1 or any(not value.isdigit() or len(value) > 18 for value in lengths):
        return 400
    # Content-Length beside Transfer-Encoding: h11 lets the coding win; the stub
    # refuses, as RFC 9112 (6.1) allows: it is how requests are smuggled.
    if codings and (lengths or codings[-1] != b"chunked"):
        return 400
    return None


def without_repeated_lengths(fields: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """h11 keeps one of several equal Content-Length fields; so does this."""
    seen = False
    kept = []
    for name, value in fields:
        if name == b"content-length":
            if seen:
                continue
            seen = True
        kept.append((name, value))
    return kept


def check_against_h11(raw: bytes) -> None:
    buffer = bytearray(raw)
    # Empty lines before the request line: RFC 9112 (2.2) asks servers to skip
    # them (some clients send CRLF after a POST body); h11 refuses them.
    wire.skip_empty_lines(buffer)
    data = bytes(buffer)
    ours = wire.read_request(data)
    blank = BLANK_LINE.search(data)
    end = blank.end() if blank else None
    if end is None or end > wire.MAX_HEAD_BYTES:
        # The stub refuses heads over 8 KiB; h11 only bounds an incomplete one
        # (its max_incomplete_event_size, 16 KiB by default).
        if len(data) >= wire.MAX_HEAD_BYTES or end is not None:
            assert isinstance(ours, wire.Reject) and ours.status in (414, 431), ours
            return
        assert ours is None, ours
        theirs = h11_reads(data)
        # h11 refuses at once a buffer whose first byte cannot start a request
        # line (a TLS hello); the stub decides on whole heads only and its head
        # deadline bounds the wait.
        if isinstance(theirs, Refused):
            assert data[0] < 0x21, theirs
        else:
            assert theirs is h11.NEED_DATA
        return
    head = data[:end]
    theirs = h11_reads(rename_for_h11(head))
    if isinstance(theirs, Refused):
        assert isinstance(ours, wire.Reject), (ours, theirs)
        return
    assert isinstance(theirs, h11.Request), theirs
    refusal = stub_refuses(head, theirs)
    if refusal is not None:
        assert isinstance(ours, wire.Reject) and ours.status == refusal, (ours, theirs)
        return
    assert isinstance(ours, wire.Request), (ours, theirs)
    assert ours.method == theirs.method
    assert ours.target == theirs.target
    assert ours.version == theirs.http_version
    assert without_repeated_lengths(ours.headers) == fields_from_h11(theirs)
    assert ours.head_bytes == end
    length = dict(theirs.headers).get(b"content-length")
    assert ours.content_length == (int(length) if length is not None else 0)
    if ours.http11:
        assert ours.keep_alive == h11_keeps_alive(rename_for_h11(head))
    else:
        # HTTP/1.0: h11 always closes; the stub keeps a connection that asked
        # for keep-alive (health checkers that reuse connections do).
        assert not h11_keeps_alive(rename_for_h11(head))
        tokens = [token.strip().lower() for name, value in ours.headers if name == b"connection"
                  for token in value.split(b",")]
        assert ours.keep_alive == (b"keep-alive" in tokens and b"close" not in tokens)


@settings(max_examples=1000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(any_head)
@example(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n")  # a stray CR before the blank line
@example(b"\r\n\r\nGET / HTTP/1.0\nConnection: keep-alive\n\n")
@example(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n")
@example(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
@example(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
@example(b"GET http://example.com/healthz?x=1 HTTP/1.1\r\n\r\n")
def test_parser_agrees_with_h11(raw: bytes) -> None:
    check_against_h11(raw)


# -- examples ----------------------------------------------------------------------------
def test_a_health_check_parses() -> None:
    request = wire.read_request(b"GET /healthz?probe=1 HTTP/1.1\r\nHost: t\r\n\r\nnext")
    assert request == wire.Request(
        method=b"GET", target=b"/healthz?probe=1", path="/healthz", version=b"1.1",
        headers=((b"host", b"t"),), keep_alive=True, content_length=0, chunked=False,
        head_bytes=len(b"GET /healthz?probe=1 HTTP/1.1\r\nHost: t\r\n\r\n"),
    )


def test_an_incomplete_head_waits() -> None:
    assert wire.read_request(b"GET /healthz HTTP/1.1\r\nHost: t\r\n") is None
    assert wire.read_request(b"") is None


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * wire.MAX_HEAD_BYTES + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * wire.MAX_HEAD_BYTES + b"\r\n\r\n", 431),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ],
)
def test_refusals_carry_their_status(raw: bytes, status: int) -> None:
    refused = wire.read_request(raw)
    assert isinstance(refused, wire.Reject) and refused.status == status


def test_a_head_of_exactly_the_limit_is_taken() -> None:
    start = b"GET / HTTP/1.1\r\nX: "
    raw = start + b"a" * (wire.MAX_HEAD_BYTES - len(start) - 4) + b"\r\n\r\n"
    assert len(raw) == wire.MAX_HEAD_BYTES
    assert isinstance(wire.read_request(raw), wire.Request)
    assert isinstance(wire.read_request(raw[:-2] + b"a\r\n\r\n"), wire.Reject)


def test_empty_lines_before_a_request_are_skipped() -> None:
    buffer = bytearray(b"\r\n\n\r\nGET / HTTP/1.1\r\n\r\n")
    wire.skip_empty_lines(buffer)
    assert buffer == b"GET / HTTP/1.1\r\n\r\n"
    partial = bytearray(b"\r")
    wire.skip_empty_lines(partial)
    assert partial == b"\r"  # perhaps the start of an empty line: wait for more


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/healthz", "/healthz"),
        (b"/healthz?probe=1", "/healthz"),
        (b"/a#b", "/a"),
        (b"http://example.com/healthz?x", "/healthz"),
        (b"http://example.com", "/"),
        (b"*", "*"),
        (b"/%2e%2e/", "/%2e%2e/"),  # no decoding: the stub matches paths as sent
    ],
)
def test_path_of(target: bytes, path: str) -> None:
    assert wire.path_of(target) == path


# -- responses ---------------------------------------------------------------------------
def test_a_starting_answer_byte_for_byte() -> None:
    assert wire.response(200, {"status": "starting"}, close=False) == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 22\r\n"
        b"Cache-Control: no-store\r\n"
        b"\r\n"
        b'{"status":"starting"}\n'
    )


def test_head_answers_have_the_length_of_the_body_they_leave_out() -> None:
    full = wire.response(503, {"status": "down", "cause": "killed"})
    head = wire.response(503, {"status": "down", "cause": "killed"}, head_only=True)
    assert full.startswith(head) and head.endswith(b"\r\n\r\n")
    assert f"Content-Length: {len(full) - len(head)}\r\n".encode() in head


def test_optional_headers() -> None:
    data = wire.response(503, {"status": "starting"}, retry_after_s=1, allow="GET, HEAD")
    assert b"\r\nRetry-After: 1\r\n" in data and b"\r\nAllow: GET, HEAD\r\n" in data
    assert b"\r\nConnection: close\r\n" in data
    kept = wire.response(200, {}, close=False, keep_alive_header=True)
    assert b"\r\nConnection: keep-alive\r\n" in kept and b"Retry-After" not in kept
    assert b"Connection" not in wire.response(200, {}, close=False)


def h11_client_reads(data: bytes, method: str = "GET") -> list[Any]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    events = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return events
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            return events


@pytest.mark.parametrize("status", sorted(wire.REASONS))
def test_every_response_is_valid_http_for_h11(status: int) -> None:
    data = wire.response(status, {"status": "x", "cause": 'a "quoted"\nline'}, close=False)
    response, body, end = h11_client_reads(data)
    assert isinstance(response, h11.Response) and response.status_code == status
    assert response.reason == wire.REASONS[status].encode()
    assert json.loads(body.data) == {"status": "x", "cause": 'a "quoted"\nline'}
    assert isinstance(end, h11.EndOfMessage)
    head = wire.response(status, {"status": "x"}, head_only=True, close=False)
    assert [type(event) for event in h11_client_reads(head, "HEAD")] == [
        h11.Response, h11.EndOfMessage
    ]


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4))
def test_json_bodies_read_back_as_json(payload: dict[str, str]) -> None:
    assert json.loads(wire.json_object(payload)) == payload


def test_importing_the_stub_costs_no_heavy_module() -> None:
    # The stub is imported right after the spawn; its import time is measured.
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "import supervisor.health, supervisor.stub_connection, supervisor.stub_pump; "
        "print(' '.join(m for m in ('re', 'json', 'typing', 'dataclasses') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-S", "-c", code], check=True,
                            capture_output=True, text=True).stdout.split()
    assert loaded == []
