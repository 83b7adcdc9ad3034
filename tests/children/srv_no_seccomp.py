"""Run a command where seccomp(2) fails with EPERM, as under a strict container profile.

The filter is installed with prctl(PR_SET_SECCOMP), so it needs no seccomp(2) itself, and
inherited by everything the command starts.
"""

import ctypes
import os
import sys

# machine -> (AUDIT_ARCH_*, __NR_seccomp)
ARCHES = {"x86_64": (0xC000003E, 317), "aarch64": (0xC00000B7, 277),
          "riscv64": (0xC00000F3, 277)}
EPERM = 1


def op(code: int, jt: int, jf: int, k: int) -> bytes:
    return code.to_bytes(2, sys.byteorder) + bytes((jt, jf)) + k.to_bytes(4, sys.byteorder)


def main() -> None:
    arch, seccomp_nr = ARCHES[os.uname().machine]
    program = b"".join((
        op(0x20, 0, 0, 4),  # load the architecture
        op(0x15, 0, 3, arch),
        op(0x20, 0, 0, 0),  # load the system call number
        op(0x15, 0, 1, seccomp_nr),
        op(0x06, 0, 0, 0x00050000 | EPERM),  # SECCOMP_RET_ERRNO | EPERM
        op(0x06, 0, 0, 0x7FFF0000),  # SECCOMP_RET_ALLOW
    ))
    libc = ctypes.CDLL(None, use_errno=True)
    code = ctypes.create_string_buffer(program, len(program))
    fprog = ctypes.create_string_buffer(
        (len(program) // 8).to_bytes(2, sys.byteorder) + bytes(6)
        + ctypes.addressof(code).to_bytes(8, sys.byteorder), 16)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, 2, fprog, 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
