"""The platform's health check, run beside the child while reproducing a platform.

Owns: starting the prober against the public address, turning its results
into lines, and telling the loop when the platform would give up on a
starting app (so that the loop can take a stack dump and stop it).
Must not know: how probes are made (``prober``) or judged (``verdict``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    import socket

    from .config import Config, HealthCheckSpec
    from .log import Logger
    from .prober import PlatformHealthCheck
    from .reactor import Reactor
    from .verdict import HealthCheckResult


class PlatformCheck:
    """Probes as the platform would; ``on_give_up(reason)`` when it would stop the app."""

    def __init__(
        self, reactor: Reactor, log: Logger, spec: HealthCheckSpec, platform: Optional[str],
        address: tuple[str, int], stub_active: Callable[[], bool],
        on_give_up: Callable[[str], None],
    ) -> None:
        from .prober import PlatformHealthCheck

        self._reactor = reactor
        self._log = log
        self._who = platform or "the platform"
        self._on_give_up = on_give_up
        self._prober: PlatformHealthCheck = PlatformHealthCheck(
            spec, address, stub_active=stub_active
        )
        reactor.add_reader(self._prober.wakeup_fd, self._on_result)
        self._prober.start()
        log.info(f"probing {address[0]}:{address[1]} as {self._who} would: {spec.describe()}")

    def _on_result(self) -> None:
        result = self._prober.take_wakeup()
        if not result.final and not result.passed:
            return
        if result.passed:
            # Probing goes on (a later failure would replace the instance).
            self._log.info(f"{self._who}'s health check passed: {result.reason}")
            return
        self._reactor.remove_reader(self._prober.wakeup_fd)
        self._on_give_up(f"{self._who} would give up now ({result.reason})")

    def stop(self) -> None:
        self._prober.stop()
        self._reactor.remove_reader(self._prober.wakeup_fd)

    def result(self) -> HealthCheckResult:
        """The probes so far; closes the prober (call once, at the end)."""
        result = self._prober.result()
        self._prober.close()
        return result


def start_platform_check(
    reactor: Reactor, log: Logger, config: Config, listener: Optional[socket.socket],
    stub_active: Callable[[], bool], on_give_up: Callable[[str], None],
) -> Optional[PlatformCheck]:
    """The check when one is asked for; None when not, or when it cannot run here."""
    spec = config.health_check
    if spec is None:
        return None
    from .listener import loopback_address

    address = (loopback_address(listener) if listener is not None
               else ("127.0.0.1", config.port or 8000))
    try:
        return PlatformCheck(reactor, log, spec, config.platform, address,
                             stub_active=stub_active, on_give_up=on_give_up)
    except (RuntimeError, OSError) as error:  # no thread (pids limit), no pipe (EMFILE)
        log.warning(f"cannot run the platform's health check ({error}): switched off; "
                    "the app runs on")
        return None
