"""The one reader of /proc, over real processes: stat, status, statm, children, fds."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from supervisor import procfs
from tests.conftest import wait_for

PYTHON = sys.executable
GONE = 2**22 + 12345  # above pid_max: never a process


@pytest.fixture
def started() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(list(argv), start_new_session=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


def test_stat_of_this_process() -> None:
    stat = procfs.read_stat(os.getpid())
    assert stat is not None
    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()
    assert stat.pgrp == os.getpgrp()
    assert stat.session == os.getsid(0)
    assert stat.state in "RS" and not stat.zombie
    assert procfs.read_stat("self") is not None
    assert procfs.read_stat(GONE) is None


def test_a_command_name_with_spaces_and_parentheses(
    tmp_path: Path, started: Callable[..., subprocess.Popen[bytes]]
) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    odd = tmp_path / "a) (b c"
    shutil.copy(sleep, odd)
    process = started(str(odd), "30")
    stat = wait_for(lambda: (s := procfs.read_stat(process.pid)) and s.comm == odd.name and s,
                    what="the copied sleep to exec")
    assert isinstance(stat, procfs.ProcStat)
    assert stat.ppid == os.getpid() and stat.pgrp == process.pid


@pytest.mark.parametrize(("line", "fields"), [
    ("42 (x) S 1 42 42 0 -1", (42, "x", "S", 1, 42, 42)),
    ("7 (a) (b)) Z 3 7 1", (7, "a) (b)", "Z", 3, 7, 1)),
])
def test_parse_stat(line: str, fields: tuple[object, ...]) -> None:
    stat = procfs.parse_stat(line)
    assert stat is not None
    assert (stat.pid, stat.comm, stat.state, stat.ppid, stat.pgrp, stat.session) == fields


@pytest.mark.parametrize("line", ["", "garbage", "1 (x) S", "x (y) S 1 2 3"])
def test_parse_stat_refuses_what_is_not_a_stat_line(line: str) -> None:
    assert procfs.parse_stat(line) is None


def test_status_and_statm_agree_on_resident_memory() -> None:
    status = procfs.read_status(os.getpid())
    assert status is not None
    assert status["Pid"] == str(os.getpid())
    vm_rss_kib = int(status["VmRSS"].split()[0])
    rss = procfs.statm_rss(os.getpid())
    assert rss is not None
    assert abs(rss - vm_rss_kib * 1024) < 64 * 1024 * 1024  # read a moment apart
    assert procfs.read_status(GONE) is None and procfs.statm_rss(GONE) is None


def test_a_zombie_reads_as_one_holding_nothing() -> None:
    process = subprocess.Popen(["true"])
    try:
        wait_for(lambda: (s := procfs.read_stat(process.pid)) is not None and s.zombie,
                 what="true to exit")
        assert procfs.statm_rss(process.pid) == 0
    finally:
        process.wait(10)


def test_children_and_descendants_of_a_tree(
    started: Callable[..., subprocess.Popen[bytes]]
) -> None:
    # A shell with two children, one of which has a child of its own.
    root = started("sh", "-c", "sleep 30 & sh -c 'sleep 30 & wait' & wait")

    def tree() -> list[int]:
        found = procfs.descendants(root.pid)
        return found if len(found) == 4 else []

    found = wait_for(tree, what="four processes in the tree")
    assert isinstance(found, list) and found[0] == root.pid
    direct = procfs.children(root.pid)
    assert direct is not None and len(direct) == 2
    assert set(direct) < set(found)
    by_parent = procfs.parent_map()
    assert sorted(by_parent[root.pid]) == sorted(direct)
    assert procfs.children(GONE) == [] and procfs.descendants(GONE) == [GONE]


def test_open_fds_and_what_they_are() -> None:
    with socket.socket() as sock:
        fd = sock.fileno()
        assert fd in procfs.open_fds(os.getpid())
        target = procfs.fd_target(os.getpid(), fd)
        assert target == f"socket:[{os.fstat(fd).st_ino}]"
    assert procfs.open_fds(GONE) == [] and procfs.fd_target(GONE, 0) is None


def test_any_small_file_as_text() -> None:
    assert procfs.read_text("self", "cgroup") is not None
    assert procfs.read_text(GONE, "cgroup") is None
    assert procfs.supported()
