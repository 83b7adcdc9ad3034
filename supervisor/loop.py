"""The one loop that ties the parts together, from spawn to exit status.

Owns: the run's state (phase, signals received, the stop grace), the order
of events, and the hand-over of facts to ``causes`` and ``report``.
Data flows one way: Config -> spawn -> watch -> cause -> report -> status.
"""

from __future__ import annotations

import enum
import os
import signal
import time
from typing import Mapping, Optional

from .causes import Ending, Outcome, classify
from .child import ChildSpec, ExecFailure, ExitStatus, child_environment, enlarge_pipe, spawn
from .config import Config
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
)
from .reactor import Reactor, Timer
from .redact import Redactor
from .relay import Relay, Tail
from .report import Report, SignalRecord, exception_json, human_block, where_text, write_report_file

# A safety net under SIGCHLD, as tini's 1 s sigtimedwait: reap even if a wakeup was lost.
REAP_INTERVAL_S = 1.0
# How long the final report may wait for a stalled log consumer before giving up.
FINAL_FLUSH_S = 5.0


class Phase(enum.Enum):
    """Where the child was in its life; the report says which phase it died in."""

    STARTING = "starting"  # spawned, not yet ready
    RUNNING = "running"  # ready and serving
    STOPPING = "stopping"  # a stop signal was forwarded


class Supervisor:
    def __init__(self, config: Config, environ: Mapping[str, str], log: Logger) -> None:
        self.config = config
        self.environ = environ
        self.log = log
        self.reactor = Reactor()
        self.phase = Phase.STARTING
        self.pid: Optional[int] = None
        self.started_at = time.time()
        self.started_mono = self.reactor.clock()
        self.ready_after_s: Optional[float] = None
        self.signals: list[SignalRecord] = []
        self.stop_signal: Optional[int] = None
        self.stop_timer: Optional[Timer] = None
        self.stop_timed_out = False
        self.reaped: Optional[Reaped] = None
        self.tail = Tail()
        self.relays: list[Relay] = []

    # -- start ---------------------------------------------------------------
    def run(self) -> int:
        stderr = Sink(self.reactor, 2)
        self.log.set_writer(stderr.write)
        sinks = [stderr]
        inbox = SignalInbox(self.reactor, self._on_signal)

        stderr_read, stderr_write = os.pipe()
        enlarge_pipe(stderr_write)
        stdout_read = stdout_write = None
        if self.config.relay_stdout:
            stdout_read, stdout_write = os.pipe()
            enlarge_pipe(stdout_write)
        spec = ChildSpec(
            argv=self.config.command,
            env=child_environment(self.environ),
            stderr_fd=stderr_write,
            stdout_fd=stdout_write,
        )
        result = spawn(spec)
        os.close(stderr_write)
        if stdout_write is not None:
            os.close(stdout_write)
        if isinstance(result, ExecFailure):
            os.close(stderr_read)
            if stdout_read is not None:
                os.close(stdout_read)
            outcome = classify(
                Ending(exit=None, exec_failure=result, command=self.config.command[0])
            )
            status = self._finish(outcome, None)
            stderr.flush(time.monotonic() + FINAL_FLUSH_S)
            inbox.close()
            return status
        self.pid = result
        self.relays.append(Relay(self.reactor, stderr_read, stderr, self.tail))
        if stdout_read is not None:
            stdout = Sink(self.reactor, 1)
            sinks.append(stdout)
            self.relays.append(Relay(self.reactor, stdout_read, stdout))
        if not become_subreaper():
            self.log.warning("cannot adopt orphaned processes (not PID 1, no subreaper)")
        self._schedule_reap()

        while self.reaped is None:
            self.reactor.run_once()

        for relay in self.relays:
            relay.drain()
        exit = ExitStatus.from_wait_status(self.reaped.wait_status)
        outcome = classify(
            Ending(
                exit=exit,
                stop_signal=self.stop_signal,
                stop_timed_out=self.stop_timed_out,
                stderr_tail=self.tail.text(),
                stop_timeout_s=self.config.stop_timeout_s,
                command=self.config.command[0],
            )
        )
        status = self._finish(outcome, exit)
        deadline = time.monotonic() + FINAL_FLUSH_S
        for sink in sinks:
            sink.flush(deadline)
        inbox.close()
        return status

    # -- events --------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self._reap()
            return
        at_s = round(self.reactor.clock() - self.started_mono, 3)
        self.signals.append(SignalRecord(signal_name(signum), at_s))
        if self.pid is None or self.reaped is not None:
            return
        send_signal(self.pid, signum, group=self.config.kill_group)
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
        if self.pid is None or self.reaped is not None:
            return
        self.stop_timed_out = True
        self.log.warning(
            f"pid {self.pid} did not exit within {self.config.stop_timeout_s:g} s; "
            "sending SIGKILL to its process group"
        )
        send_signal(self.pid, signal.SIGKILL, group=True)

    def _schedule_reap(self) -> None:
        self._reap()
        if self.reaped is None:
            self.reactor.call_later(REAP_INTERVAL_S, self._schedule_reap)

    def _reap(self) -> None:
        if self.pid is None:
            return
        reaped = reap_all(self.pid)
        if reaped is not None and self.reaped is None:
            self.reaped = reaped
            if self.stop_timer is not None:
                self.stop_timer.cancel()

    # -- end -------------------------------------------------------------------
    def _finish(self, outcome: Outcome, exit: Optional[ExitStatus]) -> int:
        redact = Redactor.from_environ(self.environ)
        ended = time.time()
        report = Report(
            cause=outcome.cause.value,
            summary=redact.text(outcome.summary),
            phase=self.phase.value,
            exit_code=None if exit is None else exit.code,
            signal=None if exit is None or exit.signal is None else signal_name(exit.signal),
            status=outcome.status,
            command=tuple(redact.argv(self.config.command)),
            pid=self.pid,
            started_at=self.started_at,
            ended_at=ended,
            uptime_s=self.reactor.clock() - self.started_mono,
            ready_after_s=self.ready_after_s,
            signals_received=tuple(self.signals),
            exception=exception_json(outcome, redact),
            stderr_tail=redact.text(self.tail.text()),
            where=where_text(outcome),
        )
        level = "info" if not outcome.cause.is_crash else "error"
        self.log.block(human_block(report, self.config.report_file), level=level,
                       cause=report.cause)
        if self.config.report_file:
            try:
                write_report_file(self.config.report_file, report.as_json())
            except OSError as error:
                self.log.error(f"cannot write the report to {self.config.report_file}: {error}")
        return outcome.status


def run(config: Config, environ: Mapping[str, str], log: Logger) -> int:
    return Supervisor(config, environ, log).run()



