"""The starting phase: until the app is ready, or cannot become ready.

Owns: watching for readiness (``ReadinessWatcher``), the startup timeout,
processes that keep dying at start-up while the server waits on
(``StartupCrashWatch``), the SIGABRT-then-SIGKILL that ends a start that
will not finish (so faulthandler says where it hung), and the hand-off of the
socket once the app is ready.
Must not know: the phase table or the report; the loop is told through
``on_ready`` and reads ``timed_out``, ``summary`` and ``crash`` at the end.
"""

from __future__ import annotations

import signal

from .handoff import HandoffMode
from .listener import address_text, is_unix, loopback_address
from .pid1 import send_signal

# Imported right after the spawn, before the stub's first answer: no typing here.
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import socket
    from typing import Callable, Optional

    from .config import Config
    from .handoff import HandoffPlan
    from .health import HealthStub
    from .log import Logger
    from .loop import Supervisor
    from .reactor import Reactor, Timer
    from .readiness import ReadinessWatcher, Strategy
    from .relay import Relay
    from .startcrash import StartupCrashWatch
    from .tracebacks import ParsedTraceback

# After SIGABRT for a stack dump, how long faulthandler gets before SIGKILL.
ABORT_GRACE_S = 2.0


class Startup:
    """Watches a starting child; ``on_ready(strategy)`` once it can answer."""

    def __init__(
        self, reactor: Reactor, log: Logger, config: Config, plan: HandoffPlan, pid: int,
        stub: HealthStub, listener: Optional[socket.socket], stderr: Optional[Relay],
        started_mono: float, on_ready: Callable[[Strategy], None],
        still_starting: Callable[[], bool], alive: Callable[[], bool],
    ) -> None:
        self._reactor = reactor
        self._log = log
        self._config = config
        self._plan = plan
        self._pid = pid
        self._stub = stub
        self._listener = listener
        self._stderr = stderr  # None on a terminal: nothing is relayed
        self._started = started_mono
        self._on_ready = on_ready
        self._still_starting = still_starting  # reaps first: an end at a deadline is that end
        self._alive = alive  # not reaped: its pid (and group) cannot have been reused
        self.readiness: Optional[ReadinessWatcher] = None
        self.crashes: Optional[StartupCrashWatch] = None
        self.timer: Optional[Timer] = None
        self.timed_out = False
        self.summary = f"not ready within {config.startup_timeout_s:g} s (--startup-timeout)"
        self.crash: Optional[ParsedTraceback] = None  # the traceback it kept dying of

    def watch(self, startup_timeout: bool = True) -> None:
        """Readiness by every strategy that fits, and (usually) the startup timeout."""
        from .readiness import ReadinessWatcher, proc_readiness_supported

        port_mode = self._plan.mode is HandoffMode.PORT
        self.readiness = ReadinessWatcher(
            self._reactor, pid=self._pid, on_ready=self._on_ready, listener=self._listener,
            pause_stub=None if port_mode or self._plan.unix_path else self._stub.pause_accepting,
            app_port=self._plan.app_port if port_mode else None,
        )
        if startup_timeout:
            self.timer = self._reactor.call_later(self._config.startup_timeout_s,
                                                  self._on_timeout)
        if self.readiness.start(proc_readiness_supported()) is not None:
            self._log.info("readiness: /proc cannot tell here; using uvicorn's log lines")
            self._listen_to_stderr(self.readiness.chunk)

    def watch_crashes(self) -> None:
        """Processes dying at start-up while the server waits on: concluded, not waited out."""
        if self._stderr is None:
            return
        from .startcrash import StartupCrashWatch

        self.crashes = StartupCrashWatch(
            self._reactor, reloads=self._plan.reloads, started=self._started,
            on_conclude=self._on_crash_loop, on_crash=self._on_reload_crash,
        )
        self._listen_to_stderr(self.crashes.chunk)

    def _listen_to_stderr(self, listener: Callable[[bytes], None]) -> None:
        if self._stderr is None:
            return
        previous = self._stderr.on_chunk

        def chunk(data: bytes) -> None:
            if previous is not None:
                previous(data)
            listener(data)

        self._stderr.on_chunk = chunk

    def app_accepts(self) -> None:
        if self.readiness is not None:
            self.readiness.app_accepts()

    def stop(self) -> None:
        """Ready, stopping or gone: nothing here may fire any more."""
        if self.readiness is not None:
            self.readiness.stop()
        if self.crashes is not None:
            self.crashes.stop()
        if self.timer is not None:
            self.timer.cancel()
        if self._stderr is not None:
            self._stderr.on_chunk = None

    def hand_off(self, ready_after_s: float) -> None:
        """The app can answer: it owns the socket (or its own port) from now on."""
        stub, listener = self._stub, self._listener
        assert listener is not None
        if self._plan.mode is HandoffMode.PORT:
            stub.mark_serving()
            self._log.info(f"ready after {ready_after_s:.2f} s: the app answers on port "
                           f"{self._plan.app_port}")
            return
        address = (self._plan.unix_path,) if is_unix(listener) else loopback_address(listener)
        stub.hand_off(address)
        self._log.info(f"ready after {ready_after_s:.2f} s: the app owns "
                       f"{address_text(listener)} now")
        if not is_unix(listener):
            from .appcheck import warn_if_health_path_missing

            warn_if_health_path_missing(self._reactor, self._log, loopback_address(listener),
                                        self._config.health_path)

    def give_up(self, summary: str, line: str) -> None:
        """Someone (a platform's health check) stops waiting: a stack dump, then the kill."""
        self.timed_out = True
        self.summary = summary
        self._log.warning(line)
        self.abort_for_stack_dump()

    def abort_for_stack_dump(self) -> None:
        """SIGABRT (faulthandler prints where every thread is), then SIGKILL the group."""
        send_signal(self._pid, signal.SIGABRT, group=True)
        self._reactor.call_later(ABORT_GRACE_S, self._kill_group)

    def _kill_group(self) -> None:
        if self._alive():
            send_signal(self._pid, signal.SIGKILL, group=True)

    def _on_timeout(self) -> None:
        if not self._still_starting():
            return
        self.give_up(
            self.summary,
            f"not ready within {self._config.startup_timeout_s:g} s: sending SIGABRT for a "
            f"stack dump, SIGKILL in {ABORT_GRACE_S:g} s",
        )

    def _on_crash_loop(self, traceback: ParsedTraceback, deaths: int) -> None:
        if not self._still_starting():
            return
        self.crash = traceback
        grace = self._config.stop_timeout_s
        self._log.warning(
            f"the app died {deaths} time(s) while starting ({traceback.summary()}) and the "
            f"server waits on: stopping it (SIGTERM, SIGKILL in {grace:g} s)"
        )
        send_signal(self._pid, signal.SIGTERM, group=True)
        self._reactor.call_later(grace, self._kill_group)

    def _on_reload_crash(self, traceback: ParsedTraceback) -> None:
        from .causes import frame_text

        where = frame_text(traceback.innermost_app_frame())
        self._log.error(f"the app crashed while starting: {traceback.summary()}"
                        + (f" at {where}" if where else "") + "; the reloader waits for a change")


def start_stub(sup: Supervisor, on_app_accepts: Callable[[], None]) -> Optional[HealthStub]:
    """Answer on the bound socket; until now the kernel's backlog held callers."""
    listener, config = sup.listener, sup.config
    if listener is None:
        return None
    from .config import EarlyRequests
    from .health import HealthStub

    hold = config.early_requests is EarlyRequests.HOLD
    stub = HealthStub(
        sup.reactor,
        listener,
        health_path=config.health_path,
        ready_path=config.ready_path,
        starting_status=config.starting_status,
        # In port mode other paths on the health port are not the app's traffic.
        hold_early_requests=hold and sup.plan.mode is not HandoffMode.PORT,
        hold_timeout_s=min(30.0, config.startup_timeout_s),
        log=sup.log.warning,
        on_app_accepts=on_app_accepts,
    )
    stub.start()
    return stub
