"""No network for the child: a network namespace of its own with only loopback up.

Owns: entering a new network namespace between fork and exec and bringing
``lo`` up there; and checking, before anything starts, that this machine
allows it (exit 2 with what to use instead when it does not).
Must not know: the loop, the socket hand-off or the report. A listening
socket the child inherited from the supervisor's namespace keeps accepting
clients from outside: the public port still works, outbound traffic does not.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import socket
import struct
import sys

from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
# struct ifreq: a 16-byte name, then a union whose first member here is a short.
_IFREQ = struct.Struct("16sh22x")


@functools.lru_cache(maxsize=1)
def _unshare_function() -> Callable[[int], None]:
    """``os.unshare`` (Python 3.12+), or the C library's, loaded once in the parent."""
    native = getattr(os, "unshare", None)
    if native is not None:
        return native  # type: ignore[no-any-return]
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    call = libc.unshare
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def unshare(flags: int) -> None:
        if call(flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return unshare


def enter_new_network_namespace() -> None:
    """Move the calling process into a new network namespace with only ``lo``, up.

    For ``before_exec``: the child then reaches nothing but itself, as on a
    platform without outbound access, while a listening socket it inherited
    from the supervisor's namespace keeps accepting clients from outside.
    ``lo`` is brought up with the SIOCSIFFLAGS ioctl (no ``ip`` binary needed);
    the socket for it must be made after unshare, in the new namespace.
    Raises ``OSError``.
    """
    _unshare_function()(CLONE_NEWNET)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = bytearray(_IFREQ.pack(b"lo", 0))
        fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
        _, flags = _IFREQ.unpack(bytes(request))
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def check_can_unshare_network() -> None:
    """``UsageError`` now, before any child starts, when ``--no-network`` cannot work.

    Tried for real in a short-lived forked process: capabilities alone do not
    tell (seccomp profiles and user namespaces decide too).
    """
    refusal = (
        "--no-network: cannot give the child a network namespace of its own: {why}; "
        "it needs root (CAP_SYS_ADMIN; in Docker, --cap-add SYS_ADMIN), or test with "
        "docker run --network none instead (which also closes the public port)"
    )
    if not sys.platform.startswith("linux"):
        raise UsageError(refusal.format(why="network namespaces exist only on Linux"))
    unshare = _unshare_function()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked probe
        code = 0
        try:
            os.close(read_fd)
            unshare(CLONE_NEWNET)
        except OSError as exc:
            code = exc.errno or errno.EPERM
        except BaseException:
            code = errno.EPERM
        finally:
            os.write(write_fd, bytes([code & 0xFF]))
            os._exit(0)
    os.close(write_fd)
    try:
        answer = os.read(read_fd, 1)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    code = answer[0] if answer else errno.EPERM
    if code:
        raise UsageError(refusal.format(why=os.strerror(code)))
