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
import os
import signal
import sys
import time

from .bindtrap import unavailable_reason
from .child import ChildSpec, ExecFailure, ExitStatus, child_environment, enlarge_pipe, spawn
from .config import Config, EarlyRequests
from .errors import SupervisorError, UsageError
from .handoff import SYSTEMD_FIRST_FD, HandoffMode, HandoffPlan, plan_handoff
from .listener import address_text, bind_public, is_unix, loopback_address, plan_address_text
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
    from .facts import RunFacts
    from .finish import FinishParts
    from .forensics import Forensics
    from .health import HealthStub
    from .memory import MemoryFacts, MemoryWatcher
    from .notify import Notifier
    from .platform_check import PlatformCheck
    from .readiness import ReadinessWatcher, Strategy
    from .redact import Redactor
    from .relay import Relay, Tail
    from .startcrash import StartupCrashWatch
    from .tracebacks import ParsedTraceback
    from .child_cgroup import ChildCgroup
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
        # On a terminal the child gets the foreground, and Ctrl-C reaches it directly.
        self.interactive = os.isatty(0)
        self.pid: Optional[int] = None
        self.reaped: Optional[Reaped] = None
        self.ready_after_s: Optional[float] = None
        self.signals: list[tuple[str, float]] = []
        self.forwarded: set[int] = set()
        self.stop_signal: Optional[int] = None
        self.stop_timer: Optional[Timer] = None
        self.stop_timed_out = False
        self.startup_timer: Optional[Timer] = None
        self.startup_timed_out = False
        self.startup_summary = (
            f"not ready within {config.startup_timeout_s:g} s (--startup-timeout)"
        )
        self.child_env: dict[str, str] = {}
        self.cgroup: Optional[ChildCgroup] = None
        self.listener: Optional[socket.socket] = None
        self.sinks: list[Sink] = []
        self.relays: list[Relay] = []
        self.tail: Optional[Tail] = None
        self.stub: Optional[HealthStub] = None
        self.readiness: Optional[ReadinessWatcher] = None
        self.watch: Optional[Watch] = None
        self.health_check: Optional[PlatformCheck] = None
        self.forensics: Optional[Forensics] = None
        self._notifier: Optional[Notifier] = None
        self._redact: Optional[Redactor] = None
        self.startup_crashes: Optional[StartupCrashWatch] = None
        self.bind_trap: Optional[BindTrap] = None
        self.startup_crash: Optional[ParsedTraceback] = None

    # -- the steps -------------------------------------------------------------
    def run(self) -> int:
        stderr = Sink(self.reactor, 2)
        self.log.set_writer(stderr.write)
        self.sinks.append(stderr)
        with SignalInbox(self.reactor, self._on_signal) as self.inbox:
            try:
                return self._run()
            finally:
                if self.cgroup is not None:
                    self.cgroup.remove()

    def _run(self) -> int:
        before_exec = self._prepare_reproduction()
        self._bind()
        spawned = self._spawn_answering_binds(before_exec)
        if isinstance(spawned, ExecFailure):
            self._start_stub()
            return self._finish(exec_failure=spawned)
        self._start_stub()
        self._start_relays()
        self._start_watching()
        while self.reaped is None:
            self.reactor.run_once()
        self._on_child_gone()
        return self._finish()

    def _prepare_reproduction(self) -> tuple[Callable[[], None], ...]:
        """The platform's conditions: checked and set up before anything starts."""
        config = self.config
        base: Mapping[str, str] = self.environ
        if config.env_file is not None or config.clean_env:
            from .envfile import parse_env_file, reproduce_environment

            values = parse_env_file(config.env_file) if config.env_file else {}
            base = reproduce_environment(self.environ, values, config.clean_env)
        self.child_env = child_environment(base)
        steps: list[Callable[[], None]] = []
        if config.no_network:
            from .netns import check_can_unshare_network, enter_new_network_namespace

            check_can_unshare_network()
            steps.append(enter_new_network_namespace)
        if config.memory_limit is not None or config.cpu_limit is not None:
            from .child_cgroup import ChildCgroup

            self.cgroup = ChildCgroup.create(config.memory_limit, config.cpu_limit)
            steps.append(self.cgroup.join_in_child)
            limits = []
            if config.memory_limit is not None:
                limits.append(f"memory {config.memory_limit // (1 << 20)} MiB")
            if config.cpu_limit is not None:
                limits.append(f"CPU {config.cpu_limit:g}")
            self.log.info(f"reproducing limits on the child: {', '.join(limits)}")
        return tuple(steps)

    def _say_the_plan(self) -> None:
        """An address asked for and not served, or a command without the stub: never silent."""
        for level, line in self.plan.notices:
            (self.log.warning if level == "warning" else self.log.info)(line)

    def _bind(self) -> None:
        """Bind before the child starts: the port answers from the first moment."""
        try:
            self.listener = bind_public(self.plan)
        except OSError as error:
            why = f"cannot listen on {plan_address_text(self.plan)}: {error.strerror or error}"
            if self.plan.mode is not HandoffMode.BIND:
                raise SupervisorError(why) from None
            # It binds its own address: it may as well try, and say what it gets.
            self._replan(why)

    def _spawn_answering_binds(self, before_exec: tuple[Callable[[], None], ...]
                               ) -> int | ExecFailure:
        """Spawn; a child that binds its own address has that bind answered (``bindtrap``).

        Where the kernel refuses the filter, the child is started again without
        it, and without the stub (the app binds its own address), which is said.
        """
        if self.plan.mode is not HandoffMode.BIND:
            self._say_the_plan()
            return self._spawn(before_exec)
        from .bindtrap import Pending, refusal

        pending = Pending()
        environment = dict(self.child_env)  # as it was before the spawn added to it
        spawned = self._spawn((*before_exec, pending.install_in_child))
        why = refusal(spawned.message) if isinstance(spawned, ExecFailure) else None
        if why is None:
            self._say_the_plan()
            notify_fd = pending.receive()
            if notify_fd is not None:
                self._answer_binds(notify_fd)
            return spawned
        pending.close()
        self._replan(why)
        self._say_the_plan()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.child_env = environment
        return self._spawn(before_exec)

    def _replan(self, bind_unavailable: str) -> None:
        config = self.config
        self.plan = plan_handoff(config.handoff.value, config.command, config.host,
                                 config.port, config.health_port, self.environ, bind_unavailable)

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
        if self.readiness is None and self.reaped is None and self.stub is not None:
            self._watch_readiness(startup_timeout=False)

    def _spawn(self, before_exec: tuple[Callable[[], None], ...]) -> int | ExecFailure:
        stderr_read, stderr_write = os.pipe()
        enlarge_pipe(stderr_write)
        stdout_read = stdout_write = None
        if self.config.relay_stdout:
            stdout_read, stdout_write = os.pipe()
            enlarge_pipe(stdout_write)
        pass_fds = {}
        if self.listener is not None and self.plan.passes_socket:
            pass_fds[SYSTEMD_FIRST_FD] = self.listener.fileno()
        self.child_env.update(self.plan.env)
        self._prepare_forensics()
        result = spawn(ChildSpec(
            argv=self.plan.argv,
            env=self.child_env,
            stderr_fd=stderr_write,
            stdout_fd=stdout_write,
            pass_fds=pass_fds,
            set_listen_pid=self.plan.mode is HandoffMode.SYSTEMD,
            before_exec=before_exec,
            take_terminal=self.interactive,
        ))
        for fd in (stderr_write, stdout_write):
            if fd is not None:
                os.close(fd)
        self._pipes = (stderr_read, stdout_read)
        if isinstance(result, ExecFailure):
            for fd in self._pipes:
                if fd is not None:
                    os.close(fd)
            return result
        self.pid = result
        self.inbox.arm(result, group=self.config.kill_group)
        return result

    def _prepare_forensics(self) -> None:
        """The import profile's variable for a Python child (``forensics`` imports only os)."""
        from .forensics import Forensics, budget_of

        config = self.config
        self.forensics = Forensics(
            self.reactor, self.log, self.started_mono,
            getattr(config, "stack_interval_s", 1.0),
            budget_of(config.platform, config.health_check),
        )
        self.forensics.prepare(self.plan.argv, self.child_env,
                               disabled=getattr(config, "no_import_profile", False))

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
        from .memory import TerminationLog
        from .watch import Watch

        _, redact = self.notifier, self.redact  # a bad SENTRY_DSN is said now
        self.watch = Watch(
            self.reactor, self.log, self._create_memory_watcher(),
            self.config.memory_interval_s, TerminationLog(self.config.termination_log),
            phase=lambda: self.phase.value, alive=lambda: self.reaped is None,
            warn=lambda text, context: self._on_memory_warning(redact.text(text), context),
        )
        if self.phase is Phase.STARTING:
            self._watch_readiness()
            self._watch_startup_crashes()
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
        if self.readiness is not None:
            self.readiness.stop()
        if self.startup_crashes is not None:
            self.startup_crashes.stop()
        if self.bind_trap is not None and not self.bind_trap.closed:
            self.reactor.remove_reader(self.bind_trap.notify_fd)
            self.bind_trap.close()
        if self.health_check is not None:
            self.health_check.stop()
        if self.forensics is not None:
            self.forensics.close()

    def _finish(self, exec_failure: Optional[ExecFailure] = None) -> int:
        from .finish import finish

        return finish(self._facts(exec_failure), self._finish_parts())

    # -- the phase -------------------------------------------------------------
    def _enter(self, phase: Phase) -> bool:
        """Move to ``phase`` if the table allows it; the one place the phase changes."""
        if phase not in TRANSITIONS[self.phase]:
            return False
        if self.phase is Phase.STARTING:
            if self.readiness is not None:
                self.readiness.stop()
            if self.startup_crashes is not None:
                self.startup_crashes.stop()
            if self.startup_timer is not None:
                self.startup_timer.cancel()
        self.phase = phase
        return True

    # -- readiness -------------------------------------------------------------
    def _watch_readiness(self, startup_timeout: bool = True) -> None:
        assert self.pid is not None and self.stub is not None
        from .readiness import ReadinessWatcher, proc_readiness_supported

        stub = self.stub
        port_mode = self.plan.mode is HandoffMode.PORT
        self.readiness = ReadinessWatcher(
            self.reactor, pid=self.pid, on_ready=self._on_ready, listener=self.listener,
            pause_stub=None if port_mode or self.plan.unix_path else stub.pause_accepting,
            app_port=self.plan.app_port if port_mode else None,
        )
        if startup_timeout:
            self.startup_timer = self.reactor.call_later(
                self.config.startup_timeout_s, self._on_startup_timeout
            )
        if self.readiness.start(proc_readiness_supported()) is not None:
            self.log.info("readiness: /proc cannot tell here; using uvicorn's log lines")
            self.relays[0].on_chunk = self.readiness.chunk

    def _watch_startup_crashes(self) -> None:
        """Processes dying at start-up while the server waits on: concluded, not waited out."""
        if self.tail is None:
            return
        from .startcrash import StartupCrashWatch

        self.startup_crashes = watch = StartupCrashWatch(
            self.reactor, reloads=self.plan.reloads, started=self.started_mono,
            on_conclude=self._on_startup_crash_loop,
            on_crash=self._on_reload_crash,
        )
        relay = self.relays[0]
        previous = relay.on_chunk

        def chunk(data: bytes) -> None:
            if previous is not None:
                previous(data)
            watch.chunk(data)

        relay.on_chunk = chunk

    def _on_startup_crash_loop(self, traceback: ParsedTraceback, deaths: int) -> None:
        self._reap()
        if self.phase is not Phase.STARTING or self.reaped is not None or self.pid is None:
            return
        self.startup_crash = traceback
        grace = self.config.stop_timeout_s
        self.log.warning(
            f"the app died {deaths} time(s) while starting ({traceback.summary()}) and the "
            f"server waits on: stopping it (SIGTERM, SIGKILL in {grace:g} s)"
        )
        send_signal(self.pid, signal.SIGTERM, group=True)
        self.reactor.call_later(grace, self._kill_group)

    def _on_reload_crash(self, traceback: ParsedTraceback) -> None:
        from .causes import frame_text

        where = frame_text(traceback.innermost_app_frame())
        self.log.error(f"the app crashed while starting: {traceback.summary()}"
                       + (f" at {where}" if where else "") + "; the reloader waits for a change")

    def _on_app_accepts(self) -> None:
        if self.readiness is not None:
            self.readiness.app_accepts()

    def _on_ready(self, strategy: Strategy) -> None:
        # A command not known to be a server was RUNNING already when it bound the port.
        late = self.phase is Phase.RUNNING and self.ready_after_s is None
        if self.reaped is not None or not (late or self._enter(Phase.RUNNING)):
            return
        if late and self.readiness is not None:
            self.readiness.stop()
        self.relays[0].on_chunk = None
        self.ready_after_s = self.reactor.clock() - self.started_mono
        assert self.stub is not None and self.listener is not None
        if self.plan.mode is HandoffMode.PORT:
            self.stub.mark_serving()
            self.log.info(f"ready after {self.ready_after_s:.2f} s: the app answers on port "
                          f"{self.plan.app_port}")
        elif is_unix(self.listener):
            self.stub.hand_off((self.plan.unix_path,))
            self.log.info(f"ready after {self.ready_after_s:.2f} s: the app owns "
                          f"{address_text(self.listener)} now")
        else:
            address = loopback_address(self.listener)
            self.stub.hand_off(address)
            self.log.info(f"ready after {self.ready_after_s:.2f} s: the app owns "
                          f"{address_text(self.listener)} now")
            from .appcheck import warn_if_health_path_missing

            warn_if_health_path_missing(self.reactor, self.log, address, self.config.health_path)
        if self.watch is not None:
            self.watch.write_status()
        if self.forensics is not None:
            self.forensics.on_ready(self.ready_after_s)

    def _on_startup_timeout(self) -> None:
        self._reap()  # as in _on_stop_timeout: an end at the deadline is that end
        if self.phase is not Phase.STARTING or self.reaped is not None:
            return
        self.startup_timed_out = True
        self.log.warning(
            f"not ready within {self.config.startup_timeout_s:g} s: sending SIGABRT for a "
            f"stack dump, SIGKILL in {ABORT_GRACE_S:g} s"
        )
        self._abort_for_stack_dump()

    def _abort_for_stack_dump(self) -> None:
        """SIGABRT (faulthandler prints where every thread is), then SIGKILL the group."""
        assert self.pid is not None
        send_signal(self.pid, signal.SIGABRT, group=True)
        self.reactor.call_later(ABORT_GRACE_S, self._kill_group)

    def _kill_group(self) -> None:
        if self.pid is not None and self.reaped is None:
            send_signal(self.pid, signal.SIGKILL, group=True)

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
        self.health_check = PlatformCheck(
            self.reactor, self.log, spec, self.config.platform, address,
            stub_active=lambda: stub is not None and stub.phase.value != "ready",
            on_give_up=self._on_platform_gives_up,
        )

    def _on_platform_gives_up(self, reason: str) -> None:
        if self.reaped is not None:
            return
        if self.phase is Phase.STARTING:
            # The platform stops the container here; a stack dump says where it was.
            self.startup_timed_out = True
            self.startup_summary = "not ready when the platform's health check gave up"
            self.log.warning(f"{reason}: stopping the app, SIGABRT for a stack dump, "
                             "then SIGKILL")
            self._abort_for_stack_dump()
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
            # It came before the spawn, or while reaping: forward it now.
            assert self.pid is not None
            send_signal(self.pid, signum, group=self.config.kill_group)
        if alive:
            self.forwarded.add(signum)
        self.signals.append((signal_name(signum), round(self._uptime(), 3)))
        if alive and signum in STOP_SIGNALS and self._enter(Phase.STOPPING):
            self.stop_signal = signum
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
        import traceback

        name = getattr(callback, "__qualname__", repr(callback))
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        self.log.error(f"internal error in {name}, that part is switched off; the app runs on:\n"
                       + "".join(lines).rstrip())
        return True

    # -- the facts ---------------------------------------------------------------
    def _uptime(self) -> float:
        return self.reactor.clock() - self.started_mono

    def _facts(self, exec_failure: Optional[ExecFailure]) -> RunFacts:
        from .facts import RunFacts

        exit = None if self.reaped is None else ExitStatus.from_wait_status(self.reaped.wait_status)
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
            startup_timed_out=self.startup_timed_out,
            startup_summary=self.startup_summary,
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
            health_check=result, forensics=self.forensics, startup_crash=self.startup_crash,
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
