"""The loop's timeouts on a virtual clock: real children, real signals, no real waits.

The supervisor runs in this process over a ``Reactor`` whose clock only moves
when the loop is idle, straight to its next timer (as honcho injects its
clock). A 25 s stop grace or a 120 s reap deadline then passes in a blink,
while the child, its signals and its exit status stay real.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable

import pytest

from supervisor.cli import parse_args
from supervisor.config import LogFormat
from supervisor.log import Logger
from supervisor.loop import Supervisor
from supervisor.reactor import Reactor
from tests.conftest import VirtualClock, child, free_port

PYTHON = sys.executable


def supervisor_on(clock: VirtualClock, *argv: str) -> tuple[Supervisor, list[bytes]]:
    lines: list[bytes] = []
    config = parse_args(list(argv), {"PATH": os.environ.get("PATH", "")})
    log = Logger(LogFormat.TEXT, lines.append)
    reactor = Reactor(clock=clock, advance=clock.advance)
    supervisor = Supervisor(config, dict(os.environ), log, reactor=reactor)
    # Keep the lines in the test rather than on the terminal.
    supervisor.log.set_writer = lambda write: None  # type: ignore[method-assign]
    return supervisor, lines


def when(supervisor: Supervisor, condition: Callable[[], bool], then: Callable[[], None]) -> None:
    """Every virtual 10 ms until ``condition()``, then ``then()`` once."""

    def tick() -> bool:
        if supervisor.pid is None or not condition():
            return True
        then()
        return False

    supervisor.reactor.call_every(0.01, tick)


def ignores_sigterm(pid: int) -> bool:
    """The child has SIGTERM in its ignored set (from /proc, not from its output)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_stop_grace_of_25_s_ends_in_sigkill_without_waiting_25_s() -> None:
    clock = VirtualClock()
    supervisor, lines = supervisor_on(
        clock, "--handoff", "none", "--stop-timeout", "25s", "--", PYTHON,
        child("ignore_sigterm.py"),
    )
    when(supervisor, lambda: ignores_sigterm(supervisor.pid or 0),
         lambda: os.kill(os.getpid(), signal.SIGTERM))
    status = supervisor.run()
    assert status == 128 + signal.SIGKILL
    text = b"".join(lines).decode()
    assert "did not exit within 25 s" in text
    assert "==== the app ended: stop_timeout ====" in text
    assert clock.jumped >= 25.0  # the grace passed on the virtual clock


def test_reaping_goes_on_when_sigchld_is_lost() -> None:
    """tini's 1 s safety net: the child is found by the reap timer, not by SIGCHLD."""
    clock = VirtualClock()
    supervisor, lines = supervisor_on(
        clock, "--handoff", "none", "--", PYTHON, "-c",
        "import sys, time; time.sleep(0.3); sys.exit(7)",
    )
    sigchld_seen: list[int] = []

    def lose_sigchld() -> None:
        # From now on no SIGCHLD reaches the loop, as if every wakeup were lost.
        signal.signal(signal.SIGCHLD, lambda signum, frame: sigchld_seen.append(signum))

    when(supervisor, lambda: True, lose_sigchld)
    status = supervisor.run()
    assert status == 7
    assert "==== the app ended: exit_code ====" in b"".join(lines).decode()
    assert clock.jumped >= 1.0  # found by a tick of the 1 s timer


def test_startup_timeout_takes_a_stack_dump_then_kills() -> None:
    clock = VirtualClock()
    port = free_port()
    supervisor, lines = supervisor_on(
        clock, "--handoff", "systemd", "--host", "127.0.0.1", "--port", str(port),
        "--startup-timeout", "3s", "--", PYTHON, "-c",
        "import signal, time; signal.signal(signal.SIGABRT, signal.SIG_IGN); time.sleep(600)",
    )
    status = supervisor.run()
    text = b"".join(lines).decode()
    assert status == 124
    assert "not ready within 3 s: sending SIGABRT" in text
    assert "==== the app ended: startup_timeout ====" in text
    # It ignored SIGABRT, so only the SIGKILL after the abort grace ended it.
    assert clock.jumped >= 3.0 + 2.0


def test_signal_handlers_are_restored_when_the_run_ends() -> None:
    before = {signum: signal.getsignal(signum)
              for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGTTOU)}
    wakeup_before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_before)
    supervisor, _ = supervisor_on(VirtualClock(), "--handoff", "none", "--", "true")
    assert supervisor.run() == 0
    after = {signum: signal.getsignal(signum) for signum in before}
    assert after == before
    assert signal.set_wakeup_fd(wakeup_before) == wakeup_before
