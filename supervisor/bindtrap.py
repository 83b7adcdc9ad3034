"""Answering the child's bind(2) of the public port with the supervisor's own socket.

Owns: the seccomp user-notification filter that a child which binds its own
address (``python main.py`` calling ``uvicorn.run``, ``fastapi run``,
granian, anything unknown) runs under, and the supervisor's end of it. The
filter sends every ``bind`` of the child's process tree to the supervisor.
A bind of a TCP socket to the public port is answered by putting the
supervisor's listening socket on the child's fd (``SECCOMP_IOCTL_NOTIF_ADDFD``
with ``SECCOMP_ADDFD_FLAG_SETFD``, which replaces the child's socket) and
returning success; the child's ``listen()`` on an already listening socket
succeeds too. Every other bind goes on untouched
(``SECCOMP_USER_NOTIF_FLAG_CONTINUE``). The app then holds the very socket
the stub answers on, as with ``--fd``: readiness, hand-off and take-back
work unchanged, for a server written in any language.

Why this and not something simpler: ``LD_PRELOAD`` misses static and Go
binaries and needs a compiled library; patching ``socket.bind`` through
``sitecustomize`` only covers Python and is undone by ``-I``/``-S``;
ptrace stops the child on every system call and fights debuggers.

Needs Linux 5.9 (ADDFD) on x86_64, aarch64 or riscv64, and a kernel that lets
the child install a filter: without CAP_SYS_ADMIN the child first sets
``no_new_privs`` (setuid programs it runs then do not gain privileges), as
Docker's default profile allows. Where it is refused, ``unavailable_reason``
or the child's report (an ``ExecFailure`` that ``refusal`` recognises) says
why, and the command runs without a stub.

Must not know: the loop, HTTP or readiness. The C calls the filter needs
(``seccomp``, ``prctl``, ``pidfd_getfd``) come from ``libc``, resolved in the
supervisor before the fork: the child between fork and exec only calls.
"""

from __future__ import annotations

import os
import sys

from .libc import libc

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import socket
    from typing import Callable, Literal, Optional

    from .handoff import HandoffPlan
    from .log import Logger
    from .reactor import Reactor

MINIMUM_KERNEL = (5, 9)
# machine -> (AUDIT_ARCH_*, __NR_seccomp, __NR_bind); pidfd_getfd is 438 everywhere.
_ARCHES = {
    "x86_64": (0xC000003E, 317, 49),
    "aarch64": (0xC00000B7, 277, 200),
    "riscv64": (0xC00000F3, 277, 200),
}
_NR_PIDFD_GETFD = 438
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_SECCOMP_RET_USER_NOTIF = 0x7FC00000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
_SECCOMP_ADDFD_FLAG_SETFD = 1
_PR_SET_NO_NEW_PRIVS = 38
# _IOWR('!', 0, struct seccomp_notif) and friends, for the generic ioctl layout.
_NOTIF_RECV = 0xC0502100
_NOTIF_SEND = 0xC0182101
_NOTIF_ID_VALID = 0x40082102
_NOTIF_ADDFD = 0x40182103
_NOTIF_SIZE = 80  # struct seccomp_notif
_O_CLOEXEC = 0o2000000
# Said at the start of an ExecFailure's message when the child could not install the filter.
REFUSED = "seccomp refused the bind interception: "
# The longest socket address worth reading (struct sockaddr_storage).
_SOCKADDR_MAX = 128


def unavailable_reason(release: Optional[str] = None, machine: Optional[str] = None,
                       platform: str = sys.platform) -> Optional[str]:
    """Why the child's binds cannot be answered on this system; None when they can.

    Cheap (``uname`` only): the filter itself may still be refused, which the
    child reports (see ``refusal``).
    """
    if not platform.startswith("linux"):
        return "not Linux"
    if release is None or machine is None:
        name = os.uname()
        release, machine = release or name.release, machine or name.machine
    if machine not in _ARCHES:
        return f"no seccomp bind interception on {machine}"
    numbers = []
    for part in release.split("-", 1)[0].split(".")[:2]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        numbers.append(int(digits or 0))
    if tuple(numbers) < MINIMUM_KERNEL:
        return f"Linux {release} is older than 5.9"
    return None


def refusal(message: str) -> Optional[str]:
    """The reason in an ExecFailure's message when the child could not install the filter."""
    return message[len(REFUSED) :] if message.startswith(REFUSED) else None


def filter_program(arch: int, bind_nr: int, byteorder: Literal["little", "big"] = sys.byteorder
                   ) -> bytes:
    """A classic BPF program: notify on ``bind`` of the native architecture, allow the rest."""
    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return (code.to_bytes(2, byteorder) + bytes((jt, jf)) + k.to_bytes(4, byteorder))

    load, jump_eq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    return b"".join((
        op(load, 0, 0, 4),  # seccomp_data.arch
        op(jump_eq, 0, 3, arch),  # another ABI (x32, i386): allow
        op(load, 0, 0, 0),  # seccomp_data.nr
        op(jump_eq, 0, 1, bind_nr),
        op(ret, 0, 0, _SECCOMP_RET_USER_NOTIF),
        op(ret, 0, 0, _SECCOMP_RET_ALLOW),
    ))


class Pending:
    """Made before the spawn: the channel through which the child sends its listener fd."""

    def __init__(self) -> None:
        import socket

        self._ours, self._theirs = socket.socketpair()
        arch, self._seccomp_nr, bind_nr = _ARCHES[os.uname().machine]
        # All the child needs is made here, before the fork: between fork and
        # exec it only calls, and the app starts that much sooner.
        self._libc = libc()
        if self._libc is not None:
            self._program = self._libc.buffer(filter_program(arch, bind_nr))
            # struct sock_fprog on a 64-bit ABI: a count, padding, a pointer.
            self._fprog = self._libc.buffer(
                (len(self._program) // 8).to_bytes(2, sys.byteorder) + bytes(6)
                + self._libc.address(self._program).to_bytes(8, sys.byteorder))

    def install_in_child(self) -> None:  # pragma: no cover - runs between fork and exec
        """Install the filter and send its listener fd to the supervisor.

        Raises OSError (which the spawn reports as an ExecFailure) when the
        kernel refuses; the message starts with ``REFUSED``.
        """
        import socket

        calls = self._libc
        if calls is None:
            raise OSError(38, f"{REFUSED}no syscall(2) to call")  # ENOSYS

        def install() -> tuple[int, int]:
            return calls.syscall(self._seccomp_nr, _SECCOMP_SET_MODE_FILTER,
                                 _SECCOMP_FILTER_FLAG_NEW_LISTENER, calls.address(self._fprog))

        fd, number = install()
        # EACCES: without CAP_SYS_ADMIN a filter needs no_new_privs first.
        if fd < 0 and number == 13 and calls.prctl(_PR_SET_NO_NEW_PRIVS, 1)[0] == 0:
            fd, number = install()
        if fd < 0:
            raise OSError(number, f"{REFUSED}seccomp(2) failed: {os.strerror(number)}")
        socket.send_fds(self._theirs, [b"L"], [fd])
        os.close(fd)

    def receive(self) -> Optional[int]:
        """After the spawn: the listener fd the child sent (None if it sent none)."""
        self._theirs.close()
        self._ours.setblocking(False)
        try:
            _, fds, _, _ = _recv_fds(self._ours)
        except OSError:
            fds = []
        finally:
            self._ours.close()
        for extra in fds[1:]:
            os.close(extra)
        return fds[0] if fds else None

    def close(self) -> None:
        self._theirs.close()
        self._ours.close()


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int], int, object]:
    import socket

    return socket.recv_fds(sock, 16, 4)


class BindTrap:
    """The supervisor's end: decides every bind of the child's tree, one at a time.

    ``notify_fd`` is the filter's listener; call ``on_readable`` when it is
    readable (the loop's reactor does). ``on_bound`` is called at the first
    bind answered; ``on_line`` gets what is worth saying: a bind of another
    port while none of the public one came.
    """

    def __init__(self, notify_fd: int, listener: socket.socket, port: int,
                 on_line: Callable[[str], None],
                 on_bound: Callable[[], None] = lambda: None) -> None:
        self.notify_fd = notify_fd
        self._on_bound = on_bound
        self._listener = listener
        self._port = port
        self._on_line = on_line
        self.answered = 0  # binds that got the supervisor's socket
        self._other_ports: set[int] = set()
        self._unreadable = False
        self.closed = False

    def on_readable(self) -> bool:
        """Answer one notification; False once no process is left to notify (close it)."""
        import select

        poller = select.poll()
        poller.register(self.notify_fd, select.POLLIN)
        events = poller.poll(0)
        if not events:
            return True
        if not events[0][1] & select.POLLIN:
            return False  # POLLHUP: every process under the filter is gone
        buffer = bytearray(_NOTIF_SIZE)
        try:
            _ioctl(self.notify_fd, _NOTIF_RECV, buffer)
        except OSError as error:
            return error.errno in (2, 4)  # ENOENT: the caller died; EINTR
        self._answer(buffer)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.notify_fd)

    # -- one notification ------------------------------------------------------------------
    def _answer(self, notification: bytearray) -> None:
        import struct

        ident, tid, _ = struct.unpack_from("=QII", notification, 0)
        args = struct.unpack_from("=6Q", notification, 32)
        target_fd = args[0] & 0xFFFFFFFF
        address = self._read_address(tid, args[1], min(args[2], _SOCKADDR_MAX))
        if address is None or not self._still_valid(ident):
            self._continue(ident)
            return
        port = _tcp_port(address)
        if port is None or port == 0 or not _is_stream(tid, target_fd):
            self._continue(ident)
        elif port == self._port:
            self._replace(ident, tid, target_fd)
        else:
            if not self.answered and port not in self._other_ports:
                self._other_ports.add(port)
                self._on_line(
                    f"pid {tid} binds port {port}, not {self._port} where the supervisor "
                    f"answers: if that is the app's address, start the supervisor with "
                    f"--port {port}"
                )
            self._continue(ident)

    def _read_address(self, tid: int, pointer: int, length: int) -> Optional[bytes]:
        try:
            fd = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            self._cannot_read(error)
            return None
        try:
            return os.pread(fd, length, pointer)
        except OSError as error:
            self._cannot_read(error)
            return None
        finally:
            os.close(fd)

    def _cannot_read(self, error: OSError) -> None:
        if not self._unreadable:
            self._unreadable = True
            self._on_line(f"cannot read the child's bind() address ({error.strerror}): its "
                          "binds go on untouched")

    def _still_valid(self, ident: int) -> bool:
        try:
            _ioctl(self.notify_fd, _NOTIF_ID_VALID, ident.to_bytes(8, sys.byteorder))
        except OSError:
            return False
        return True

    def _replace(self, ident: int, tid: int, target_fd: int) -> None:
        import struct

        flags = _O_CLOEXEC if _is_cloexec(tid, target_fd) else 0
        addfd = struct.pack("=QIIII", ident, _SECCOMP_ADDFD_FLAG_SETFD,
                            self._listener.fileno(), target_fd, flags)
        try:
            _ioctl(self.notify_fd, _NOTIF_ADDFD, addfd)
        except OSError:
            self._continue(ident)  # it died meanwhile, or the fd table is full
            return
        self._respond(ident, 0)
        self.answered += 1
        if self.answered == 1:
            self._on_bound()

    def _continue(self, ident: int) -> None:
        self._respond(ident, _SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def _respond(self, ident: int, flags: int) -> None:
        import struct

        try:
            _ioctl(self.notify_fd, _NOTIF_SEND, struct.pack("=QqiI", ident, 0, 0, flags))
        except OSError:
            pass  # ENOENT: the caller died, or a signal cut its bind short (it retries)


def _ioctl(fd: int, request: int, argument: bytes | bytearray) -> None:
    import fcntl

    if isinstance(argument, bytearray):
        fcntl.ioctl(fd, request, argument, True)
    else:
        fcntl.ioctl(fd, request, argument)


def _tcp_port(address: bytes) -> Optional[int]:
    """The port of an AF_INET or AF_INET6 socket address; None for any other family."""
    if len(address) < 4:
        return None
    family = int.from_bytes(address[:2], sys.byteorder)
    if family not in (2, 10):  # AF_INET, AF_INET6
        return None
    return int.from_bytes(address[2:4], "big")


def _is_stream(tid: int, fd: int) -> bool:
    """Whether the child's ``fd`` is a SOCK_STREAM socket (UDP binds of the port stay theirs).

    Seen through ``pidfd_getfd``; when that is not allowed, a TCP socket is assumed.
    """
    import socket

    try:
        pidfd = os.pidfd_open(_tgid(tid))
    except (OSError, AttributeError):
        return True
    calls = libc()
    if calls is None:
        os.close(pidfd)
        return True
    try:
        copy, _ = calls.syscall(_NR_PIDFD_GETFD, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    if copy < 0:
        return True
    with socket.socket(fileno=copy) as sock:
        return bool(sock.type == socket.SOCK_STREAM)


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return tid


def _is_cloexec(tid: int, fd: int) -> bool:
    try:
        with open(f"/proc/{tid}/fdinfo/{fd}", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags:"):
                    return bool(int(line.split()[1], 8) & _O_CLOEXEC)
    except (OSError, ValueError, IndexError):
        pass
    return True


def answer_binds(
    reactor: Reactor, notify_fd: int, listener: Optional[socket.socket], plan: HandoffPlan,
    log: Logger, on_bound: Callable[[], None],
) -> BindTrap:
    """Answer the child's binds of the public port from the loop, until the filter closes."""
    assert listener is not None and plan.bind_port is not None
    trap = BindTrap(notify_fd, listener, plan.bind_port, log.info, on_bound=on_bound)

    def on_readable() -> None:
        if not trap.on_readable():
            reactor.remove_reader(notify_fd)
            trap.close()

    reactor.add_reader(notify_fd, on_readable)
    return trap
