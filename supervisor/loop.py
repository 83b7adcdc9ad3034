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

import enum
import signal
import sys
import time

from .bindtrap import unavailable_reason
from .child import (
    ExecFailure,
    ExitStatus,
    holds_terminal,
)
from .config import Config, EarlyRequests
from .errors import UsageError
from .fallback import carry_on, direct_writer, traceback_text
from .handoff import HandoffMode, HandoffPlan, plan_handoff
from .listener import is_unix, loopback_address
from .log import Logger
from .output import Sink
from .pid1 import (
    STOP_SIGNALS,
    Reaped,
    SignalInbox,
    become_subreaper,
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
    from .facts import RunFacts
    from .finish import FinishParts
    from .forensics import Forensics
    from .health import HealthStub
    from .memory import MemoryFacts, MemoryWatcher
    from .notify import Notifier
    from .platform_check import PlatformCheck
    from .readiness import Strategy
    from .redact import Redactor
    from .relay import Relay, Tail
    from .starting import Startup
    from .watch import Watch

# A safety net under SIGCHLD, as tini's 1 s sigtimedwait: reap even if a wakeup was lost.
REAP_INTERVAL_S = 1.0
# After SIGABRT for a stack dump, how long faulthandler gets before SIGKILL.
ABORT_GRACE_S = 2.0
# After the spawn, the loop first serves the stub; memory and readiness start then.
WATCH_DELAY_S = 0.01


class Phase(enum.Enum):
    """Where the child was in its life; the report says which phase it died in."""

    STARTING = "starting"  # spawned, not yet ready
    RUNNING = "running"  # ready and serving (or readiness is not tracked)
    STOPPING = "stopping"  # a stop signal was forwarded


# Every allowed move; ``Supervisor._enter`` is the only place the phase changes.
TRANSITIONS = {
    Phase.STARTING: (Phase.RUNNING, Phase.STOPPING),
    Phase.RUNNING: (Phase.STOPPING,),
    Phase.STOPPING: (),
}


class Supervisor:
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
                return self._without_the_loop(error)
            finally:
                if self.cgroup is not None:
                    self.cgroup.remove()

    def _run(self) -> int:
        spawned = self._launch()
        if isinstance(spawned, ExecFailure):
            self._start_stub()
            return self._finish(exec_failure=spawned)
        self._start_stub()
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

    def _launch(self) -> int | ExecFailure:
        """Prepare, bind and spawn (``launch``); then the loop owns what it made."""
        from .launch import Launch

        launch = Launch(self.config, self.environ, self.log, self.plan, self.reactor,
                        self.started_mono, self.interactive, arm=self._arm)
        try:
            before_exec = launch.prepare()
            launch.bind()
            spawned = launch.spawn(before_exec)
        finally:
            self.cgroup = launch.cgroup  # removed at the end, whatever happened
        self.plan, self.listener, self._pipes = launch.plan, launch.listener, launch.pipes
        self.child_env, self.env_file_values = launch.child_env, launch.env_file_values
        self.forensics = launch.forensics
        if launch.bind_notify_fd is not None:
            self._answer_binds(launch.bind_notify_fd)
        return spawned

    def _arm(self, pid: int) -> None:
        self.pid = pid
        self.inbox.arm(pid, group=self.config.kill_group)

    def _say_conditions(self) -> None:
        """What this run imposes on the child, in words, right after the spawn."""
        from .conditions import condition_lines, conditions

        self.conditions = conditions(self.config, self.environ, self.child_env,
                                     self.env_file_values)
        for line in condition_lines(self.conditions):
            self.log.info(line)

    def _answer_binds(self, notify_fd: int) -> None:
        from .bindtrap import BindTrap

        assert self.listener is not None and self.plan.bind_port is not None
        trap = BindTrap(notify_fd, self.listener, self.plan.bind_port, self.log.info,
                        on_bound=self._on_public_bind)

        def on_readable() -> None:
            if not trap.on_readable():
                self.reactor.remove_reader(notify_fd)
                trap.close()

        self.bind_trap = trap
        self.reactor.add_reader(notify_fd, on_readable)

    def _on_public_bind(self) -> None:
        """A command not known to be a server binds the public port: it is one."""
        if self.startup is not None and self.startup.readiness is None and self.reaped is None:
            self.startup.watch(startup_timeout=False)

    def _start_stub(self) -> None:
        """Answer on the bound socket; until now the kernel's backlog held callers."""
        if self.listener is None:
            return
        from .health import HealthStub

        hold = self.config.early_requests is EarlyRequests.HOLD
        self.stub = HealthStub(
            self.reactor,
            self.listener,
            health_path=self.config.health_path,
            ready_path=self.config.ready_path,
            starting_status=self.config.starting_status,
            # In port mode other paths on the health port are not the app's traffic.
            hold_early_requests=(hold and self.plan.mode is not HandoffMode.PORT
                                 and not is_unix(self.listener)),
            hold_timeout_s=min(30.0, self.config.startup_timeout_s),
            log=self.log.warning,
            on_app_accepts=self._on_app_accepts,
        )
        self.stub.start()

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
            self.relays.append(Relay(self.reactor, stdout_read, stdout))
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
        # Here, after the stub's first answers: outside PID 1, ctypes costs a few
        # ms. A child this young has orphaned nothing yet (and as PID 1 every
        # orphan comes to us anyway).
        if not sys.platform.startswith("linux"):
            self.log.info(
                "not Linux: no subreaper, cgroup figures, OOM evidence or oom_score_adj; "
                "readiness from uvicorn's log lines"
            )
        elif not become_subreaper():
            self.log.warning("cannot adopt orphaned processes (not PID 1, no subreaper)")
        from .termination_log import TerminationLog
        from .watch import Watch

        _, redact = self.notifier, self.redact  # a bad SENTRY_DSN is said now
        self.watch = Watch(
            self.reactor, self.log, self._create_memory_watcher(),
            self.config.memory_interval_s, TerminationLog(self.config.termination_log),
            phase=lambda: self.phase.value, alive=lambda: self.reaped is None,
            warn=lambda text, context: self._on_memory_warning(redact.text(text), context),
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
                         and self._uptime() < self.config.startup_timeout_s),
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
        if self._one_shot_done_quietly(exec_failure):
            return 0
        from .finish import finish

        return finish(self._facts(exec_failure), self._finish_parts())

    def _one_shot_done_quietly(self, exec_failure: Optional[ExecFailure]) -> bool:
        """A command with no socket that exited 0 unasked, and nobody wants a report.

        ``finish`` would print no block and send nothing for it (cause ``exited``
        without a hand-off), so its imports are skipped: a short command then
        costs little more than tini.
        """
        watch = self.watch
        return (
            exec_failure is None and self.reaped is not None and self.reaped.wait_status == 0
            and self.plan.mode is HandoffMode.NONE and self.stop_signal is None
            and not self.config.report_file and self.health_check is None
            and (watch is None or not watch.termination_log.enabled)
        )

    def _without_the_loop(self, error: Exception) -> int:
        """The loop failed while the child runs: carry on as tini would (``fallback``)."""
        for sink in self.sinks:  # what is buffered, then the lines go out directly
            try:
                sink.flush(time.monotonic() + 1.0)
            except Exception:  # it may be what broke: go on without it
                pass
        self.log.set_writer(direct_writer(2))
        # Each open pipe (the relay closes its own at EOF) goes on where it went.
        pipes = [(fd, to) for fd, to in zip(self._pipes, (2, 1)) if fd is not None]
        copies = {fd: to for n, (fd, to) in enumerate(pipes)
                  if n >= len(self.relays) or not self.relays[n].closed}
        assert self.pid is not None

        def report() -> dict[str, object]:
            tail = self.tail.text() if self.tail is not None else ""
            return {"command": self.redact.argv(self.plan.argv), "phase": self.phase.value,
                    "uptime_s": round(self._uptime(), 3), "ready_after_s": self.ready_after_s,
                    "signals_received": [{"signal": name, "at_s": at} for name, at in self.signals],
                    "stderr_tail": self.redact.text(tail)}

        return carry_on(
            error, inbox=self.inbox, pid=self.pid, reaped=self.reaped, copies=copies,
            keep=self.tail.append if self.tail is not None else None, log=self.log,
            report_file=self.config.report_file, report=report, stop_signal=self.stop_signal,
        )

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

    # -- the platform's health check ---------------------------------------------
    def _start_health_check(self) -> None:
        spec = self.config.health_check
        if spec is None:
            return
        from .platform_check import PlatformCheck

        if self.listener is not None:
            address = loopback_address(self.listener)
        else:
            address = ("127.0.0.1", self.config.port or 8000)
        stub = self.stub
        try:
            self.health_check = PlatformCheck(
                self.reactor, self.log, spec, self.config.platform, address,
                stub_active=lambda: stub is not None and stub.phase.value != "ready",
                on_give_up=self._on_platform_gives_up,
            )
        except (RuntimeError, OSError) as error:  # no thread (pids limit), no pipe (EMFILE)
            self.log.warning(f"cannot run the platform's health check ({error}): switched off; "
                             "the app runs on")

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

    def _create_memory_watcher(self) -> MemoryWatcher:
        assert self.pid is not None
        from .memory import MemoryWatcher

        watcher = MemoryWatcher(
            self.config.memory_interval_s, self.config.memory_warn, clock=self.reactor.clock,
            cgroup=self.cgroup.memory if self.cgroup is not None else None,
        )
        watcher.start(self.pid, self.started_mono)
        return watcher

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
        self.signals.append((signal_name(signum), round(self._uptime(), 3)))
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

    # -- when a part of the supervisor fails ----------------------------------------
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

    # -- the facts ---------------------------------------------------------------
    def _uptime(self) -> float:
        return self.reactor.clock() - self.started_mono

    def _facts(self, exec_failure: Optional[ExecFailure]) -> RunFacts:
        from .facts import RunFacts

        exit = None if self.reaped is None else ExitStatus.from_wait_status(self.reaped.wait_status)
        startup = self.startup
        return RunFacts(
            command=tuple(self.config.command),
            argv=tuple(self.plan.argv),
            handoff=("none" if self.plan.mode is HandoffMode.BIND and (
                self.bind_trap is None or not self.bind_trap.answered) else self.plan.mode.value),
            pid=self.pid,
            started_at=self.started_at,
            ended_at=time.time(),
            uptime_s=self._uptime(),
            phase=self.phase.value,
            ready_after_s=self.ready_after_s,
            signals=tuple(self.signals),
            forwarded=frozenset(self.forwarded),
            stop_signal=self.stop_signal,
            stop_timeout_s=self.config.stop_timeout_s,
            stop_timed_out=self.stop_timed_out,
            startup_timed_out=startup is not None and startup.timed_out,
            startup_summary=startup.summary if startup is not None else "",
            exit=exit,
            exec_failure=exec_failure,
            memory=self._memory_facts(exit),
            stderr_tail=self.tail.text() if self.tail is not None else "",
            interactive=self.interactive,
        )

    def _memory_facts(self, exit: Optional[ExitStatus]) -> Optional[MemoryFacts]:
        if self.reaped is None or exit is None:
            return None
        # It may have ended before the watchers started: wait4's figures still count.
        memory = self.watch.memory if self.watch is not None else self._create_memory_watcher()
        facts: MemoryFacts = memory.finish(self.reaped.max_rss_bytes,
                                           killed_by_sigkill=exit.signal == signal.SIGKILL)
        return facts

    def _finish_parts(self) -> FinishParts:
        from .finish import FinishParts

        result = self.health_check.result() if self.health_check is not None else None
        return FinishParts(
            config=self.config, reactor=self.reactor, log=self.log, redact=self.redact,
            notifier=self.notifier, sinks=self.sinks, stub=self.stub, listener=self.listener,
            termination_log=self.watch.termination_log if self.watch is not None else None,
            health_check=result, conditions=self.conditions, child_env=self.child_env,
            environ=self.environ, forensics=self.forensics,
            startup_crash=self.startup.crash if self.startup is not None else None,
        )

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

            self._notifier = Notifier.from_config(
                self.reactor, self.log, self.config.sentry_dsn, self.config.sentry_timeout_s,
                self.environ,
            )
        return self._notifier


def _address_text(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(config: Config, environ: Mapping[str, str], log: Logger) -> int:
    return Supervisor(config, environ, log).run()
