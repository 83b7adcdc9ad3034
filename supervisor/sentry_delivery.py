"""Delivering a Sentry event within a deadline, and saying what happened.

Owns: the envelope (made and serialised by ``sentry_sdk`` itself, so that it is
valid protocol), the HTTP POST in a worker thread bounded by the deadline,
the outcome as a ``Delivery``, and sending a saved report later.
Must not know: what is in the event (``sentry_event`` builds it) or what the
supervisor prints about the outcome.

``sentry_sdk`` (about 130 ms and 19 MiB to import) is imported only inside
``deliver``, and in its worker thread, so that both the cost and any stall
count against the delivery deadline instead of start-up or exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from supervisor.sentry_event import Attachment, attachments_for, build_event


@dataclass(frozen=True)
class Delivery:
    """What became of one event: ``event_id`` is set only when Sentry took it."""

    delivered: bool
    event_id: Optional[str]
    detail: str


def deliver(
    event: dict[str, Any],
    attachments: Sequence[Attachment],
    *,
    dsn: str,
    timeout_s: float,
) -> Delivery:
    """Send one event; returns within ``timeout_s`` (plus thread overhead) and never raises.

    The work runs in a daemon thread joined with the deadline: a Sentry that
    accepts and never answers, a slow DNS or a slow import cannot hold the exit.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    attempt = _Attempt()
    try:
        worker = threading.Thread(
            target=attempt.run,
            args=(dict(event), list(attachments), dsn, deadline),
            name="supervisor-sentry",
            daemon=True,
        )
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
    except Exception as error:  # e.g. "can't start new thread" in a starved container
        return Delivery(False, None, f"could not send: {error}")
    result = attempt.result
    if result is not None:
        return result
    attempt.abort()
    return Delivery(False, None, f"timed out after {_seconds(timeout_s)} s")


def send_saved_report(path: str, *, dsn: str, timeout_s: float) -> Delivery:
    """Send a report file written when the container had no route to Sentry.

    Release and environment come from the report's ``release``/``environment``
    fields when present, else from ``SENTRY_RELEASE``/``SENTRY_ENVIRONMENT`` now.
    The report's ``sentry_event_id``, if any, is reused so that Sentry drops a
    duplicate of an event that did arrive.
    """
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        return Delivery(False, None, f"cannot read report {path}: {error}")
    if report.get("cause") == "stopped":
        return Delivery(False, None, "not sent: a clean stop is not a crash")
    event = build_event(
        report,
        release=report.get("release") or os.environ.get("SENTRY_RELEASE"),
        environment=report.get("environment") or os.environ.get("SENTRY_ENVIRONMENT"),
        event_id=report.get("sentry_event_id") or None,
    )
    return deliver(event, attachments_for(report), dsn=dsn, timeout_s=timeout_s)


class _Attempt:
    """One delivery in a worker thread; the caller may abandon it at any time."""

    def __init__(self) -> None:
        self.result: Optional[Delivery] = None
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._aborted = False

    def run(
        self,
        event: dict[str, Any],
        attachments: list[Attachment],
        dsn: str,
        deadline: float,
    ) -> None:
        try:
            self.result = self._run(event, attachments, dsn, deadline)
        except Exception as error:  # never let a bug here reach the exit path
            self.result = Delivery(False, None, f"could not send: {type(error).__name__}: {error}")

    def abort(self) -> None:
        # Unblocks a thread stuck in recv() so that it ends and frees its socket.
        with self._lock:
            self._aborted = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def _run(
        self,
        event: dict[str, Any],
        attachments: list[Attachment],
        dsn: str,
        deadline: float,
    ) -> Delivery:
        made = _make_envelope(event, attachments, dsn)
        if isinstance(made, Delivery):
            return made
        url, body, headers, event_id = made
        return self._post(url, body, headers, event_id, deadline)

    def _post(
        self,
        url: Mapping[str, Any],
        body: bytes,
        headers: Mapping[str, str],
        event_id: str,
        deadline: float,
    ) -> Delivery:
        import http.client
        import ssl

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Delivery(False, None, "timed out before sending")
        connection: http.client.HTTPConnection
        if url["scheme"] == "https":
            connection = http.client.HTTPSConnection(
                url["host"], url["port"], timeout=remaining, context=_tls_context(ssl)
            )
        else:
            connection = http.client.HTTPConnection(url["host"], url["port"], timeout=remaining)
        try:
            connection.connect()
            with self._lock:
                if self._aborted:
                    return Delivery(False, None, "timed out")
                self._sock = connection.sock
            connection.request("POST", url["path"], body=body, headers=dict(headers))
            response = connection.getresponse()
            answer = response.read(65536)
        except ConnectionRefusedError:
            return Delivery(False, None, "connection refused")
        except socket.timeout:
            return Delivery(False, None, "timed out")
        except socket.gaierror as error:
            return Delivery(False, None, f"cannot resolve {url['host']}: {error.strerror}")
        except ssl.SSLError as error:
            return Delivery(False, None, f"TLS error: {error.reason or error}")
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            return Delivery(False, None, f"network error: {reason}")
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return Delivery(True, _answered_id(answer) or event_id, "delivered")
        if response.status == 429:
            return Delivery(False, None, "HTTP 429 (rate limited)")
        return Delivery(False, None, f"HTTP {response.status}")


def _make_envelope(
    event: dict[str, Any], attachments: list[Attachment], dsn: str
) -> tuple[dict[str, Any], bytes, dict[str, str], str] | Delivery:
    """Let sentry_sdk make and serialise the envelope, so that it is valid protocol."""
    try:
        import sentry_sdk
        from sentry_sdk.attachments import Attachment as SdkAttachment
        from sentry_sdk.transport import Transport
        from sentry_sdk.utils import BadDsn, Dsn
    except ImportError:
        return Delivery(False, None, "sentry_sdk not installed")
    try:
        parsed = Dsn(dsn)
    except BadDsn as error:
        return Delivery(False, None, f"invalid DSN: {error}")

    class Recorder(Transport):
        """Keeps the envelope instead of queueing it on the SDK's own worker,
        whose HTTP outcome is never reported back (see FACTS.md, flush())."""

        def __init__(self) -> None:
            super().__init__(None)
            self.envelopes: list[Any] = []

        def capture_envelope(self, envelope: Any) -> None:
            self.envelopes.append(envelope)

    def drop_empty_release(sent: dict[str, Any], hint: Any) -> dict[str, Any]:
        if not sent.get("release"):
            sent.pop("release", None)
        return sent

    recorder = Recorder()
    # Typed loosely on purpose: the SDK's own annotations change across the
    # wide range of versions this must accept.
    make_client: Any = sentry_sdk.Client
    options: dict[str, Any] = dict(
        dsn=dsn,
        transport=recorder,
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[],
        shutdown_timeout=0,
        # Explicit, never None: a None release makes the SDK run `git rev-parse`.
        release=event.get("release") or "",
        environment=event.get("environment") or "production",
        server_name=event.get("server_name"),
        enable_backpressure_handling=False,
        sample_rate=1.0,
        before_send=drop_empty_release,
    )
    if "data_collection" not in getattr(sentry_sdk.consts, "DEFAULT_OPTIONS", {}):
        # Newer SDKs deprecate naming send_default_pii (data_collection took its
        # place) and default to the same; older ones are told explicitly.
        options["send_default_pii"] = False
    client = make_client(**options)
    hint = {
        "attachments": [
            SdkAttachment(bytes=data, filename=name, content_type=content_type)
            for name, data, content_type in attachments
        ]
    }
    event_id = client.capture_event(event, hint=hint)
    if event_id is None or not recorder.envelopes:
        return Delivery(False, None, "event dropped by sentry_sdk")

    import gzip

    body = gzip.compress(recorder.envelopes[0].serialize(), compresslevel=6)
    url = {
        "scheme": parsed.scheme,
        "host": parsed.host,
        "port": parsed.port,
        "path": f"{parsed.path}api/{parsed.project_id}/envelope/",
    }
    client_name = f"sentry.python/{sentry_sdk.VERSION}"
    auth = f"Sentry sentry_key={parsed.public_key}, sentry_version=7, sentry_client={client_name}"
    if parsed.secret_key:
        auth += f", sentry_secret={parsed.secret_key}"
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "Content-Encoding": "gzip",
        "User-Agent": client_name,
        "X-Sentry-Auth": auth,
    }
    return url, body, headers, str(event_id)


def _tls_context(ssl: Any) -> Any:
    # Slim images often lack system CA files; certifi comes with sentry_sdk.
    cafile = None
    if not os.environ.get("SSL_CERT_FILE"):
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    return ssl.create_default_context(cafile=cafile)


def _answered_id(answer: bytes) -> Optional[str]:
    try:
        value = json.loads(answer).get("id")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def new_event_id() -> str:
    """An id to write into the report before delivery is attempted."""
    import uuid

    return uuid.uuid4().hex


def _seconds(value: float) -> str:
    # "5.0" as people write it, but never "0.1" for a 50 ms deadline.
    return f"{value:.1f}" if round(value, 1) == round(value, 2) else f"{value:.2f}"
