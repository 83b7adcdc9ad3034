"""The one loop that ties the parts together, from spawn to exit status.

Owns: the run's state (the phase and its transitions, signals received, the
stop grace, the startup timeout), the order of the steps, and the hand-over
of what it saw, as one frozen ``RunFacts``, to ``finish``.
Everything runs in one thread on one ``Reactor``; the few blocking things (an
HTTP check of the app, a platform's probes, Sentry) run in threads that
report back through the reactor.

Data flows one way: Config -> spawn -> loop -> RunFacts -> cause -> report -> status.
"""

from __future__ import annotations

import signal
import time

from .bindtrap import unavailable_reason
from .child import ExecFailure, holds_terminal
from .config import Config
from .errors import UsageError
from .fallback import carry_on_after, traceback_text
from .handoff import HandoffPlan, plan_handoff
from .log import Logger
from .output import Sink
from .phase import TRANSITIONS, Phase
from .pid1 import (
    STOP_SIGNALS,
    Reaped,
    SignalInbox,
    adopt_orphans,
    reap_all,
    send_signal,
    signal_name,
    stop_group,
)
from .reactor import Reactor, Timer

# Only what is needed until the child is spawned is imported above: every
# millisecond here delays the app's start. The rest (the stub's HTTP, causes,
# tracebacks, the report, memory, threads) is imported where it is first used.
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import socket
    from typing import Any, Callable, Mapping, Optional

    from .bindtrap import BindTrap
    from .child_cgroup import ChildCgroup
    from .forensics import Forensics
    from .health import HealthStub
    from .launch import Launch
    from .notify import Notifier
    from .platform_check import PlatformCheck
    from .readiness import Strategy
    from .redact import Redactor
    from .relay import Relay, Tail
    from .starting import Startup
    from .watch import Watch

# A safety net under SIGCHLD, as tini's 1 s sigtimedwait: reap even if a wakeup was lost.
REAP_INTERVAL_S = 1.0
# After the spawn, the loop first serves the stub; memory and readiness start then.
WATCH_DELAY_S = 0.01


class Supervisor:
    """One run: ``run()`` starts the child, watches it to its end and returns the status."""

    def __init__(
        self, config: Config, environ: Mapping[str, str], log: Logger,
        reactor: Optional[Reactor] = None,
    ) -> None:
        self.config = config
        self.environ = environ
        self.log = log
        try:
            self.plan: HandoffPlan = plan_handoff(
                config.handoff.value, config.command, config.host, config.port,
                config.health_port, environ, unavailable_reason(),
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
        self.reactor = reactor or Reactor()
        self.phase = Phase.STARTING
        self.started_at = time.time()
        self.started_mono = self.reactor.clock()
        # On a terminal (whose foreground we have) the child gets it, stderr
        # included, and Ctrl-C reaches it directly.
        self.interactive = holds_terminal()
        self.pid: Optional[int] = None
        self.reaped: Optional[Reaped] = None
        self.ready_after_s: Optional[float] = None
        self.signals: list[tuple[str, float]] = []
        self.forwarded: set[int] = set()
        self.stop_signal: Optional[int] = None
        self.stop_timer: Optional[Timer] = None
        self.stop_timed_out = False
        self.child_env: dict[str, str] = {}
        self.env_file_values: Optional[dict[str, str]] = None
        self.conditions: Optional[dict[str, Any]] = None
        self.cgroup: Optional[ChildCgroup] = None
        self.listener: Optional[socket.socket] = None
        self.sinks: list[Sink] = []
        self.relays: list[Relay] = []
        self.tail: Optional[Tail] = None
        self.stub: Optional[HealthStub] = None
        self.startup: Optional[Startup] = None
        self.watch: Optional[Watch] = None
        self.health_check: Optional[PlatformCheck] = None
        self.forensics: Optional[Forensics] = None
        self._notifier: Optional[Notifier] = None
        self._redact: Optional[Redactor] = None
        self.bind_trap: Optional[BindTrap] = None

    # -- the steps -------------------------------------------------------------
    def run(self) -> int:
        stderr = Sink(self.reactor, 2)
        self.log.set_writer(stderr.write)
        self.sinks.append(stderr)
        with SignalInbox(self.reactor, self._on_signal) as self.inbox:
            try:
                return self._run()
            except Exception as error:
                if self.pid is None:
                    raise
                return carry_on_after(self, error)
            finally:
                if self.cgroup is not None:
                    self.cgroup.remove()

    def _run(self) -> int:
        launch = self._launch()
        try:  # the stub starts while the child is still on its way to exec
            if self.listener is not None:
                from .starting import start_stub

                self.stub = start_stub(self, on_app_accepts=self._on_app_accepts)
        finally:  # armed whatever happened: a failure here is carried on from
            spawned = launch.exec_outcome()
        if isinstance(spawned, ExecFailure):
            return self._finish(exec_failure=spawned)
        self._say_conditions()
        self._start_relays()
        self._start_watching()
        while self.reaped is None:
            self.reactor.run_once()
        # A timer may have reaped before the signals that came with the end were
        # read: they belong in the report (a forwarded SIGTERM makes it a stop).
        self.inbox.flush()
        self._on_child_gone()
        return self._finish()

    def _launch(self) -> Launch:
        """Prepare, bind and fork (``launch``); then the loop owns what it made."""
        from .launch import Launch

        launch = Launch(self.config, self.environ, self.log, self.plan, self.reactor,
                        self.started_mono, self.interactive, arm=self._arm)
        try:
            before_exec = launch.prepare()
            launch.bind()
            launch.spawn(before_exec)
        finally:
            self.cgroup = launch.cgroup  # removed at the end, whatever happened
        self.plan, self.listener, self._pipes = launch.plan, launch.listener, launch.pipes
        self.child_env, self.env_file_values = launch.child_env, launch.env_file_values
        self.forensics = launch.forensics
        if launch.bind_notify_fd is not None:
            from .bindtrap import answer_binds

            self.bind_trap = answer_binds(self.reactor, launch.bind_notify_fd, self.listener,
                                          self.plan, self.log, on_bound=self._on_public_bind)
        return launch

    def _arm(self, pid: int) -> None:
        self.pid = pid
        self.inbox.arm(pid, group=self.config.kill_group)

    def _say_conditions(self) -> None:
        """What this run imposes on the child, in words, right after the spawn."""
        if not self.config.reproduces:
            return  # nothing imposed: nothing to say (the report works it out at the end)
        from .conditions import condition_lines, conditions

        self.conditions = conditions(self.config, self.environ, self.child_env,
                                     self.env_file_values)
        for line in condition_lines(self.conditions):
            self.log.info(line)

    def _on_public_bind(self) -> None:
        """A command not known to be a server binds the public port: it is one."""
        if self.startup is not None and self.startup.readiness is None and self.reaped is None:
            self.startup.watch(startup_timeout=False)

    def _start_relays(self) -> None:
        from .relay import Relay, Tail

        stderr_read, stdout_read = self._pipes
        if stderr_read is not None:
            self.tail = Tail()
            line_filter = self.forensics.line_filter() if self.forensics is not None else None
            self.relays.append(Relay(self.reactor, stderr_read, self.sinks[0], self.tail,
                                     line_filter=line_filter))
        if stdout_read is not None:
            stdout = Sink(self.reactor, 1)
            self.sinks.append(stdout)
            # One tail for both streams, in the order the supervisor read them.
            self.relays.append(Relay(self.reactor, stdout_read, stdout, self.tail))
        if self.stub is None or not self.plan.known_server:
            # No socket is handed over, so "ready" cannot be seen from outside; or a
            # command not known to be a server runs as one when it binds the port.
            self._enter(Phase.RUNNING)

    def _start_watching(self) -> None:
        """Every watcher is a timer on the reactor; the stub's first answers come first."""
        self.reactor.on_error = self._on_part_failed
        self.reactor.call_every(REAP_INTERVAL_S, self._reap_tick)
        # Answer health checks first: the watchers' imports (about 10 ms) can wait.
        self.reactor.call_later(WATCH_DELAY_S, self._start_watchers)
        self._start_health_check()

    def _start_watchers(self) -> None:
        if self.reaped is not None:
            return
        # Here, after the stub's first answers: a child this young has orphaned
        # nothing yet (and as PID 1 every orphan comes to us anyway).
        adopt_orphans(self.log)
        from .termination_log import TerminationLog
        from .watch import Watch, create_memory_watcher

        _ = self.notifier  # a bad SENTRY_DSN is said now; the redactor waits for a use
        self.watch = Watch(
            self.reactor, self.log, create_memory_watcher(self),
            self.config.memory_interval_s, TerminationLog(self.config.termination_log),
            phase=lambda: self.phase.value, alive=lambda: self.reaped is None,
            warn=lambda text, context: self._on_memory_warning(self.redact.text(text), context),
        )
        self._start_startup()
        if self.phase is Phase.STARTING and self.startup is not None:
            self.startup.watch()
            self.startup.watch_crashes()
        if self.forensics is not None and self.pid is not None:
            # Starting: not ready yet, or readiness is not tracked (no hand-off) and
            # the startup timeout has not passed.
            self.forensics.start_sampling(
                self.pid,
                lambda: (self.reaped is None and self.ready_after_s is None
                         and self.phase is not Phase.STOPPING
                         and self.uptime() < self.config.startup_timeout_s),
                self.environ.get("PATH"),
            )

    def _start_startup(self) -> None:
        """What watches the start; a command without the stub has no start to watch."""
        if self.stub is None or self.pid is None:
            return
        from .starting import Startup

        self.startup = Startup(
            self.reactor, self.log, self.config, self.plan, self.pid, self.stub, self.listener,
            self.relays[0] if self.tail is not None else None, self.started_mono,
            on_ready=self._on_ready, still_starting=self._still_starting,
            alive=lambda: self.reaped is None,
        )

    def _still_starting(self) -> bool:
        self._reap()  # an end at a deadline is that end, not a timeout
        return self.phase is Phase.STARTING and self.reaped is None

    def _on_memory_warning(self, text: str, context: dict[str, Any]) -> None:
        self.notifier.send_memory_warning(text, context)
        if self.forensics is not None:
            self.forensics.sample("memory warning")

    def _on_child_gone(self) -> None:
        """Drain what it printed, stop what it left behind, stop the watchers."""
        for relay in self.relays:
            relay.drain()
        assert self.pid is not None
        stop_group(self.pid, self.reactor, self.log)
        if self.startup is not None:
            self.startup.stop()
        if self.bind_trap is not None and not self.bind_trap.closed:
            self.reactor.remove_reader(self.bind_trap.notify_fd)
            self.bind_trap.close()
        if self.health_check is not None:
            self.health_check.stop()
        if self.forensics is not None:
            self.forensics.close()

    def _finish(self, exec_failure: Optional[ExecFailure] = None) -> int:
        from .collect import end_quiet_one_shot, finish_parts, run_facts

        if end_quiet_one_shot(self, exec_failure):
            return 0
        from .finish import finish  # only now: a quiet one-shot never imports it
        return finish(run_facts(self, exec_failure), finish_parts(self))

    # -- the phase -------------------------------------------------------------
    def _enter(self, phase: Phase) -> bool:
        """Move to ``phase`` if the table allows it; the one place the phase changes."""
        if phase not in TRANSITIONS[self.phase]:
            return False
        if self.phase is Phase.STARTING and self.startup is not None:
            self.startup.stop()
        self.phase = phase
        return True

    # -- readiness -------------------------------------------------------------
    def _on_app_accepts(self) -> None:
        if self.startup is not None:
            self.startup.app_accepts()

    def _on_ready(self, strategy: Strategy) -> None:
        # A command not known to be a server was RUNNING already when it bound the port.
        late = self.phase is Phase.RUNNING and self.ready_after_s is None
        if self.reaped is not None or not (late or self._enter(Phase.RUNNING)):
            return
        assert self.startup is not None
        self.startup.stop()
        self.ready_after_s = self.reactor.clock() - self.started_mono
        self.startup.hand_off(self.ready_after_s)
        if self.watch is not None:
            self.watch.write_status()
        if self.forensics is not None:
            self.forensics.on_ready(self.ready_after_s)

    def _start_health_check(self) -> None:
        if self.config.health_check is None:
            return
        from .platform_check import start_platform_check

        stub = self.stub
        self.health_check = start_platform_check(
            self.reactor, self.log, self.config, self.listener,
            stub_active=lambda: stub is not None and stub.phase.value != "ready",
            on_give_up=self._on_platform_gives_up,
        )

    def _on_platform_gives_up(self, reason: str) -> None:
        if self.reaped is not None:
            return
        if self.phase is Phase.STARTING and self.startup is not None:
            # The platform stops the container here; a stack dump says where it was.
            self.startup.give_up("not ready when the platform's health check gave up",
                                 f"{reason}: stopping the app, SIGABRT for a stack dump, "
                                 "then SIGKILL")
        else:
            self.log.warning(reason.replace("would give up now", "would replace this instance now"))

    # -- signals and reaping -------------------------------------------------------
    def _on_signal(self, signum: int, forwarded: bool) -> None:
        if signum == signal.SIGCHLD:
            self._reap()
            return
        alive = self.pid is not None and self.reaped is None
        if alive and not forwarded:
            # It came before the child was armed, or while reaping: forward it now.
            forwarded = self.inbox.forward(signum)
        # Forwarded from the handler, it reached the child even when an earlier
        # SIGCHLD's turn has reaped it since (it may have died of this very signal).
        reached = alive or forwarded
        if reached:
            self.forwarded.add(signum)
        self.signals.append((signal_name(signum), round(self.uptime(), 3)))
        if reached and signum in STOP_SIGNALS and self._enter(Phase.STOPPING):
            self.stop_signal = signum
            if self.reaped is not None:
                return  # it is over already: no grace to wait out
            grace = self.config.stop_timeout_s
            self.log.info(
                f"{signal_name(signum)} forwarded to pid {self.pid}; "
                f"waiting up to {grace:g} s for it to exit"
            )
            self.stop_timer = self.reactor.call_later(grace, self._on_stop_timeout)
            if self.forensics is not None:
                self.forensics.sample_before(grace, "stop grace")

    def _on_stop_timeout(self) -> None:
        # Timers run before pending signals are read: a child that exited just
        # in time must not be taken for one that did not.
        self._reap()
        if self.pid is None or self.reaped is not None:
            return
        self.stop_timed_out = True
        self.log.warning(
            f"pid {self.pid} did not exit within {self.config.stop_timeout_s:g} s; "
            "sending SIGKILL to its process group"
        )
        send_signal(self.pid, signal.SIGKILL, group=True)

    def _reap_tick(self) -> bool:
        # One wake a second for both nets: blocked signals others sent, a lost SIGCHLD.
        self.inbox.collect_pending()
        self._reap()
        return self.reaped is None

    def _reap(self) -> None:
        if self.pid is None:
            return
        with self.inbox.reaping():
            reaped = reap_all(self.pid)
            if reaped is not None:
                # Before the mask is lifted: a reaped pid is never signalled.
                self.inbox.disarm()
        if reaped is not None and self.reaped is None:
            self.reaped = reaped
            if self.stop_timer is not None:
                self.stop_timer.cancel()

    def _on_part_failed(self, error: BaseException, callback: Callable[[], None]) -> bool:
        """Log a bug in an optional part once, with its traceback, and let the app run on.

        The signal inbox and reaping are not optional: an error there ends the
        loop, and ``run`` falls back to forwarding and reaping alone.
        """
        owner = getattr(callback, "__self__", None)
        if owner is self.inbox or callback in (self._reap_tick, self._reap):
            return False
        name = getattr(callback, "__qualname__", repr(callback))
        self.log.error(f"internal error in {name} ({type(error).__name__}: {error}), that part "
                       "is switched off; the app runs on" + traceback_text(error))
        return True

    # -- what the end needs -------------------------------------------------------
    def uptime(self) -> float:
        return self.reactor.clock() - self.started_mono

    @property
    def redact(self) -> Redactor:
        if self._redact is None:
            from .redact import Redactor

            # The child's variables too: an env file's secrets are masked as well.
            self._redact = Redactor.from_environ({**self.child_env, **self.environ},
                                                 argv=self.config.command)
        return self._redact

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            from .notify import Notifier

            self._notifier = Notifier.from_config(self.reactor, self.log, self.config.sentry_dsn,
                                                  self.config.sentry_timeout_s, self.environ)
        return self._notifier


def run(config: Config, environ: Mapping[str, str], log: Logger) -> int:
    return Supervisor(config, environ, log).run()
