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


def test_a_file_kept_open_reads_anew_each_time(tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_bytes(b"1\n")
    kept = procfs.OpenFile.open(str(path))
    assert kept is not None
    try:
        assert kept.read() == b"1\n"
        path.write_bytes(b"22\n")  # same inode: truncated and rewritten
        assert kept.read() == b"22\n" and kept.read(2) == b"22"
    finally:
        kept.close()
    kept.close()  # a second close is nothing
    assert kept.read() is None
    assert procfs.OpenFile.open(f"/proc/{GONE}/statm") is None


def test_statm_kept_open_follows_its_process_and_ends_with_it() -> None:
    code = "import sys; b = bytearray(64 << 20); print('held', flush=True); sys.stdin.read()"
    process = subprocess.Popen([PYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    kept = procfs.OpenFile.open(f"/proc/{process.pid}/statm")
    assert kept is not None
    try:
        assert process.stdout is not None and process.stdout.readline() == b"held\n"
        data = kept.read(procfs.STATM_LIMIT)
        assert data is not None
        rss, by_path = procfs.parse_statm_rss(data), procfs.statm_rss(process.pid)
        assert rss is not None and by_path is not None and rss >= 64 << 20
        assert abs(rss - by_path) < 4 << 20  # the same file, read a moment apart
        assert process.stdin is not None
        process.stdin.close()
        wait_for(lambda: kept.read() == b"0 0 0 0 0 0 0\n", what="the child to be a zombie")
        process.wait(10)
        # Reaped: nothing to read, even if the pid were taken by another process.
        assert kept.read() is None
    finally:
        kept.close()
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.parametrize(("data", "pages"), [
    (b"648 410 384 19 0 91 0\n", 410), (b"0 0 0 0 0 0 0\n", 0),
])
def test_parse_statm(data: bytes, pages: int) -> None:
    assert procfs.parse_statm_rss(data) == pages * procfs.PAGE_SIZE


@pytest.mark.parametrize("data", [b"", b"648", b"648 x 3"])
def test_parse_statm_refuses_what_is_not_statm(data: bytes) -> None:
    assert procfs.parse_statm_rss(data) is None
