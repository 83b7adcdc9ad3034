"""PID 1 duties: signals taken synchronously, forwarded, and every zombie reaped.

Owns: which signals are forwarded, the handlers (which only wake the loop),
reaping with ``wait3`` and the child-subreaper registration.
Must not know: what a stop means for the report (the loop decides).
"""

from __future__ import annotations

import collections
import os
import signal
import sys

from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .log import Logger
    from .reactor import Reactor

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
# Signals after which the child is expected to exit, so the stop grace starts.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Background reads/writes on a terminal would stop PID 1 itself, as in tini.
IGNORED_SIGNALS = (signal.SIGTTIN, signal.SIGTTOU)
PR_SET_CHILD_SUBREAPER = 36
# How long what is left of the child's group gets between SIGTERM and SIGKILL.
LEFTOVER_GRACE_S = 1.0


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


class SignalInbox:
    """Forwards signals to the child at once, and hands every signal to the loop.

    Forwarding is the one piece of work done in the handler itself: the
    child's latency is what a platform's stop waits on, and going through the
    loop first cost about 40 us more per signal (one more epoll round and the
    dispatch). Python runs handlers in the main thread between bytecodes, so
    ``kill`` is safe there; what is not safe, signalling a pid that was just
    reaped (and could be reused), is prevented by ``reaping()``, which masks
    the forwarded signals while the loop reaps and disarms. Everything else
    (records, the stop grace, reaping) happens in the loop, in order.
    """

    def __init__(
        self, reactor: Reactor, on_signal: Callable[[int, bool], None]
    ) -> None:
        self._on_signal = on_signal
        self._target: Optional[int] = None
        self._group = False
        self._received: collections.deque[list[int | bool]] = collections.deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        # What was there before, put back by close(): as uvicorn does, the
        # handlers are installed for a scope, not for the rest of the process.
        self._previous: dict[int, object] = {}
        for signum in (*FORWARDED_SIGNALS, signal.SIGCHLD):
            self._previous[signum] = signal.signal(signum, self._handle)
        for signum in IGNORED_SIGNALS:
            self._previous[signum] = signal.signal(signum, signal.SIG_IGN)
        reactor.add_reader(self._read_fd, self._drain)
        self._reactor = reactor

    def __enter__(self) -> SignalInbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def arm(self, pid: int, group: bool) -> None:
        """From now on, forward to ``pid`` (or its group) straight from the handler."""
        self._target, self._group = pid, group

    def reaping(self) -> _Masked:
        """A context in which forwarded signals wait: reap, and disarm if the child is gone."""
        return _Masked(self)

    def disarm(self) -> None:
        self._target = None

    def _handle(self, signum: int, frame: object) -> None:
        # Recorded before forwarding: the child may die of it at once, and the
        # SIGCHLD that follows runs its handler nested inside this one. It must
        # queue after this signal, or the loop would reap before it knew of the stop.
        record = [signum, False]
        self._received.append(record)
        if signum != signal.SIGCHLD and self._target is not None:
            record[1] = send_signal(self._target, signum, self._group)
        # The C-level handler already wrote to the wakeup fd: the loop will look.

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        while self._received:
            signum, forwarded = self._received.popleft()
            self._on_signal(int(signum), bool(forwarded))

    def close(self) -> None:
        """Put back the handlers and the wakeup fd that were there before."""
        self._target = None
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._reactor.remove_reader(self._read_fd)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._read_fd)
        os.close(self._write_fd)


class _Masked:
    def __init__(self, inbox: SignalInbox) -> None:
        self._inbox = inbox

    def __enter__(self) -> SignalInbox:
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        return self._inbox

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)


@frozen
class Reaped:
    pid: int
    wait_status: int
    max_rss_bytes: int


def reap_all(watched_pid: int) -> Optional[Reaped]:
    """Reap every zombie child without blocking; return the watched one if it ended.

    Orphans re-parented to us (as PID 1 or as subreaper) are reaped here too,
    so that none lingers as a zombie.
    """
    found: Optional[Reaped] = None
    while True:
        try:
            pid, status, usage = os.wait3(os.WNOHANG)
        except ChildProcessError:
            return found
        except InterruptedError:
            continue
        if pid == 0:
            return found
        if pid == watched_pid:
            # ru_maxrss is in KiB on Linux, bytes on macOS.
            scale = 1 if sys.platform == "darwin" else 1024
            found = Reaped(pid, status, usage.ru_maxrss * scale)


def become_subreaper() -> bool:
    """Adopt orphaned descendants when not PID 1, as ``tini -s`` does."""
    if os.getpid() == 1 or not sys.platform.startswith("linux"):
        return os.getpid() == 1
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def group_is_alive(pgid: int) -> bool:
    """Whether the process group has a member that is not a zombie.

    ``killpg(pgid, 0)`` also counts zombies, which the supervisor may not be
    able to reap (their parent is someone else): /proc tells them apart.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return send_signal(pgid, 0, group=True)
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


def stop_group(pgid: int, reactor: Reactor, log: Logger) -> None:
    """End what is left of the child's process group: SIGTERM, then SIGKILL.

    The workers of a dead master would otherwise go on holding the port and
    the pipes outside PID 1 (as PID 1 the kernel would end them anyway), as
    supervisord's ``killasgroup`` does.
    """
    if not send_signal(pgid, signal.SIGTERM, group=True):
        return  # nobody is left in the group
    log.info(f"stopping what is left of process group {pgid} "
             f"(SIGTERM, SIGKILL after {LEFTOVER_GRACE_S:g} s)")
    deadline = reactor.clock() + LEFTOVER_GRACE_S
    while reactor.clock() < deadline:
        reap_all(pgid)  # members re-parented to us leave zombies
        if not group_is_alive(pgid):
            reap_all(pgid)  # those that died since the last pass
            return
        reactor.run_once(max_wait=0.02)
    send_signal(pgid, signal.SIGKILL, group=True)
    reap_all(pgid)


def send_signal(pid: int, signum: int, group: bool) -> bool:
    """Signal the child (or its process group); False when it is already gone."""
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True
