"""The platform's health check, run against the public port from outside, and its verdict.

Owns: the ``--health-check`` specification and its parsing; probing the
public address over TCP or HTTP on the platform's schedule, in a thread of
its own so that a probe waiting out its timeout never holds the loop; the
record of every probe; the state machine that turns probes into the
platform's decision; and that decision in words.

Must not know: the child, the stub's internals, the platforms' presets (the
caller passes a title) or the report file. The loop starts the check once the
public socket is bound, watches ``wakeup_fd`` in its reactor, and asks for
``result()`` when woken and at the end.

Semantics, as App Runner, ECS and Kubernetes document them:

* A probe is sent every ``interval_s`` from the start (the first at once); it
  succeeds on a TCP connection accepted, or on an HTTP status from 200 to 399,
  within ``timeout_s``.
* ``healthy_threshold`` consecutive successes: the check has PASSED, and the
  platform would have routed traffic and finished the deployment.
* Before that, ``unhealthy_threshold`` consecutive failures: FAILED, the
  deployment is rolled back. Failures of probes sent during the first
  ``grace_s`` seconds do not count (ECS's startPeriod), but a success during
  the grace period does.
* After passing, probing goes on like the platform's for a running service:
  ``unhealthy_threshold`` consecutive failures then make the check UNHEALTHY
  (the platform would replace the instance). ``passed`` is true only while the
  state is PASSED.
* FAILED and UNHEALTHY are final: probing stops. ``wakeup_fd`` is written once
  on every change of state (PASSED, FAILED, UNHEALTHY); ``take_wakeup()``
  drains it and returns the result.

Who answered: a probe answered by the supervisor's own stub (before hand-off,
or after the child died) is told from one answered by the app either by the
caller's ``stub_active`` callable, when given (the loop knows when it handed
the socket over), or else, for HTTP, by the stub's recognisable answer: a
small JSON object ``{"status": "starting"}`` or ``{"status": "down", ...}``
sent with ``Cache-Control: no-store``. A TCP probe without ``stub_active``
cannot tell: ``answered_by`` is None.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .config import HealthCheckSpec, seconds_text

# What platforms count as a healthy HTTP answer (Kubernetes, Cloud Run: 200-399).
HEALTHY_STATUS = range(200, 400)
# The stub's payloads: what tells its answer from the app's without changing it.
_STUB_STATUSES = {"starting", "down"}
_STUB_KEYS = {"status", "cause"}
# Bytes of an HTTP body read to recognise the stub; its bodies are tiny.
_SNIFF_BYTES = 512
# Probes kept in the record; a long run keeps the first and the latest.
MAX_PROBES = 1000


class CheckState(enum.Enum):
    """Where the platform's decision stands; FAILED and UNHEALTHY are final."""

    PENDING = "pending"  # neither threshold reached yet
    PASSED = "passed"  # healthy: the deployment would have succeeded
    FAILED = "failed"  # unhealthy before ever passing: the deployment would fail
    UNHEALTHY = "unhealthy"  # passed, then failed: the instance would be replaced

    @property
    def final(self) -> bool:
        return self in (CheckState.FAILED, CheckState.UNHEALTHY)


# -- probes and results ----------------------------------------------------------


class ProbeKind(enum.Enum):
    """What happened to one probe; the verdict groups failures by it."""

    OK = "ok"
    HTTP_STATUS = "http_status"  # answered, with a status outside 200-399
    TIMEOUT = "timeout"
    REFUSED = "refused"
    ERROR = "error"  # reset, protocol error, anything else


@dataclass(frozen=True)
class Probe:
    at_s: float  # when it was sent, in seconds since the check started
    duration_s: float
    ok: bool
    kind: ProbeKind
    detail: str  # "HTTP 200", "HTTP 503", "timed out (2 s)", "connection refused"
    answered_by: Optional[str]  # "stub", "app", or None when unknown or nobody answered
    counted: bool = True  # False for a failure inside the grace period

    def as_report(self) -> dict[str, object]:
        return {
            "at_s": round(self.at_s, 3),
            "duration_s": round(self.duration_s, 3),
            "ok": self.ok,
            "detail": self.detail,
            "answered_by": self.answered_by,
            "counted": self.counted,
        }


@dataclass(frozen=True)
class HealthCheckResult:
    passed: bool
    checks: int
    failures: int
    reason: str
    answered_by: Optional[str]  # who answered the probe that decided, or the last one
    probes: tuple[Probe, ...]
    state: CheckState = CheckState.PENDING
    # The probes that made the decision (the run of successes or of failures).
    decisive: tuple[Probe, ...] = ()
    passed_at_s: Optional[float] = None  # when it first became healthy

    @property
    def final(self) -> bool:
        return self.state.final

    def as_report(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "checks": self.checks,
            "failures": self.failures,
            "reason": self.reason,
            "answered_by": self.answered_by,
            "state": self.state.value,
            "passed_at_s": None if self.passed_at_s is None else round(self.passed_at_s, 3),
            "probes": [probe.as_report() for probe in self.probes],
        }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class _Verdict:
    """The state machine over probes; pure, so that it can be tested without a thread."""

    def __init__(self, spec: HealthCheckSpec) -> None:
        self.spec = spec
        self.state = CheckState.PENDING
        self.probes: list[Probe] = []
        self.checks = 0
        self.failures = 0
        self.passed_at_s: Optional[float] = None
        self._streak: list[Probe] = []  # the current run of counted results of one kind
        self._decisive: tuple[Probe, ...] = ()

    def add(self, probe: Probe) -> bool:
        """Record ``probe``; True when the state changed."""
        if probe.at_s < self.spec.grace_s and not probe.ok:
            probe = Probe(
                probe.at_s, probe.duration_s, False, probe.kind, probe.detail,
                probe.answered_by, counted=False,
            )
        self.checks += 1
        if not probe.ok:
            self.failures += 1
        if len(self.probes) >= MAX_PROBES:
            # Keep the start and the latest: drop from the middle.
            del self.probes[MAX_PROBES // 2]
        self.probes.append(probe)
        if self.state.final or not probe.counted:
            return False
        if self._streak and self._streak[-1].ok != probe.ok:
            self._streak = []
        self._streak.append(probe)
        before = self.state
        if probe.ok and self.state is CheckState.PENDING:
            if len(self._streak) >= self.spec.healthy_threshold:
                self.state = CheckState.PASSED
                self.passed_at_s = probe.at_s + probe.duration_s
                self._decisive = tuple(self._streak)
        elif not probe.ok and len(self._streak) >= self.spec.unhealthy_threshold:
            if self.state is CheckState.PENDING:
                self.state = CheckState.FAILED
                self._decisive = tuple(self._streak)
            elif self.state is CheckState.PASSED:
                self.state = CheckState.UNHEALTHY
                self._decisive = tuple(self._streak)
        return self.state is not before

    def result(self) -> HealthCheckResult:
        decisive = self._decisive
        last = self.probes[-1] if self.probes else None
        deciding = decisive[-1] if decisive else last
        return HealthCheckResult(
            passed=self.state is CheckState.PASSED,
            checks=self.checks,
            failures=self.failures,
            reason=self._reason(),
            answered_by=deciding.answered_by if deciding is not None else None,
            probes=tuple(self.probes),
            state=self.state,
            decisive=decisive,
            passed_at_s=self.passed_at_s,
        )

    def _reason(self) -> str:
        if self.state is CheckState.PASSED:
            return (
                f"{_plural(len(self._decisive), 'consecutive health check')} succeeded "
                f"({_details(self._decisive)}) by {seconds_text(self.passed_at_s or 0.0)}"
            )
        if self.state.final:
            return _failure_phrase(self._decisive)
        if not self.probes:
            return "no health check was sent"
        last = self.probes[-1]
        return (
            f"undecided after {_plural(self.checks, 'health check')} "
            f"({self.failures} failed); the last: {last.detail}"
        )


def _details(probes: tuple[Probe, ...]) -> str:
    seen: dict[str, int] = {}
    for probe in probes:
        seen[probe.detail] = seen.get(probe.detail, 0) + 1
    if len(seen) == 1:
        return next(iter(seen))
    return ", ".join(f"{n} {detail}" for detail, n in seen.items())


def _failure_words(probe: Probe) -> str:
    if probe.kind is ProbeKind.HTTP_STATUS:
        return f"answered {probe.detail}"
    if probe.kind is ProbeKind.REFUSED:
        return "were refused (nothing listening)"
    if probe.kind is ProbeKind.TIMEOUT:
        return probe.detail  # "timed out (2 s)"
    return f"failed ({probe.detail})"


def _failure_phrase(probes: tuple[Probe, ...]) -> str:
    """'5 consecutive health checks timed out (2 s) between 0 s and 22 s'."""
    if not probes:
        return "no health check failed"
    words = {_failure_words(p) for p in probes}
    what = next(iter(words)) if len(words) == 1 else f"failed ({_details(probes)})"
    if len(probes) == 1:
        what = what.replace("were refused", "was refused")
    start = probes[0].at_s
    end = probes[-1].at_s + probes[-1].duration_s
    text = f"{_plural(len(probes), 'consecutive health check')} {what}"
    text += f" between {seconds_text(start)} and {seconds_text(end)}"
    if {p.answered_by for p in probes} == {"stub"}:
        text += " (answered by the supervisor's stub while the app was not ready)"
    return text


def verdict_text(
    platform_name: Optional[str],
    result: HealthCheckResult,
    spec: HealthCheckSpec,
    where: Optional[str],
) -> str:
    """The platform's decision in one sentence, for the end of the human block.

    ``platform_name`` is the title to show ("App Runner"), None for a check
    given by hand. ``where`` is where the app was when the check failed (a
    file:line and function from a stack dump), None when unknown; it is added
    to every verdict but a pass.
    """
    who = platform_name or "A platform running this health check"
    if result.state is CheckState.PASSED:
        text = f"{who} would have passed this deployment: {result.reason}"
        if result.answered_by == "stub":
            text += (
                "; the supervisor's stub answered, so the platform saw a live container "
                "while the app was still starting"
            )
        return text
    if result.state is CheckState.FAILED:
        text = f"{who} would have failed this deployment: {result.reason}"
    elif result.state is CheckState.UNHEALTHY:
        text = (
            f"{who} would have replaced this instance: {result.reason}, "
            f"after the check had passed at {seconds_text(result.passed_at_s or 0.0)}"
        )
    else:
        check = "HTTP " + spec.path if spec.protocol == "http" else "TCP"
        text = (
            f"{who} had not decided yet ({check} every {seconds_text(spec.interval_s)}, "
            f"healthy after {spec.healthy_threshold}, failed after "
            f"{spec.unhealthy_threshold}): {result.reason}"
        )
    if where:
        text += f"; the app was still in {where}"
    return text


# -- the prober ------------------------------------------------------------------


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _looks_like_stub(headers: Any, body: bytes) -> bool:
    if "no-store" not in str(headers.get("cache-control", "")):
        return False
    if not str(headers.get("content-type", "")).startswith("application/json"):
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
        self.spec = spec
        self.address = address
        self._clock = clock
        self._stub_active = stub_active
        self._verdict = _Verdict(spec)
        # Guards the verdict and the pipe: the thread never writes to a closed fd.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started_at = 0.0
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
            return self._verdict.result()

    def take_wakeup(self) -> HealthCheckResult:
        """Drain ``wakeup_fd`` and return the result: the loop's reader callback."""
        with self._lock:
            if not self._closed:
                try:
                    while os.read(self._wakeup_read, 64):
                        pass
                except OSError:
                    pass  # EAGAIN: drained
            return self._verdict.result()

    # -- the thread --

    def _run(self) -> None:
        if self.spec.protocol == "http":
            # About 100 ms (more on a loaded machine): paid here, in this thread,
            # before the first probe, so that it never counts against a timeout.
            import httpx  # noqa: F401
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
                changed = self._verdict.add(probe)
                final = self._verdict.state.final
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
            # httpx's timeout bounds each step, not the whole exchange; the
            # platform's bounds the whole: an answer that came too late failed.
            kind, detail, by = ProbeKind.TIMEOUT, self._timed_out(), None
        if self._stub_active is not None and kind in (ProbeKind.OK, ProbeKind.HTTP_STATUS):
            try:
                by = "stub" if self._stub_active() else "app"
            except Exception:
                by = None
        return Probe(at_s, duration, kind is ProbeKind.OK, kind, detail, by)

    def _timed_out(self) -> str:
        return f"timed out ({seconds_text(self.spec.timeout_s)})"

    def _tcp(self) -> tuple[ProbeKind, str, Optional[str]]:
        host, port = self.address
        try:
            with socket.create_connection((host, port), timeout=self.spec.timeout_s):
                return ProbeKind.OK, "connected", None
        except socket.timeout:
            return ProbeKind.TIMEOUT, self._timed_out(), None
        except ConnectionRefusedError:
            return ProbeKind.REFUSED, "connection refused", None
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT:
                return ProbeKind.TIMEOUT, self._timed_out(), None
            return ProbeKind.ERROR, exc.strerror or type(exc).__name__, None

    def _http(self) -> tuple[ProbeKind, str, Optional[str]]:
        # Imported here, in the probing thread: about 100 ms that must not
        # delay the start of the app or the loop.
        import httpx

        host, port = self.address
        url = f"http://{_format_host(host)}:{port}{self.spec.path}"
        try:
            # trust_env off: a proxy from the environment must not carry a
            # probe of the loopback elsewhere. A fresh connection per probe,
            # as the platforms' checkers make.
            with httpx.Client(
                timeout=self.spec.timeout_s,
                trust_env=False,
                follow_redirects=False,
                headers={"User-Agent": "supervisor-health-check", "Connection": "close"},
            ) as client, client.stream("GET", url) as response:
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= _SNIFF_BYTES:
                        break
                status = response.status_code
                by = "stub" if _looks_like_stub(response.headers, body[:_SNIFF_BYTES]) else "app"
        except httpx.TimeoutException:
            return ProbeKind.TIMEOUT, self._timed_out(), None
        except httpx.ConnectError as exc:
            if _is_refused(exc):
                return ProbeKind.REFUSED, "connection refused", None
            return ProbeKind.ERROR, f"connection failed ({exc})", None
        except httpx.HTTPError as exc:
            return ProbeKind.ERROR, f"{type(exc).__name__}: {exc}", None
        if status in HEALTHY_STATUS:
            return ProbeKind.OK, f"HTTP {status}", by
        return ProbeKind.HTTP_STATUS, f"HTTP {status}", by


def _is_refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(current, OSError) and current.errno == errno.ECONNREFUSED:
            return True
        current = current.__cause__ or current.__context__
    return "refused" in str(exc).lower()
