"""The platform's health check, sent to the public port from outside, in a thread.

Owns: probing an address over TCP or HTTP on the platform's schedule, in a
thread of its own so that a probe waiting out its timeout never holds the
loop; telling whether the supervisor's stub or the app answered; and waking
the loop when the decision changes. The decision itself is ``verdict``'s.

Must not know: the child, the stub's internals, the platforms' presets or the
report. The loop starts the check once the public socket is bound, watches
``wakeup_fd`` in its reactor, and asks for ``result()`` when woken and at the
end. ``wakeup_fd`` is written once on every change of state (PASSED, FAILED,
UNHEALTHY); ``take_wakeup()`` drains it and returns the result. Probing stops
at FAILED or UNHEALTHY.

HTTP is spoken over a plain socket, as a platform's checker does: one
``GET`` on a fresh connection with ``Connection: close``, the status line and
headers read, and at most 512 bytes of the body, all within the timeout. An
HTTP client library would add about 100 ms of import and 10 MiB to the
supervisor for this one request.

Who answered: a probe answered by the supervisor's own stub (before hand-off,
or after the child died) is told from one answered by the app either by the
caller's ``stub_active`` callable, when given (the loop knows when it handed
the socket over), or else, for HTTP, by the stub's recognisable answer: a
small JSON object ``{"status": "starting"}`` or ``{"status": "down", ...}``
sent with ``Cache-Control: no-store``. A TCP probe without ``stub_active``
cannot tell: ``answered_by`` is None.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from typing import Callable, Optional

from .config import HealthCheckSpec, seconds_text
from .verdict import HealthCheckResult, Probe, ProbeKind, ProbeRecord

# What platforms count as a healthy HTTP answer (Kubernetes, Cloud Run: 200-399).
HEALTHY_STATUS = range(200, 400)
# The stub's payloads: what tells its answer from the app's without changing it.
_STUB_STATUSES = {"starting", "down"}
_STUB_KEYS = {"status", "cause"}
# Bytes of an HTTP body read to recognise the stub; its bodies are tiny.
_SNIFF_BYTES = 512
# A status line and headers longer than this are not a health answer.
_MAX_HEAD_BYTES = 64 * 1024


class _BadAnswer(Exception):
    """The peer answered something that is not an HTTP response."""


class PlatformHealthCheck:
    """Probes ``address`` like the platform would, in a background thread.

    ``stub_active``, when given, is called from that thread after each probe
    and must be cheap and thread-safe (reading a flag): True while the
    supervisor's stub, not the app, owns the public socket. A hand-off during
    a probe may be attributed to either side.
    """

    def __init__(
        self,
        spec: HealthCheckSpec,
        address: tuple[str, int],
        clock: Callable[[], float] = time.monotonic,
        stub_active: Optional[Callable[[], bool]] = None,
    ) -> None:
        problem = spec.problem()
        if problem is not None:
            raise ValueError(problem)
        self.spec = spec
        self.address = address
        self._clock = clock
        self._stub_active = stub_active
        self._record = ProbeRecord(spec)
        # Guards the record and the pipe: the thread never writes to a closed fd.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started_at: Optional[float] = None
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._wakeup_read = read_fd
        self._wakeup_write = write_fd
        self._closed = False

    @property
    def wakeup_fd(self) -> int:
        """Readable after each change of state; drain it with ``take_wakeup``."""
        return self._wakeup_read

    @property
    def started_at(self) -> Optional[float]:
        """When probing started, on ``clock``; probe times count from here."""
        return self._started_at

    def start(self) -> None:
        if self._thread is not None:
            return
        self._started_at = self._clock()
        self._thread = threading.Thread(
            target=self._run, name="supervisor-health-check", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 0.0) -> None:
        """Stop probing.

        Returns at once by default: a probe in flight may be waiting out its
        timeout, and the loop must not wait with it; its answer is dropped.
        ``timeout_s`` > 0 waits that long for the thread to end. The pipe stays
        open until ``close`` so that the loop can still read it.
        """
        self._stop.set()
        thread = self._thread
        if timeout_s > 0 and thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def close(self) -> None:
        """Stop, then close the wakeup pipe (after the loop stopped watching it)."""
        self.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._wakeup_read, self._wakeup_write):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def result(self) -> HealthCheckResult:
        with self._lock:
            return self._record.result()

    def take_wakeup(self) -> HealthCheckResult:
        """Drain ``wakeup_fd`` and return the result: the loop's reader callback."""
        with self._lock:
            if not self._closed:
                try:
                    while os.read(self._wakeup_read, 64):
                        pass
                except OSError:
                    pass  # EAGAIN: drained
            return self._record.result()

    # -- the thread --

    def _run(self) -> None:
        assert self._started_at is not None
        next_at = self._started_at
        while not self._stop.is_set():
            wait = next_at - self._clock()
            if wait > 0 and self._stop.wait(wait):
                return
            sent = self._clock()
            next_at = sent + self.spec.interval_s
            try:
                probe = self._probe(sent - self._started_at)
            except Exception as exc:  # a bug in a probe must not end the checks silently
                probe = Probe(
                    sent - self._started_at, self._clock() - sent, False, ProbeKind.ERROR,
                    f"{type(exc).__name__}: {exc}", None,
                )
            if self._stop.is_set():
                return  # stopped while probing: the answer came after the end
            with self._lock:
                changed = self._record.add(probe)
                final = self._record.state.final
                if changed and not self._closed:
                    try:
                        os.write(self._wakeup_write, b"!")
                    except OSError:
                        pass  # full: the loop has not read yet, and it is readable anyway
            if final:
                return

    def _probe(self, at_s: float) -> Probe:
        start = self._clock()
        if self.spec.protocol == "tcp":
            kind, detail, by = self._tcp()
        else:
            kind, detail, by = self._http()
        duration = self._clock() - start
        if kind is ProbeKind.OK and duration > self.spec.timeout_s:
            # The platform's timeout bounds the whole exchange: an answer that
            # came too late failed.
            kind, detail, by = ProbeKind.TIMEOUT, self._timed_out(), None
        if self._stub_active is not None and kind in (ProbeKind.OK, ProbeKind.HTTP_STATUS):
            try:
                by = "stub" if self._stub_active() else "app"
            except Exception:
                by = None
        return Probe(at_s, duration, kind is ProbeKind.OK, kind, detail, by)

    def _timed_out(self) -> str:
        return f"timed out ({seconds_text(self.spec.timeout_s)})"

    def _failure(self, exc: OSError) -> tuple[ProbeKind, str, Optional[str]]:
        if isinstance(exc, socket.timeout) or exc.errno == errno.ETIMEDOUT:
            return ProbeKind.TIMEOUT, self._timed_out(), None
        if isinstance(exc, ConnectionRefusedError):
            return ProbeKind.REFUSED, "connection refused", None
        if isinstance(exc, ConnectionResetError):
            return ProbeKind.ERROR, "connection reset", None
        return ProbeKind.ERROR, exc.strerror or type(exc).__name__, None

    def _tcp(self) -> tuple[ProbeKind, str, Optional[str]]:
        try:
            with socket.create_connection(self.address, timeout=self.spec.timeout_s):
                return ProbeKind.OK, "connected", None
        except OSError as exc:
            return self._failure(exc)

    def _http(self) -> tuple[ProbeKind, str, Optional[str]]:
        host, port = self.address
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        request = (
            f"GET {self.spec.path} HTTP/1.1\r\nHost: {shown}:{port}\r\n"
            "User-Agent: supervisor-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode("ascii", "replace")
        deadline = time.monotonic() + self.spec.timeout_s
        try:
            with socket.create_connection(self.address, timeout=self.spec.timeout_s) as conn:
                conn.sendall(request)
                status, headers, body = _read_answer(conn, deadline)
        except _BadAnswer as exc:
            return ProbeKind.ERROR, f"not an HTTP answer ({exc})", None
        except OSError as exc:
            return self._failure(exc)
        by = "stub" if _looks_like_stub(headers, body) else "app"
        kind = ProbeKind.OK if status in HEALTHY_STATUS else ProbeKind.HTTP_STATUS
        return kind, f"HTTP {status}", by


def _receive(conn: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    conn.settimeout(left)
    return conn.recv(65536)


def _read_answer(conn: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    """(status, headers by lower-case name, the first bytes of the body) of one answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD_BYTES:
            raise _BadAnswer("the head is too long")
        chunk = _receive(conn, deadline)
        if not chunk:
            raise _BadAnswer("closed before an answer" if not data else "closed mid-answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not (code.isascii() and code.isdigit()):
        raise _BadAnswer(repr(lines[0][:40]))
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "")
    wanted = min(int(length), _SNIFF_BYTES) if length.isdigit() else _SNIFF_BYTES
    # The body up to its end or a bounded prefix, within the same timeout: a
    # platform's checker reads it too, and a body that never comes times out.
    while len(body) < wanted:
        chunk = _receive(conn, deadline)
        if not chunk:
            break
        body += chunk
    return int(code), headers, body[:_SNIFF_BYTES]


def _looks_like_stub(headers: dict[str, str], body: bytes) -> bool:
    if "no-store" not in headers.get("cache-control", ""):
        return False
    if not headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return (
        isinstance(payload, dict)
        and set(payload) <= _STUB_KEYS
        and payload.get("status") in _STUB_STATUSES
    )
