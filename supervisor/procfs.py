"""What the kernel says about processes in /proc: the one reader of its files.

Owns: reading ``/proc/<pid>/stat``, ``status``, ``statm``, the children
lists under ``task/*/children`` (with a fallback to the parent field of every
``stat`` where the kernel has no such lists), open file descriptors and what
they point to, and any other small per-process file (``fdinfo/N``,
``cgroup``, ``mountinfo``) as text; and ``OpenFile``, a small kernel file kept
open for readings repeated on a timer. Every function tolerates a process that
vanishes mid-read: a process that is gone reads as None, or as no children.
Must not know: why anyone asks (readiness, reaping, memory, cgroups).

Cheap to import (no typing, re or dataclasses): it may be read before the spawn.
"""

from __future__ import annotations

import os

from .values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Union

    Pid = Union[int, str]  # a number, or "self"

PROC = "/proc"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# statm is seven numbers of at most 20 digits.
STATM_LIMIT = 256


@frozen
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that anyone here needs."""

    pid: int
    comm: str  # the command name, without the parentheses
    state: str  # "R", "S", "D", "Z" (zombie), "T", ...
    ppid: int
    pgrp: int
    session: int

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def read_bytes(pid: Pid, name: str, limit: int = 65536) -> Optional[bytes]:
    """The raw content of ``/proc/<pid>/<name>`` (at most ``limit`` bytes), or None."""
    try:
        fd = os.open(f"{PROC}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None  # ESRCH: gone between open and read
    finally:
        os.close(fd)


def read_text(pid: Pid, name: str) -> Optional[str]:
    """``/proc/<pid>/<name>`` as text (ASCII, anything else replaced), or None."""
    data = read_bytes(pid, name)
    return None if data is None else data.decode("ascii", "replace")


def parse_stat(text: str) -> Optional[ProcStat]:
    """A ``stat`` line; None when it is not one."""
    # The command name may hold spaces and parentheses: split around the last ')'.
    head, close, rest = text.rpartition(")")
    pid_text, open_, comm = head.partition(" (")
    fields = rest.split()
    if not close or not open_ or len(fields) < 4:
        return None
    try:
        return ProcStat(
            pid=int(pid_text),
            comm=comm,
            state=fields[0],
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
        )
    except ValueError:
        return None


def read_stat(pid: Pid) -> Optional[ProcStat]:
    """``/proc/<pid>/stat``; None when the process is gone."""
    text = read_text(pid, "stat")
    return None if text is None else parse_stat(text)


def read_status(pid: Pid) -> Optional[dict[str, str]]:
    """``/proc/<pid>/status`` as {field: value} ("VmRSS": "1234 kB"); None when gone."""
    text = read_text(pid, "status")
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name] = value.strip()
    return fields


def statm_rss(pid: Pid) -> Optional[int]:
    """Resident memory in bytes, from ``statm`` (cheaper than ``status``); None when gone.

    A zombie reads as 0: it holds nothing.
    """
    data = read_bytes(pid, "statm", STATM_LIMIT)
    return None if data is None else parse_statm_rss(data)


def parse_statm_rss(data: bytes) -> Optional[int]:
    """Resident memory in bytes from the content of ``statm``; None when it is not one."""
    fields = data.split(None, 2)
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1]) * PAGE_SIZE


class OpenFile:
    """A small kernel file kept open, read again from its start with one ``pread``.

    For readings repeated on a timer: one system call where opening the path
    each time takes four (open, read, read to the end, close). The kernel
    makes the content anew at every read from offset 0. A ``/proc/<pid>/``
    file stays bound to the process it was opened for: once that process is
    reaped it reads as None, even when its pid is reused.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, path: str) -> Optional[OpenFile]:
        """``path`` opened for reading; None when it cannot be (gone, EMFILE, EACCES)."""
        try:
            return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            return None

    def read(self, limit: int = 4096) -> Optional[bytes]:
        """Up to ``limit`` bytes from the start, in one read; None when unreadable (ESRCH).

        One read is the whole file when the kernel writes it in one piece and
        it is shorter than ``limit``: ``statm``, a cgroup's memory files.
        """
        try:
            return os.pread(self.fd, limit, 0)
        except OSError:  # gone (ESRCH), or closed
            return None

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # A holder dropped without closing (a watcher never finished) leaks no fd.
        try:
            self.close()
        except Exception:  # EBADF, or at interpreter exit: nothing to do
            pass


def open_fds(pid: Pid) -> list[int]:
    """The file descriptors ``pid`` holds open; [] when gone or not ours to read."""
    try:
        return [int(name) for name in os.listdir(f"{PROC}/{pid}/fd") if name.isdigit()]
    except OSError:
        return []


def fd_target(pid: Pid, fd: int) -> Optional[str]:
    """What ``fd`` of ``pid`` is: a path, or ``socket:[INODE]``, ``pipe:[INODE]``; or None."""
    try:
        return os.readlink(f"{PROC}/{pid}/fd/{fd}")
    except OSError:
        return None


def pids() -> list[int]:
    """Every process this namespace shows."""
    try:
        return [int(name) for name in os.listdir(PROC) if name.isdigit()]
    except OSError:
        return []


def children(pid: int) -> Optional[list[int]]:
    """``pid``'s children from ``task/*/children``; None when the kernel lacks those files.

    A process that is gone has no children ([]).
    """
    try:
        tasks = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        text = read_text(pid, f"task/{task}/children")
        if text is None:
            if os.path.exists(f"{PROC}/{pid}/task/{task}"):
                return None  # the task lives but the file does not: no CONFIG_PROC_CHILDREN
            continue
        found.extend(int(word) for word in text.split())
    return found


def parent_map() -> dict[int, list[int]]:
    """Every process's children, from the parent field of every ``stat``."""
    tree: dict[int, list[int]] = {}
    for pid in pids():
        stat = read_stat(pid)
        if stat is not None:
            tree.setdefault(stat.ppid, []).append(pid)
    return tree


def descendants(pid: int) -> list[int]:
    """``pid`` followed by all its descendants, breadth first."""
    found = [pid]
    seen = {pid}
    tree: Optional[dict[int, list[int]]] = None
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        below = None if tree is not None else children(current)
        if below is None:
            if tree is None:
                tree = parent_map()
            below = tree.get(current, [])
        for child in below:
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def supported() -> bool:
    """Whether this system has a /proc to read (Linux), checked on this process."""
    return os.path.isdir(f"{PROC}/{os.getpid()}/task")
