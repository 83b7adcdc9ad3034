"""Readiness seen from outside: has the child put the listening socket into an epoll set?

Owns: the strategies that tell when a starting child can answer, behind one
``ReadinessWatcher`` with one ``on_ready`` callback; and the /proc reads they
need (a process tree, epoll fdinfo, the kernel's TCP tables).

Must not know: HTTP, the stub's internals, or what the loop does once ready. uvicorn (each worker
too) registers the listening socket with its epoll only after its lifespan
startup, so that registration is the moment the app can answer; matching is by
socket inode because the child may hold the socket under another fd number.
Every function here tolerates processes that vanish mid-scan.
"""

from __future__ import annotations

import enum
import os
import sys

from . import procfs
from .procfs import descendants

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import socket
    from typing import Callable, Iterable, Optional

    from .reactor import Reactor



def _read(path: str) -> Optional[str]:
    """A kernel table outside /proc/<pid> (the TCP tables), or None."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _epoll_watches(pid: int, fd: int, inode: int) -> bool:
    text = procfs.read_text(pid, f"fdinfo/{fd}")
    if text is None:
        return False
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue
        for word in line.split():
            if word.startswith("ino:"):
                try:
                    if int(word[4:], 16) == inode:
                        return True
                except ValueError:
                    pass
    return False


def socket_in_epoll(pids: Iterable[int], inode: int) -> bool:
    """True when any of ``pids`` has an epoll fd watching the socket with inode ``inode``."""
    for pid in pids:
        for fd in procfs.open_fds(pid):
            target = procfs.fd_target(pid, fd)
            if target == "anon_inode:[eventpoll]" and _epoll_watches(pid, fd, inode):
                return True
    return False


def proc_readiness_supported() -> bool:
    """Whether this system shows epoll registrations in /proc (checked for real, once)."""
    if not sys.platform.startswith("linux"):
        return False
    import select  # only here: the check runs once, at start
    import socket

    try:
        with socket.socket() as probe:
            epoll = select.epoll()
            try:
                epoll.register(probe.fileno(), select.EPOLLIN)
                inode = os.fstat(probe.fileno()).st_ino
                return socket_in_epoll([os.getpid()], inode)
            finally:
                epoll.close()
    except OSError:
        return False


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets in LISTEN state on ``port`` (any address)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = _read(table) or ""
        for line in text.splitlines()[1:]:
            fields = line.split()
            # fields[1] is "ADDR:PORT" in hex; state 0A is LISTEN; fields[9] the inode.
            listening = len(fields) > 9 and fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def owns_socket(pids: Iterable[int], inodes: set[int]) -> bool:
    """True when one of ``pids`` has an fd on one of the socket ``inodes``."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    return any(procfs.fd_target(pid, fd) in wanted for pid in pids for fd in procfs.open_fds(pid))


def server_side_inode(listen_port: int, client_port: int) -> Optional[int]:
    """The inode of the server's end of a loopback connection to ``listen_port``.

    0 while the connection waits in the accept queue (no socket file exists
    until someone accepts it), None when there is no such connection.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = _read(table) or ""
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) <= 9:
                continue
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if int(local, 16) == listen_port and int(remote, 16) == client_port:
                return int(fields[9])
    return None



# -- the watcher -------------------------------------------------------------
# Readiness is polled only while starting; often enough to notice within 20 ms.
EPOLL_POLL_S = 0.02
# In port mode readiness is a listener on the app's own port: a bit less often.
PORT_POLL_S = 0.05
# A server that waits with poll/select (gunicorn's sync workers) never shows the
# socket in an epoll set: then, every so often, the stub steps aside and the
# supervisor connects to see whether the app accepts the connection.
ACCEPT_PROBE_EVERY_S = 1.0
ACCEPT_PROBE_WAIT_S = 0.2
ACCEPT_PROBE_STEP_S = 0.01
# uvicorn's own lines, for systems where /proc cannot tell readiness.
READY_LOG_MARKERS = (b"Application startup complete", b"Uvicorn running on")


class Strategy(enum.Enum):
    """How readiness is seen; the first that fires wins."""

    EPOLL = "epoll"  # the child registered the shared socket in an epoll set
    BLOCKING_ACCEPT = "blocking_accept"  # the child made the shared socket blocking
    ACCEPT_PROBE = "accept_probe"  # the child accepted a connection the stub let through
    PORT_OWNER = "port_owner"  # port mode: the child listens on the app's port
    LOG_MARKER = "log_marker"  # uvicorn said so (only where /proc cannot tell)


class ReadinessWatcher:
    """Watches a starting child with every strategy that fits, and says "ready" once.

    All strategies share one test, ``waiting``, and one exit, ``_ready``: after
    either ``on_ready`` fired or ``stop()`` was called, nothing more happens.
    """

    def __init__(
        self,
        reactor: Reactor,
        *,
        pid: int,
        on_ready: Callable[[Strategy], None],
        listener: Optional[socket.socket] = None,
        pause_stub: Optional[Callable[[bool], None]] = None,
        app_port: Optional[int] = None,
    ) -> None:
        self._reactor = reactor
        self._pid = pid
        self._on_ready = on_ready
        self._listener = listener
        self._pause_stub = pause_stub
        self._app_port = app_port
        self.waiting = True

    def start(self, proc_supported: bool) -> Optional[Strategy]:
        """Start polling; returns LOG_MARKER when only the log can tell (feed ``chunk``)."""
        call_later = self._reactor.call_later
        if self._app_port is not None:
            call_later(PORT_POLL_S, self._poll_app_port)
            return None
        if not proc_supported:
            return Strategy.LOG_MARKER
        call_later(EPOLL_POLL_S, self._poll_epoll)
        if self._pause_stub is not None:
            call_later(ACCEPT_PROBE_EVERY_S, self._start_accept_probe)
        return None

    def stop(self) -> None:
        self.waiting = False

    def app_accepts(self) -> None:
        """The stub saw the child make the shared socket blocking: it accepts on it."""
        self._ready(Strategy.BLOCKING_ACCEPT)

    def chunk(self, data: bytes) -> None:
        """A piece of the child's stderr, for the log-marker strategy."""
        if any(marker in data for marker in READY_LOG_MARKERS):
            self._ready(Strategy.LOG_MARKER)

    def _ready(self, strategy: Strategy) -> None:
        if self.waiting:
            self.waiting = False
            self._on_ready(strategy)

    def _poll_epoll(self) -> None:
        if not self.waiting:
            return
        assert self._listener is not None
        inode = os.fstat(self._listener.fileno()).st_ino
        if socket_in_epoll(descendants(self._pid), inode):
            self._ready(Strategy.EPOLL)
        else:
            self._reactor.call_later(EPOLL_POLL_S, self._poll_epoll)

    def _poll_app_port(self) -> None:
        if not self.waiting:
            return
        assert self._app_port is not None
        if sys.platform.startswith("linux"):
            # A listening socket on the app's port, on any address, owned by
            # the child or one of its workers (not by whoever held the port).
            inodes = listening_inodes(self._app_port)
            ready = bool(inodes) and owns_socket(descendants(self._pid), inodes)
        else:
            import socket

            try:
                with socket.create_connection(("127.0.0.1", self._app_port), timeout=0.05):
                    ready = True
            except OSError:
                ready = False
        if ready:
            self._ready(Strategy.PORT_OWNER)
        else:
            self._reactor.call_later(PORT_POLL_S, self._poll_app_port)

    def _start_accept_probe(self) -> None:
        """Pause the stub, connect, and watch whether the app accepts the connection."""
        if not self.waiting:
            return
        assert self._pause_stub is not None and self._listener is not None
        import socket

        from .listener import loopback_address

        pause = self._pause_stub
        host, port = loopback_address(self._listener)
        pause(True)
        try:
            probe = socket.create_connection((host, port), timeout=0.05)
        except OSError:
            pause(False)
            self._reactor.call_later(ACCEPT_PROBE_EVERY_S, self._start_accept_probe)
            return
        client_port = probe.getsockname()[1]
        deadline = self._reactor.clock() + ACCEPT_PROBE_WAIT_S

        def check() -> None:
            # With the stub paused, only the child (or its workers) can accept it.
            accepted = bool(server_side_inode(port, client_port))
            if self.waiting and not accepted and self._reactor.clock() < deadline:
                self._reactor.call_later(ACCEPT_PROBE_STEP_S, check)
                return
            probe.close()
            pause(False)
            if accepted:
                self._ready(Strategy.ACCEPT_PROBE)
            elif self.waiting:
                self._reactor.call_later(ACCEPT_PROBE_EVERY_S, self._start_accept_probe)

        self._reactor.call_later(ACCEPT_PROBE_STEP_S, check)
