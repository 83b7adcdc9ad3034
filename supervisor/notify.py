"""Sentry, seen from the loop: which DSN, and delivery that never blocks the loop.

Owns: resolving the DSN from the configuration, release and environment
from Sentry's variables, running a delivery in a worker thread while the loop
keeps serving, and the one line that says how it went.
Must not know: how an event is built or sent (``sentry``), nor the report's
fields beyond handing the report's JSON over.
"""

from __future__ import annotations

from .errors import UsageError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Mapping, Optional

    from .config import Config
    from .log import Logger
    from .reactor import Reactor

# After the delivery's own timeout, a little longer for the thread to hand back.
HAND_BACK_S = 0.3


class Notifier:
    """Sends the crash event and the memory warning; every failure is one line, never fatal."""

    def __init__(
        self, reactor: Reactor, log: Logger, dsn: Optional[str], timeout_s: float,
        environ: Mapping[str, str],
    ) -> None:
        self._reactor = reactor
        self._log = log
        self.dsn = dsn
        self._timeout_s = timeout_s
        self._release = environ.get("SENTRY_RELEASE") or None
        self._environment = environ.get("SENTRY_ENVIRONMENT") or None

    @classmethod
    def from_config(
        cls, reactor: Reactor, log: Logger, dsn: Optional[str], timeout_s: float,
        environ: Mapping[str, str],
    ) -> Notifier:
        if dsn is not None:
            from .config import parse_dsn

            try:
                dsn = parse_dsn("SENTRY_DSN", dsn)
            except UsageError as error:
                # Only SENTRY_DSN can get here (a bad --sentry-dsn is exit 2): the
                # app may use it too, so it is not a reason to refuse to start.
                log.warning(f"{error}; crash events will not be sent")
                dsn = None
        return cls(reactor, log, dsn, timeout_s, environ)

    @property
    def enabled(self) -> bool:
        return self.dsn is not None

    def send_memory_warning(self, message: str, memory: dict[str, Any]) -> None:
        """Fire and forget: the run goes on whatever happens to the warning."""
        if self.dsn is None:
            return
        dsn, timeout = self.dsn, self._timeout_s

        def send() -> None:
            from .sentry_delivery import deliver
            from .sentry_event import build_warning_event

            event = build_warning_event(message, memory, release=self._release,
                                        environment=self._environment)
            result = deliver(event, [], dsn=dsn, timeout_s=timeout)
            self._reactor.call_soon_threadsafe(
                lambda: self._log.info(f"sentry: memory warning {delivery_text(result)}")
            )

        self._in_thread(send, "memory warning")

    def send_crash(self, report: dict[str, Any]) -> dict[str, Any]:
        """Send the crash event; return the report's Sentry fields (id, delivered, detail).

        The loop keeps serving the stub and signals while the thread delivers.
        """
        assert self.dsn is not None
        from .sentry_delivery import deliver, new_event_id
        from .sentry_event import attachments_for, build_event

        event = build_event(report, release=self._release, environment=self._environment,
                            event_id=new_event_id())
        attachments = attachments_for(report)
        results: list[Any] = []
        dsn, timeout = self.dsn, self._timeout_s
        started = self._in_thread(
            lambda: results.append(deliver(event, attachments, dsn=dsn, timeout_s=timeout)),
            "crash event",
        )
        if started:
            self._reactor.run_until(lambda: bool(results),
                                    self._reactor.clock() + timeout + HAND_BACK_S)
        if not results:
            detail = f"timed out after {timeout:g} s" if started else "no thread to send it"
            self._log.warning(f"sentry: not delivered ({detail})")
            return {"sentry": {"delivered": False, "detail": detail}}
        delivery = results[0]
        self._log.info(f"sentry: {delivery_text(delivery)}")
        return {
            "sentry_event_id": delivery.event_id,
            "sentry": {"delivered": delivery.delivered, "detail": delivery.detail},
        }

    def _in_thread(self, work: Any, what: str) -> bool:
        try:
            self._reactor.start_thread(work, name=f"supervisor-{what.replace(' ', '-')}")
        except (RuntimeError, OSError) as error:
            # A pids limit or EMFILE: the app must not pay for it.
            self._log.warning(f"sentry: cannot start a thread for the {what} ({error}); "
                              "not sent")
            return False
        return True


def delivery_text(delivery: Any) -> str:
    if delivery.delivered:
        return f"delivered event {delivery.event_id}"
    return f"not delivered ({delivery.detail})"


def send_saved_report(config: Config, log: Logger) -> int:
    """``--send-report FILE``: deliver a report a container could not send."""
    assert config.send_report is not None
    if not config.sentry_dsn:
        raise UsageError("--send-report needs --sentry-dsn or SENTRY_DSN")
    from .config import parse_dsn
    from .sentry_delivery import send_saved_report as send

    dsn = parse_dsn("SENTRY_DSN", config.sentry_dsn)
    delivery = send(config.send_report, dsn=dsn, timeout_s=config.sentry_timeout_s)
    log.info(f"sentry: {delivery_text(delivery)}")
    return 0 if delivery.delivered else 1
