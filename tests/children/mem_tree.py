"""A process tree: this process forks --children children that each hold --mb MiB.

Prints "ready <pid> <pid> ..." (itself first) once every child has written its
memory, then waits for stdin to close. Children exit when the parent does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

MIB = 1024 * 1024


def child(mb: int, ready_fd: int) -> None:
    _held = b"\x01" * (mb * MIB)
    os.write(ready_fd, b"x")
    # Hold the memory until killed (by the test, or with the parent).
    while True:
        signal.pause()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--mb", type=int, default=20)
    args = parser.parse_args()
    read_fd, write_fd = os.pipe()
    pids = []
    for _ in range(args.children):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            # Die with the parent, however it dies.
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:
                os._exit(0)
            child(args.mb, write_fd)
            os._exit(0)
        pids.append(pid)
    os.close(write_fd)
    got = 0
    while got < args.children:
        got += len(os.read(read_fd, 64))
    print("ready", os.getpid(), *pids, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
