"""The one loop that ties the parts together, from spawn to exit status.

Owns: the run's state (phase, signals received, the stop grace, readiness,
the startup timeout), the order of events, and the hand-over of facts to
``causes`` and ``report``. Everything runs in one thread on one ``Reactor``;
the few blocking things (an HTTP check of the app, Sentry delivery) run in
threads that report back through ``Reactor.call_soon_threadsafe``.

Data flows one way: Config -> spawn -> watch -> cause -> report -> status.
"""

from __future__ import annotations

import enum
import os
import signal
import sys
import time

from .child import ChildSpec, ExecFailure, ExitStatus, child_environment, enlarge_pipe, spawn
from .config import Config, EarlyRequests
from .errors import SupervisorError, UsageError
from .handoff import SYSTEMD_FIRST_FD, HandoffMode, HandoffPlan, plan_handoff
from .listener import bind_listener, loopback_address
from .log import Logger
from .output import Sink
from .pid1 import (
    STOP_SIGNALS,
    Reaped,
    SignalInbox,
    become_subreaper,
    group_is_alive,
    reap_all,
    send_signal,
    signal_name,
)
from .reactor import Reactor, Timer

# Only what is needed until the child is spawned is imported above: every
# millisecond here delays the app's start. The rest (the stub's HTTP, causes,
# tracebacks, the report, memory, threads) is imported where it is first used.
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import socket
    import threading
    from typing import Any, Callable, Mapping, Optional

    from .causes import Outcome
    from .health import HealthStub
    from .memory import MemoryFacts, MemoryWatcher, TerminationLog
    from .probes import HealthCheckResult, PlatformHealthCheck
    from .redact import Redactor
    from .relay import Relay, Tail
    from .report import Report
    from .reproduce import ChildCgroup

# A safety net under SIGCHLD, as tini's 1 s sigtimedwait: reap even if a wakeup was lost.
REAP_INTERVAL_S = 1.0
# How long the final report may wait for a stalled log consumer before giving up.
FINAL_FLUSH_S = 5.0
# Readiness is polled only while starting; often enough to notice within 20 ms.
READINESS_POLL_S = 0.02
# In port mode readiness is a TCP connect to the app's own port: a bit less often.
PORT_POLL_S = 0.05
# After SIGABRT for a stack dump, how long faulthandler gets before SIGKILL.
ABORT_GRACE_S = 2.0
# After the child ended, answer what waits in the backlog for at most this long.
STUB_LINGER_S = 0.2
# A server that waits with poll/select (gunicorn's sync workers) never shows the
# socket in an epoll set: then, every so often, the stub steps aside and the
# supervisor connects to see whether the app accepts the connection.
ACCEPT_PROBE_EVERY_S = 1.0
ACCEPT_PROBE_WAIT_S = 0.2
ACCEPT_PROBE_STEP_S = 0.01
# uvicorn's own lines, for platforms where /proc cannot tell readiness.
READY_LOG_MARKERS = (b"Application startup complete", b"Uvicorn running on")
TERMINATION_STATUS_EVERY_S = 10.0
# What is left of the child's process group when it ended (the workers of a dead
# master) gets SIGTERM, then SIGKILL after this long: as PID 1 the kernel would
# end them anyway, and elsewhere they would go on holding the port and the pipes.
LEFTOVER_GRACE_S = 1.0
# After the spawn, the loop first serves the stub; memory and readiness start then.
WATCH_DELAY_S = 0.01


class Phase(enum.Enum):
    """Where the child was in its life; the report says which phase it died in."""

    STARTING = "starting"  # spawned, not yet ready
    RUNNING = "running"  # ready and serving (or readiness is not tracked)
    STOPPING = "stopping"  # a stop signal was forwarded


class Supervisor:
    def __init__(self, config: Config, environ: Mapping[str, str], log: Logger) -> None:
        self.config = config
        self.environ = environ
        self.log = log
        self._redact: Optional[Redactor] = None
        try:
            self.plan: HandoffPlan = plan_handoff(
                config.handoff.value, config.command, config.host, config.port,
                config.health_port, environ,
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
        self.sentry_dsn = self._sentry_dsn()
        self.reactor = Reactor()
        self.phase = Phase.STARTING
        self.pid: Optional[int] = None
        self.started_at = time.time()
        self.started_mono = self.reactor.clock()
        self.ready_after_s: Optional[float] = None
        self.signals: list[tuple[str, float]] = []
        self.forwarded: set[int] = set()
        self.stop_signal: Optional[int] = None
        self.stop_timer: Optional[Timer] = None
        self.stop_timed_out = False
        self.startup_timer: Optional[Timer] = None
        self.startup_timed_out = False
        self.reaped: Optional[Reaped] = None
        self.tail: Optional[Tail] = None
        self.relays: list[Relay] = []
        self.sinks: list[Sink] = []
        self.listener: Optional[socket.socket] = None
        self.stub: Optional[HealthStub] = None
        self.memory: Optional[MemoryWatcher] = None
        self.memory_off_logged = False
        self.termination_log: Optional[TerminationLog] = None
        self.threads: list[threading.Thread] = []
        self.cgroup: Optional[ChildCgroup] = None
        self.child_env: dict[str, str] = {}
        self.health_check: Optional[PlatformHealthCheck] = None
        self.health_check_gave_up = False
        # On a terminal the child gets the foreground, and Ctrl-C reaches it directly.
        self.interactive = os.isatty(0)

    @property
    def redact(self) -> Redactor:
        if self._redact is None:
            from .redact import Redactor

            self._redact = Redactor.from_environ(self._secrets_source())
        return self._redact

    def _secrets_source(self) -> dict[str, str]:
        # The child's variables too: an env file's secrets are masked as well.
        return {**self.child_env, **self.environ}

    def _sentry_dsn(self) -> Optional[str]:
        dsn = self.config.sentry_dsn
        if dsn is None:
            return None
        from .config import parse_dsn

        try:
            return parse_dsn("SENTRY_DSN", dsn)
        except UsageError as error:
            # Only SENTRY_DSN can get here (a bad --sentry-dsn is exit 2): the
            # app may use it too, so it is not a reason to refuse to start.
            self.log.warning(f"{error}; crash events will not be sent")
            return None

    # -- start ---------------------------------------------------------------
    def run(self) -> int:
        stderr = Sink(self.reactor, 2)
        self.log.set_writer(stderr.write)
        self.sinks.append(stderr)
        inbox = SignalInbox(self.reactor, self._on_signal)
        self.inbox = inbox
        try:
            return self._run()
        finally:
            inbox.close()
            if self.cgroup is not None:
                self.cgroup.remove()

    def _run(self) -> int:
        before_exec = self._prepare_reproduction()
        if self.plan.stub_address is not None:
            self._bind(self.plan.stub_address)
        stderr_read, stderr_write = os.pipe()
        enlarge_pipe(stderr_write)
        stdout_read = stdout_write = None
        if self.config.relay_stdout:
            stdout_read, stdout_write = os.pipe()
            enlarge_pipe(stdout_write)
        pass_fds = {}
        if self.listener is not None and self.plan.passes_socket:
            pass_fds[SYSTEMD_FIRST_FD] = self.listener.fileno()
        env = self.child_env
        env.update(self.plan.env)
        result = spawn(ChildSpec(
            argv=self.plan.argv,
            env=env,
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
        if isinstance(result, ExecFailure):
            for fd in (stderr_read, stdout_read):
                if fd is not None:
                    os.close(fd)
            from .causes import Ending, classify

            self._start_stub()
            return self._finish(classify(Ending(
                exit=None, exec_failure=result, command=self.config.command[0]
            )), None, None)

        self.pid = result
        self.inbox.arm(result, group=self.config.kill_group)
        # From here on the child runs: the rest may be imported.
        from .relay import Relay, Tail

        self._start_stub()
        self.tail = Tail()
        self.relays.append(Relay(self.reactor, stderr_read, self.sinks[0], self.tail))
        if stdout_read is not None:
            stdout = Sink(self.reactor, 1)
            self.sinks.append(stdout)
            self.relays.append(Relay(self.reactor, stdout_read, stdout))
        if self.stub is None:
            # No socket is handed over, so "ready" cannot be seen from outside.
            self.phase = Phase.RUNNING
        self._schedule_reap()
        # Answer health checks first: the watchers' imports (about 10 ms) can wait.
        self.reactor.call_later(WATCH_DELAY_S, self._start_watching)
        self._start_health_check()

        while self.reaped is None:
            self.reactor.run_once()

        for relay in self.relays:
            relay.drain()
        self._stop_leftovers()
        self._stop_health_check()
        exit = ExitStatus.from_wait_status(self.reaped.wait_status)
        if self.memory is None:
            # It ended before the watchers started: wait4's figures still count.
            self.memory = self._create_memory_watcher()
        facts = None
        if self.memory is not None:
            facts = self.memory.finish(self.reaped.max_rss_bytes,
                                       killed_by_sigkill=exit.signal == signal.SIGKILL)
        from .causes import Ending, classify

        outcome = classify(Ending(
            exit=exit,
            stop_signal=self.stop_signal,
            stop_timed_out=self.stop_timed_out,
            startup_timed_out=self.startup_timed_out or self.health_check_gave_up,
            startup_summary=(
                "not ready when the platform's health check gave up"
                if self.health_check_gave_up
                else f"not ready within {self.config.startup_timeout_s:g} s (--startup-timeout)"
            ),
            oom_evidence=facts.oom_evidence if facts is not None else None,
            stderr_tail=self._tail_text(),
            stop_timeout_s=self.config.stop_timeout_s,
            command=self.config.command[0],
            terminal_interrupt=self.interactive,
            forwarded=frozenset(self.forwarded),
        ))
        return self._finish(outcome, exit, facts)

    def _prepare_reproduction(self) -> tuple[Callable[[], None], ...]:
        """The platform's conditions: checked and set up before anything starts."""
        config = self.config
        base: Mapping[str, str] = self.environ
        if config.env_file is not None or config.clean_env:
            from .reproduce import parse_env_file, reproduce_environment

            values = parse_env_file(config.env_file) if config.env_file else {}
            base = reproduce_environment(self.environ, values, config.clean_env)
        self.child_env = child_environment(base)
        steps: list[Callable[[], None]] = []
        if config.no_network:
            from .reproduce import check_can_unshare_network, enter_new_network_namespace

            check_can_unshare_network()
            steps.append(enter_new_network_namespace)
        if config.memory_limit is not None or config.cpu_limit is not None:
            from .reproduce import ChildCgroup

            self.cgroup = ChildCgroup.create(config.memory_limit, config.cpu_limit)
            steps.append(self.cgroup.join_in_child)
            limits = []
            if config.memory_limit is not None:
                limits.append(f"memory {config.memory_limit // (1 << 20)} MiB")
            if config.cpu_limit is not None:
                limits.append(f"CPU {config.cpu_limit:g}")
            self.log.info(f"reproducing limits on the child: {', '.join(limits)}")
        return tuple(steps)

    def _start_health_check(self) -> None:
        spec = self.config.health_check
        if spec is None:
            return
        from .probes import PlatformHealthCheck

        if self.listener is not None:
            address = loopback_address(self.listener)
        else:
            address = ("127.0.0.1", self.config.port or 8000)
        stub = self.stub
        self.health_check = PlatformHealthCheck(
            spec, address,
            stub_active=lambda: stub is not None and stub.phase.value != "ready",
        )
        self.reactor.add_reader(self.health_check.wakeup_fd, self._on_health_check)
        self.health_check.start()
        self.log.info(f"probing {address[0]}:{address[1]} as "
                      f"{self.config.platform or 'the platform'} would: {spec.describe()}")

    def _on_health_check(self) -> None:
        assert self.health_check is not None
        result = self.health_check.take_wakeup()
        if not result.final and not result.passed:
            return
        who = self.config.platform or "the platform"
        if result.passed:
            # Probing goes on (a later failure would replace the instance).
            self.log.info(f"{who}'s health check passed: {result.reason}")
            return
        self.reactor.remove_reader(self.health_check.wakeup_fd)
        if self.reaped is not None or self.pid is None:
            return
        if self.phase is Phase.STARTING:
            # The platform stops the container here; a stack dump says where it was.
            self.health_check_gave_up = True
            self.log.warning(f"{who} would give up now ({result.reason}): stopping the app, "
                             "SIGABRT for a stack dump, then SIGKILL")
            self._abort_for_stack_dump()
        else:
            self.log.warning(f"{who} would replace this instance now: {result.reason}")

    def _stop_health_check(self) -> Optional[HealthCheckResult]:
        if self.health_check is None:
            return None
        self.health_check.stop()
        self.reactor.remove_reader(self.health_check.wakeup_fd)
        result = self.health_check.result()
        self.health_check.close()
        return result

    def _tail_text(self) -> str:
        return self.tail.text() if self.tail is not None else ""

    def _bind(self, address: tuple[str, int]) -> None:
        """Bind before the child starts: the port answers from the first moment."""
        host, port = address
        try:
            self.listener = bind_listener(host, port)
        except OSError as error:
            raise SupervisorError(
                f"cannot listen on {host}:{port}: {error.strerror or error}"
            ) from None

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
            hold_early_requests=hold and self.plan.mode is not HandoffMode.PORT,
            hold_timeout_s=min(30.0, self.config.startup_timeout_s),
            log=self.log.warning,
            on_app_accepts=self._on_app_accepts,
        )
        self.stub.start()

    def _create_memory_watcher(self) -> MemoryWatcher:
        assert self.pid is not None
        from .memory import MemoryWatcher

        watcher = MemoryWatcher(
            self.config.memory_interval_s, self.config.memory_warn, clock=self.reactor.clock,
            cgroup=self.cgroup.memory if self.cgroup is not None else None,
        )
        watcher.start(self.pid, self.started_mono)
        return watcher

    def _start_watching(self) -> None:
        if self.pid is None or self.reaped is not None:
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

        self.memory = self._create_memory_watcher()
        self.reactor.call_later(self.config.memory_interval_s, self._sample_memory)
        self.termination_log = TerminationLog(self.config.termination_log)
        if self.termination_log is not None and self.termination_log.enabled:
            self._write_termination_status()
        if self.stub is None:
            return  # readiness is not tracked without a hand-off (see _run)
        self.startup_timer = self.reactor.call_later(
            self.config.startup_timeout_s, self._on_startup_timeout
        )
        from .readiness import proc_readiness_supported

        if self.plan.mode is HandoffMode.PORT:
            self.reactor.call_later(PORT_POLL_S, self._poll_app_port)
        elif proc_readiness_supported():
            self.reactor.call_later(READINESS_POLL_S, self._poll_readiness)
            self.reactor.call_later(ACCEPT_PROBE_EVERY_S, self._start_accept_probe)
        else:
            self.log.info("readiness: /proc cannot tell here; using uvicorn's log lines")
            self.relays[0].on_chunk = self._watch_log_for_readiness

    # -- readiness -------------------------------------------------------------
    def _poll_readiness(self) -> None:
        if self.phase is not Phase.STARTING or self.reaped is not None or self.pid is None:
            return
        assert self.listener is not None
        from .readiness import descendants, socket_in_epoll

        inode = os.fstat(self.listener.fileno()).st_ino
        if socket_in_epoll(descendants(self.pid), inode):
            self._on_ready()
        else:
            self.reactor.call_later(READINESS_POLL_S, self._poll_readiness)

    def _poll_app_port(self) -> None:
        if self.phase is not Phase.STARTING or self.reaped is not None:
            return
        assert self.plan.app_port is not None
        from .readiness import (
            descendants,
            listening_inodes,
            owns_socket,
            proc_readiness_supported,
        )

        if self.pid is not None and proc_readiness_supported():
            # A listening socket on the app's port, on any address, owned by
            # the child or one of its workers (not by whoever held the port).
            inodes = listening_inodes(self.plan.app_port)
            ready = bool(inodes) and owns_socket(descendants(self.pid), inodes)
        else:
            import socket

            try:
                with socket.create_connection(("127.0.0.1", self.plan.app_port), timeout=0.05):
                    ready = True
            except OSError:
                ready = False
        if ready:
            self._on_ready()
        else:
            self.reactor.call_later(PORT_POLL_S, self._poll_app_port)

    def _start_accept_probe(self) -> None:
        """Pause the stub, connect, and watch whether the app accepts the connection."""
        if self.phase is not Phase.STARTING or self.reaped is not None:
            return
        assert self.stub is not None and self.listener is not None
        import socket

        from .readiness import server_side_inode

        stub = self.stub
        host, port = loopback_address(self.listener)
        stub.pause_accepting(True)
        try:
            probe = socket.create_connection((host, port), timeout=0.05)
        except OSError:
            stub.pause_accepting(False)
            self.reactor.call_later(ACCEPT_PROBE_EVERY_S, self._start_accept_probe)
            return
        client_port = probe.getsockname()[1]
        deadline = self.reactor.clock() + ACCEPT_PROBE_WAIT_S

        def check() -> None:
            # With the stub paused, only the child (or its workers) can accept it.
            accepted = bool(server_side_inode(port, client_port))
            starting = self.phase is Phase.STARTING and self.reaped is None
            if starting and not accepted and self.reactor.clock() < deadline:
                self.reactor.call_later(ACCEPT_PROBE_STEP_S, check)
                return
            probe.close()
            stub.pause_accepting(False)
            if starting and accepted:
                self._on_ready()
            elif starting:
                self.reactor.call_later(ACCEPT_PROBE_EVERY_S, self._start_accept_probe)

        self.reactor.call_later(ACCEPT_PROBE_STEP_S, check)

    def _on_app_accepts(self) -> None:
        """The child made the shared socket blocking: it accepts on it, so it is ready."""
        if self.phase is Phase.STARTING and self.reaped is None:
            self._on_ready()

    def _watch_log_for_readiness(self, chunk: bytes) -> None:
        if self.phase is Phase.STARTING and any(m in chunk for m in READY_LOG_MARKERS):
            self.relays[0].on_chunk = None
            self._on_ready()

    def _on_ready(self) -> None:
        self.phase = Phase.RUNNING
        self.ready_after_s = self.reactor.clock() - self.started_mono
        if self.startup_timer is not None:
            self.startup_timer.cancel()
        assert self.stub is not None and self.listener is not None
        if self.plan.mode is HandoffMode.PORT:
            self.stub.mark_serving()
            self.log.info(f"ready after {self.ready_after_s:.2f} s: the app answers on port "
                          f"{self.plan.app_port}")
        else:
            address = loopback_address(self.listener)
            self.stub.hand_off(address)
            self.log.info(f"ready after {self.ready_after_s:.2f} s: the app owns "
                          f"{_address_text(self.listener)} now")
            self._in_thread(lambda: self._check_app_health_path(address))
        if self.termination_log is not None and self.termination_log.enabled:
            self._write_termination_status()

    def _check_app_health_path(self, address: tuple[str, int]) -> None:
        """After hand-off the platform asks the app itself: does it know the path?

        One plain HTTP/1.1 request over a socket: an HTTP client library would
        add more to the supervisor's memory than everything else it holds.
        """
        import socket

        host, port = address
        request = (
            f"GET {self.config.health_path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: supervisor\r\nConnection: close\r\n\r\n"
        ).encode("ascii", "replace")
        try:
            with socket.create_connection((host, port), timeout=5.0) as connection:
                connection.sendall(request)
                status_line = connection.recv(64).split(b"\r\n", 1)[0]
        except OSError:
            return
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status == 404:
            message = (
                f"the app answers 404 on {self.config.health_path}: the platform's health "
                "check will fail now that the app owns the port (point the check, or "
                "--health-path, at a path the app serves)"
            )
            self.reactor.call_soon_threadsafe(lambda: self.log.warning(message))

    def _on_startup_timeout(self) -> None:
        self._reap()  # as in _on_stop_timeout: an end at the deadline is that end
        if self.phase is not Phase.STARTING or self.reaped is not None or self.pid is None:
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

    # -- memory ----------------------------------------------------------------
    def _sample_memory(self) -> None:
        if self.reaped is not None or self.memory is None:
            return
        warning = self.memory.sample()
        if warning is not None:
            self.log.warning(warning.message())
            self._send_memory_warning(warning.message())
        if self.memory.disabled_reason is not None:
            if not self.memory_off_logged:
                self.memory_off_logged = True
                self.log.warning(self.memory.disabled_reason)
            return
        self.reactor.call_later(self.config.memory_interval_s, self._sample_memory)

    def _write_termination_status(self) -> None:
        if self.termination_log is None or self.memory is None:
            return
        self.termination_log.write_status(
            f"supervisor: {self.phase.value}; {self.memory.status()}"
        )
        if self.reaped is None:
            self.reactor.call_later(TERMINATION_STATUS_EVERY_S, self._write_termination_status)

    # -- signals ---------------------------------------------------------------
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
        at_s = round(self.reactor.clock() - self.started_mono, 3)
        self.signals.append((signal_name(signum), at_s))
        if not alive:
            return
        if signum in STOP_SIGNALS and self.stop_signal is None:
            self.stop_signal = signum
            self.phase = Phase.STOPPING
            grace = self.config.stop_timeout_s
            self.log.info(
                f"{signal_name(signum)} forwarded to pid {self.pid}; "
                f"waiting up to {grace:g} s for it to exit"
            )
            self.stop_timer = self.reactor.call_later(grace, self._on_stop_timeout)

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

    def _stop_leftovers(self) -> None:
        assert self.pid is not None
        if not send_signal(self.pid, signal.SIGTERM, group=True):
            return  # nobody is left in the group
        self.log.info(f"stopping what is left of process group {self.pid} "
                      f"(SIGTERM, SIGKILL after {LEFTOVER_GRACE_S:g} s)")
        deadline = self.reactor.clock() + LEFTOVER_GRACE_S
        while self.reactor.clock() < deadline:
            reap_all(self.pid)  # members re-parented to us leave zombies
            if not group_is_alive(self.pid):
                reap_all(self.pid)  # those that died since the last pass
                return
            self.reactor.run_once(max_wait=0.02)
        send_signal(self.pid, signal.SIGKILL, group=True)
        reap_all(self.pid)

    def _schedule_reap(self) -> None:
        self._reap()
        if self.reaped is None:
            self.reactor.call_later(REAP_INTERVAL_S, self._schedule_reap)

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

    # -- threads ---------------------------------------------------------------
    def _in_thread(self, work: Callable[[], None]) -> threading.Thread:
        """Run blocking work (HTTP) off the loop; it reports back via the reactor."""
        import threading

        self.reactor.enable_threads()
        thread = threading.Thread(target=work, daemon=True, name="supervisor-worker")
        thread.start()
        self.threads.append(thread)
        return thread

    def _run_loop_until(self, done: Callable[[], bool], deadline: float) -> None:
        """Keep serving (stub, signals) while waiting for a thread or a deadline."""
        while not done() and self.reactor.clock() < deadline:
            self.reactor.run_once(max_wait=min(0.05, max(0.0, deadline - self.reactor.clock())))

    # -- Sentry ----------------------------------------------------------------
    def _sentry_release(self) -> tuple[Optional[str], Optional[str]]:
        return self.environ.get("SENTRY_RELEASE") or None, (
            self.environ.get("SENTRY_ENVIRONMENT") or None
        )

    def _send_memory_warning(self, message: str) -> None:
        if self.sentry_dsn is None:
            return
        dsn = self.sentry_dsn
        last = self.memory.last_sample if self.memory is not None else None
        memory: dict[str, Any] = {}
        if last is not None and last.cgroup is not None:
            memory = {"usage_bytes": last.cgroup.usage_bytes,
                      "cgroup_limit_bytes": last.cgroup.limit_bytes,
                      "peak_rss_bytes": last.tree_rss_bytes}
        release, environment = self._sentry_release()

        def send() -> None:
            from .sentry import build_warning_event, deliver

            event = build_warning_event(self.redact.text(message), memory,
                                        release=release, environment=environment)
            result = deliver(event, [], dsn=dsn, timeout_s=self.config.sentry_timeout_s)
            self.reactor.call_soon_threadsafe(
                lambda: self.log.info(f"sentry: memory warning {_delivery_text(result)}")
            )

        self._in_thread(send)

    def _deliver_crash(self, report: Report) -> Report:
        """Send the crash event, keeping the stub and signals served meanwhile."""
        assert self.sentry_dsn is not None
        import dataclasses

        from .sentry import attachments_for, build_event, deliver, new_event_id

        data = report.as_json()
        release, environment = self._sentry_release()
        event = build_event(data, release=release, environment=environment,
                            event_id=new_event_id())
        attachments = attachments_for(data)
        results: list[Any] = []
        dsn, timeout = self.sentry_dsn, self.config.sentry_timeout_s
        self._in_thread(lambda: results.append(
            deliver(event, attachments, dsn=dsn, timeout_s=timeout)))
        self._run_loop_until(lambda: bool(results), self.reactor.clock() + timeout + 0.3)
        if not results:
            self.log.warning(f"sentry: not delivered (timed out after {timeout:g} s)")
            return dataclasses.replace(report, extra={**report.extra, "sentry": {
                "delivered": False, "detail": f"timed out after {timeout:g} s"}})
        delivery = results[0]
        self.log.info(f"sentry: {_delivery_text(delivery)}")
        return dataclasses.replace(
            report,
            sentry_event_id=delivery.event_id,
            extra={**report.extra,
                   "sentry": {"delivered": delivery.delivered, "detail": delivery.detail}},
        )

    # -- end -------------------------------------------------------------------
    def _finish(
        self, outcome: Outcome, exit: Optional[ExitStatus], memory: Optional[MemoryFacts]
    ) -> int:
        from .report import human_block

        if self.stub is not None:
            # Accept again at once: what waits in the backlog gets the cause, not a refusal.
            self.stub.take_back(outcome.cause.value)
        report = self._build_report(outcome, exit, memory)
        # The file first (quick), so that the block can say whether it exists.
        report_error = self._write_report(report)
        level = "error" if outcome.cause.is_crash else "info"
        verdict = report.extra.get("health_check", {}).get("verdict")
        self.log.block(
            human_block(report, self.config.report_file, verdict, report_error),
            level=level, cause=report.cause,
        )
        if self.sentry_dsn is not None and outcome.cause.is_crash:
            report = self._deliver_crash(report)
            self._write_report(report)
        if self.termination_log is not None and self.termination_log.enabled:
            self.termination_log.write_final(f"{report.cause}: {report.summary}")
        if self.stub is not None:
            stub = self.stub
            self._run_loop_until(lambda: self._stub_idle(stub),
                                 self.reactor.clock() + STUB_LINGER_S)
            stub.close()
        deadline = time.monotonic() + FINAL_FLUSH_S
        for sink in self.sinks:
            sink.flush(deadline)
        return outcome.status

    def _stub_idle(self, stub: HealthStub) -> bool:
        """No open connection and none waiting in the listener's backlog."""
        if stub.connection_count or self.listener is None:
            return stub.connection_count == 0
        import select

        poller = select.poll()
        poller.register(self.listener.fileno(), select.POLLIN)
        return not poller.poll(0)

    def _build_report(
        self, outcome: Outcome, exit: Optional[ExitStatus], memory: Optional[MemoryFacts]
    ) -> Report:
        from .causes import Cause
        from .report import Report, SignalRecord, exception_json, where_text

        redact = self.redact
        extra: dict[str, Any] = {"handoff": self.plan.mode.value}
        if outcome.cause is Cause.OOM_KILLED and memory is not None:
            extra["oom_evidence"] = memory.oom_evidence
        if self.health_check is not None and self.config.health_check is not None:
            from .probes import verdict_text

            result = self.health_check.result()
            check = result.as_report()
            check["verdict"] = verdict_text(
                self.config.platform, result, self.config.health_check, where_text(outcome)
            )
            extra["health_check"] = check
        if self.config.memory_limit is not None or self.config.cpu_limit is not None:
            extra["limits"] = {"memory_bytes": self.config.memory_limit,
                               "cpus": self.config.cpu_limit}
        return Report(
            cause=outcome.cause.value,
            summary=redact.text(outcome.summary),
            phase=self.phase.value,
            exit_code=None if exit is None else exit.code,
            signal=None if exit is None or exit.signal is None else signal_name(exit.signal),
            status=outcome.status,
            command=tuple(redact.argv(self.plan.argv)),
            pid=self.pid,
            started_at=self.started_at,
            ended_at=time.time(),
            uptime_s=self.reactor.clock() - self.started_mono,
            ready_after_s=self.ready_after_s,
            signals_received=tuple(SignalRecord(name, at) for name, at in self.signals),
            exception=exception_json(outcome, redact),
            stderr_tail=redact.text(self._tail_text()),
            where=where_text(outcome),
            memory=memory.as_report() if memory is not None else None,
            memory_line=memory.sparkline() if memory is not None else None,
            extra=extra,
        )

    def _write_report(self, report: Report) -> Optional[str]:
        """Write the report file if asked; return why it could not be written."""
        if not self.config.report_file:
            return None
        from .report import write_report_file

        try:
            write_report_file(self.config.report_file, report.as_json())
        except OSError as error:
            return error.strerror or str(error)
        return None


def _address_text(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _delivery_text(delivery: Any) -> str:
    if delivery.delivered:
        return f"delivered event {delivery.event_id}"
    return f"not delivered ({delivery.detail})"


def run(config: Config, environ: Mapping[str, str], log: Logger) -> int:
    return Supervisor(config, environ, log).run()


def send_saved_report(config: Config, log: Logger) -> int:
    """``--send-report FILE``: deliver a report a container could not send."""
    assert config.send_report is not None
    if not config.sentry_dsn:
        raise UsageError("--send-report needs --sentry-dsn or SENTRY_DSN")
    from .config import parse_dsn
    from .sentry import send_saved_report as send

    dsn = parse_dsn("SENTRY_DSN", config.sentry_dsn)
    delivery = send(config.send_report, dsn=dsn, timeout_s=config.sentry_timeout_s)
    log.info(f"sentry: {_delivery_text(delivery)}")
    return 0 if delivery.delivered else 1
