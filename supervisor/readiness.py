"""Readiness seen from outside: has the child put the listening socket into an epoll set?

Owns: walking a process tree in /proc and reading epoll fdinfo.

Must not know: HTTP, the stub, the loop or uvicorn's log. uvicorn (each worker
too) registers the listening socket with its epoll only after its lifespan
startup, so that registration is the moment the app can answer; matching is by
socket inode because the child may hold the socket under another fd number.
Every function here tolerates processes that vanish mid-scan.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

_PROC = "/proc"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _children_of(pid: int) -> Optional[list[int]]:
    """Children from /proc/<pid>/task/*/children; None when the kernel lacks that file."""
    try:
        tasks = os.listdir(f"{_PROC}/{pid}/task")
    except OSError:
        return []  # gone (or never there): no children
    children: list[int] = []
    for task in tasks:
        text = _read(f"{_PROC}/{pid}/task/{task}/children")
        if text is None:
            if os.path.exists(f"{_PROC}/{pid}/task/{task}"):
                return None  # the task lives but the file does not: no CONFIG_PROC_CHILDREN
            continue
        children.extend(int(word) for word in text.split())
    return children


def _parent_map() -> dict[int, list[int]]:
    """Every process's children, from the ppid field of /proc/*/stat."""
    tree: dict[int, list[int]] = {}
    try:
        names = os.listdir(_PROC)
    except OSError:
        return tree
    for name in names:
        if not name.isdigit():
            continue
        text = _read(f"{_PROC}/{name}/stat")
        if text is None:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = text.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1].isdigit():
            tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def descendants(pid: int) -> list[int]:
    """``pid`` followed by all its descendants (breadth first)."""
    found = [pid]
    seen = {pid}
    tree: Optional[dict[int, list[int]]] = None
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        children = None if tree is not None else _children_of(current)
        if children is None:
            if tree is None:
                tree = _parent_map()
            children = tree.get(current, [])
        for child in children:
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def _epoll_watches(pid: int, fd: str, inode: int) -> bool:
    text = _read(f"{_PROC}/{pid}/fdinfo/{fd}")
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
        base = f"{_PROC}/{pid}/fd"
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{base}/{fd}")
            except OSError:
                continue
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
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return True
            except OSError:
                continue
    return False


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

