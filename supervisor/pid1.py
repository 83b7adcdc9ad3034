"""PID 1 duties: signals forwarded as tini and dumb-init do, and every zombie reaped.

Owns: which signals are forwarded, the handlers (which forward, and queue the
rest for the loop), the signals the supervisor can raise on itself, job-control
stops, reaping with ``wait3``, the subreaper registration, and the last-resort
wait when the loop cannot go on.
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
    from typing import Callable, Mapping, Optional

    from .log import Logger
    from .reactor import Reactor

# Never forwarded: SIGKILL and SIGSTOP cannot be caught, SIGCHLD is the
# supervisor's own news, and the synchronous faults come from its own code,
# where a handler that returns would run the faulting instruction again forever.
NOT_FORWARDED = frozenset((
    signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD,
    signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
))
# Signals the supervisor's own work can raise on itself: a write to a closed
# pipe or socket, a file over its size limit, its CPU limit, a terminal
# touched from the background. They stay blocked, so none of that can stop or
# kill it, and are collected with sigtimedwait: forwarded only when another
# process sent them. (Without sigtimedwait, macOS, they are ignored, as before.)
SELF_RAISED = tuple(
    number for number in (
        signal.SIGPIPE, signal.SIGXFSZ, getattr(signal, "SIGXCPU", None),
        signal.SIGTTIN, signal.SIGTTOU,
    ) if number is not None
)
# Forwarded, then the supervisor stops itself (not as PID 1), as dumb-init
# does: the shell that stopped the job sees it stopped, and its SIGCONT is
# forwarded in turn.
JOB_STOP_SIGNALS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
# Everything else that can be caught, real-time signals included (as tini).
FORWARDED_SIGNALS = tuple(sorted(
    int(number) for number in signal.valid_signals()
    if number not in NOT_FORWARDED and number not in SELF_RAISED
))
# Signals after which the child is expected to exit, so the stop grace starts.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# si_code of a signal the kernel raised (a terminal, a CPU limit), not a process.
SI_KERNEL = 0x80
PR_SET_CHILD_SUBREAPER = 36
LOST_STATUS = 1 << 8  # exit 1: the wait status of a child whose end was not seen
# How long what is left of the child's group gets between SIGTERM and SIGKILL.
LEFTOVER_GRACE_S = 1.0
# Lets another process that is ready to run on this CPU go first; a no-op where
# the platform has no sched_yield.
_yield_cpu = getattr(os, "sched_yield", lambda: None)


def signal_name(signum: int) -> str:
    rtmin = getattr(signal, "SIGRTMIN", None)
    if rtmin is not None and rtmin < signum < signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - rtmin}"
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
        self._closed = False
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
        for signum in SELF_RAISED:
            self._previous[signum] = signal.signal(signum, signal.SIG_IGN)
        # Blocked, not only ignored: a blocked signal is still queued when
        # another process sends it, and sigtimedwait says who did. Whatever a
        # parent left blocked is unblocked: every other signal must come in.
        self._collecting = hasattr(signal, "sigtimedwait")
        self._previous_mask = signal.pthread_sigmask(
            signal.SIG_SETMASK, SELF_RAISED if self._collecting else ()
        )
        reactor.add_reader(self._read_fd, self._drain)
        self._reactor = reactor

    def __enter__(self) -> SignalInbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def wakeup_fd(self) -> int:
        """Readable when a signal came (for a loop of its own: ``wait_for_child``)."""
        return self._read_fd

    def arm(self, pid: int, group: bool) -> None:
        """From now on, forward to ``pid`` (or its group) straight from the handler."""
        self._target, self._group = pid, group
        # os.wait3 imports resource on first use, after it has reaped: without
        # a free fd that import would fail and the child's status be lost.
        import resource  # noqa: F401

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
        if signum != signal.SIGCHLD:
            record[1] = self.forward(signum)
        # The C-level handler already wrote to the wakeup fd: the loop will look.

    def forward(self, signum: int) -> bool:
        """Forward ``signum`` to the armed child now; False when there is none (yet)."""
        if self._target is None:
            return False
        forwarded = send_signal(self._target, signum, self._group)
        if forwarded:
            # The kernel often wakes the child on this CPU, where it would wait for
            # the loop's handling of this signal (about 0.3 ms of Python) before
            # its own handler runs: it goes first (tini sleeps right after kill).
            _yield_cpu()
        if forwarded and signum in JOB_STOP_SIGNALS and os.getpid() != 1:
            # As dumb-init: the child stopped, so does its supervisor, for the
            # shell's job control; the shell's SIGCONT comes here and is forwarded.
            os.kill(os.getpid(), signal.SIGSTOP)
        return forwarded

    def take_received(self) -> list[tuple[int, bool]]:
        """Without a loop (``wait_for_child``): what came since, taken and cleared."""
        self._collect()
        taken = [(int(signum), bool(forwarded)) for signum, forwarded in self._received]
        self._received.clear()
        return taken

    def _collect(self) -> None:
        """Take the blocked signals that wait; keep those another process sent."""
        if not self._collecting:
            return
        own_pid = os.getpid()
        while True:
            info = signal.sigtimedwait(SELF_RAISED, 0)
            if info is None:
                return
            if info.si_code <= 0 and info.si_pid != own_pid:
                self._handle(info.si_signo, None)
            # Else the kernel raised it (SI_KERNEL) or our own write did (our pid).

    def collect_pending(self) -> None:
        """Hand the loop the blocked signals another process sent (the loop's 1 s tick)."""
        if self._closed:
            return
        self._collect()
        self._dispatch()

    def flush(self) -> None:
        """Hand the loop every signal that came and was not handed over yet."""
        self._collect()
        self._drain()

    def _drain(self) -> None:
        # Not _collect here: a blocked signal never writes to the wakeup fd, and
        # this runs right after a forward, while the child may wait for our CPU.
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._dispatch()

    def _dispatch(self) -> None:
        while self._received:
            signum, forwarded = self._received.popleft()
            self._on_signal(int(signum), bool(forwarded))

    def close(self) -> None:
        """Put back the handlers, the mask and the wakeup fd that were there before."""
        if self._closed:
            return
        self._closed = True
        self._target = None
        # Still ignored here: what is pending of them is discarded on unblock.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
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


def wait_for_child(
    inbox: SignalInbox, pid: int, copies: Mapping[int, int],
    keep: Optional[Callable[[bytes], None]] = None,
) -> tuple[Reaped, list[tuple[int, bool]]]:
    """The last resort when the loop cannot go on: forward, reap and relay, as tini does.

    The inbox's handlers still forward every signal (it stays armed); this
    reaps every zombie, copies what the child writes to its pipes (``copies``:
    our read end -> the fd it goes to, with blocking writes) so that the child
    never blocks on a full pipe, and returns the child's end and the signals
    received meanwhile. It wakes on a signal, on output, or every second.
    """
    import select

    sources = dict(copies)
    received: list[tuple[int, bool]] = []
    poller = select.poll()
    poller.register(inbox.wakeup_fd, select.POLLIN)
    for fd in sources:
        poller.register(fd, select.POLLIN)
    while True:
        with inbox.reaping():
            found = reap_all(pid)
            if found is not None:
                inbox.disarm()
        received += inbox.take_received()
        del received[:-100]
        if found is None and not _exists(pid):
            # Reaped before the loop broke (its status lost with it): nothing to wait
            # for. Exit 1, never 0: the end was not seen, so it is not a clean one.
            found = Reaped(pid, LOST_STATUS, 0)
        if found is not None:
            for fd in list(sources):
                _copy_once(fd, sources, keep)  # what is already in the pipe, not until EOF
            return found, received
        for fd, _ in poller.poll(1000):
            if fd == inbox.wakeup_fd:
                _read_all(fd)
            elif fd in sources and not _copy_once(fd, sources, keep):
                poller.unregister(fd)


def _exists(pid: int) -> bool:
    """Whether ``pid`` is still a process (a zombie of ours counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's: it exists
    return True


def _read_all(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def _copy_once(fd: int, sources: dict[int, int], keep: Optional[Callable[[bytes], None]]) -> bool:
    """Move one read from ``fd`` to where it goes; False at its end."""
    try:
        data = os.read(fd, 1 << 16)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        data = b""
    if not data:
        del sources[fd]
        return False
    if keep is not None:
        keep(data)
    view = memoryview(data)
    while view and sources[fd] >= 0:
        try:
            view = view[os.write(sources[fd], view):]
        except InterruptedError:
            continue
        except BlockingIOError:
            import select

            select.select([], [sources[fd]], [], 1.0)
        except OSError:
            sources[fd] = -1  # nobody reads it any more: keep the child going anyway
    return True


def become_subreaper() -> bool:
    """Adopt orphaned descendants when not PID 1, as ``tini -s`` does."""
    if os.getpid() == 1 or not sys.platform.startswith("linux"):
        return os.getpid() == 1
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def prctl(option: int, value: int) -> bool:
    """``prctl(option, value)`` on Linux; False when it failed or cannot be called."""
    from .libc import libc

    calls = libc()
    return calls is not None and calls.prctl(option, value)[0] == 0


def adopt_orphans(log: Logger) -> None:
    """Become the subreaper (or say why not): orphans of the app are reaped here too."""
    if not sys.platform.startswith("linux"):
        log.info("not Linux: no subreaper, cgroup figures, OOM evidence or oom_score_adj; "
                 "readiness from uvicorn's log lines")
    elif not become_subreaper():
        log.warning("cannot adopt orphaned processes (not PID 1, no subreaper)")


def group_is_alive(pgid: int) -> bool:
    """Whether the process group has a member that is not a zombie.

    ``killpg(pgid, 0)`` also counts zombies, which the supervisor may not be
    able to reap (their parent is someone else): /proc tells them apart.
    """
    from . import procfs

    if not procfs.supported():
        return send_signal(pgid, 0, group=True)
    for pid in procfs.pids():
        stat = procfs.read_stat(pid)
        if stat is not None and stat.pgrp == pgid and not stat.zombie:
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
