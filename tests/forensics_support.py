"""Test support for start-up forensics: a process in which reading another's memory is denied.

Owns: a seccomp filter, installed between fork and exec, under which
``ptrace`` and ``process_vm_readv``/``writev`` fail with EPERM for the process
and everything it starts. This is what Docker's default seccomp profile does
on kernels older than 4.8, and what a container without ``SYS_PTRACE`` sees
under a strict Yama policy: py-spy cannot read the app's stack.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
from typing import Callable, Optional

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
# (audit arch, ptrace, process_vm_readv, process_vm_writev)
ARCHES = {
    "x86_64": (0xC000003E, 101, 310, 311),
    "aarch64": (0xC00000B7, 117, 270, 271),
}


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def unsupported_reason() -> Optional[str]:
    if platform.machine() not in ARCHES:
        return f"no seccomp syscall table for {platform.machine()} in the test"
    return None


def deny_ptrace() -> Callable[[], None]:
    """A ``preexec_fn``: from exec on, the process and its children cannot ptrace."""
    arch, *numbers = ARCHES[platform.machine()]
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (BPF_JEQ_K, 0, 4, arch),  # another ABI: allow (jump to the allow below)
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (BPF_JEQ_K, 3, 0, numbers[0]),
        (BPF_JEQ_K, 2, 0, numbers[1]),
        (BPF_JEQ_K, 1, 0, numbers[2]),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, deny),
    ]
    filters = (SockFilter * len(program))(*[SockFilter(*item) for item in program])
    fprog = SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    assert struct.calcsize("P") == 8

    def install() -> None:
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")

    return install
