"""Finding and reading cgroups: real groups here, and v2 files as a kernel writes them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import pytest

from supervisor.cgroups import (
    CgroupMemory,
    CgroupSnapshot,
    cpu_quota,
    find_memory_group,
    parse_membership,
    parse_mountinfo,
)
from tests import cgroups
from tests.cgroups import memory_group, spawn, write_files

__all__ = ["memory_group", "spawn"]  # fixtures, used by name

MIB = 1024 * 1024
CGROUP_UNUSABLE = cgroups.unusable_reason()
needs_cgroup = pytest.mark.skipif(CGROUP_UNUSABLE is not None, reason=str(CGROUP_UNUSABLE))


@needs_cgroup
def test_of_process_finds_the_memory_group_this_process_is_in() -> None:
    own = cgroups.own_memory_group()
    found = CgroupMemory.of_process()
    assert found is not None
    assert (found.path, found.version) == (own.own_group, own.version)
    snapshot = found.read()
    assert snapshot.usage_bytes is not None and snapshot.usage_bytes > 0
    assert snapshot.peak_bytes is not None and snapshot.peak_bytes >= snapshot.usage_bytes // 2
    assert snapshot.oom_kills is not None


@needs_cgroup
def test_of_process_finds_a_child_placed_in_a_nested_group(
    spawn: Callable[..., subprocess.Popen[bytes]], memory_group: Callable[..., str]
) -> None:
    group = memory_group(64 * MIB)
    process = spawn("sleep", "30", group=group)
    found = CgroupMemory.of_process(process.pid)
    assert found is not None and found.path == group
    snapshot = found.read()
    assert snapshot.limit_bytes == 64 * MIB
    assert snapshot.oom_kills == 0


@needs_cgroup
def test_limit_is_the_smallest_of_the_group_and_its_ancestors(
    memory_group: Callable[..., str],
) -> None:
    outer = memory_group(96 * MIB)
    inner = memory_group(None, parent=outer)
    version = cgroups.own_memory_group().version
    assert CgroupMemory.at(inner, version).read().limit_bytes == 96 * MIB
    tighter = memory_group(32 * MIB, parent=outer)
    assert CgroupMemory.at(tighter, version).read().limit_bytes == 32 * MIB


@needs_cgroup
def test_an_unlimited_group_reads_as_no_limit(memory_group: Callable[..., str]) -> None:
    own = cgroups.own_memory_group()
    parent_limit = CgroupMemory.at(own.own_group, own.version).read().limit_bytes
    group = memory_group(None)
    # Unlimited here means the parent's effective limit, None when it has none.
    assert CgroupMemory.at(group, own.version).read().limit_bytes == parent_limit


def test_unreadable_group_gives_none_fields(tmp_path: Path) -> None:
    for version in (1, 2):
        snapshot = CgroupMemory.at(str(tmp_path / "gone"), version).read()
        assert snapshot == CgroupSnapshot(None, None, None, None)


# Files as a cgroup v2 kernel (6.x) writes them, after an OOM kill at 512 MiB.
V2_FILES = {
    "memory.current": "278528\n",
    "memory.peak": "536870912\n",
    "memory.max": "max\n",
    "memory.events": "low 0\nhigh 0\nmax 35\noom 1\noom_kill 1\noom_group_kill 0\n",
    "memory.stat": (
        "anon 98304\nfile 163840\nkernel 16384\nkernel_stack 0\npagetables 0\n"
        "sec_pagetables 0\npercpu 0\nsock 0\nvmalloc 0\nshmem 0\nfile_mapped 0\n"
        "file_dirty 0\nfile_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\n"
        "shmem_thp 0\ninactive_anon 94208\nactive_anon 4096\ninactive_file 122880\n"
        "active_file 40960\nunevictable 0\nslab_reclaimable 0\nslab_unreclaimable 0\n"
        "slab 0\npgfault 133216\npgmajfault 0\noom_kill 1\n"
    ),
}


def test_v2_files_are_read_with_the_limit_of_an_ancestor(tmp_path: Path) -> None:
    # The mount's root group has no memory.max; the service group has the
    # limit; the app's group below it is "max".
    root = tmp_path / "cgroup root"
    write_files(root, {"cgroup.controllers": "cpu io memory pids\n"})
    service = root / "system.slice" / "app.service"
    write_files(root / "system.slice", {"memory.max": "max\n"})
    write_files(service, {"memory.max": "536870912\n"})
    group = service / "app"
    write_files(group, V2_FILES)
    snapshot = CgroupMemory.at(str(group), 2).read()
    assert snapshot == CgroupSnapshot(
        usage_bytes=278528,
        peak_bytes=536870912,
        limit_bytes=536870912,
        oom_kills=1,
        inactive_file_bytes=122880,
    )
    assert snapshot.working_set_bytes == 278528 - 122880


def test_v2_before_memory_peak_and_without_a_limit(tmp_path: Path) -> None:
    files = {k: v for k, v in V2_FILES.items() if k != "memory.peak"}
    write_files(tmp_path / "g", files)
    snapshot = CgroupMemory.at(str(tmp_path / "g"), 2).read()
    assert snapshot.peak_bytes is None
    assert snapshot.limit_bytes is None


def test_v2_membership_is_found_through_the_mount_table(tmp_path: Path) -> None:
    # A /proc for pid 4242 in a v2-only container without a cgroup namespace:
    # the group path is under the mount's root, and the mount point has a space.
    mount_point = tmp_path / "fs cgroup"
    write_files(mount_point / "pod1" / "ctr", V2_FILES)
    mountinfo = (
        "22 1 0:21 / / rw,relatime - overlay overlay rw\n"
        f"30 22 0:26 /kubepods {str(mount_point).replace(' ', chr(92) + '040')} "
        "ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    found = find_memory_group("0::/kubepods/pod1/ctr\n", mountinfo)
    assert found == CgroupMemory(str(mount_point / "pod1" / "ctr"), 2)


def test_a_v2_hierarchy_without_memory_is_skipped(tmp_path: Path) -> None:
    # This machine's layout: v1 memory, plus an empty v2 mount (no memory.current).
    v1 = tmp_path / "memory"
    write_files(v1 / "job", {"memory.usage_in_bytes": "4096\n"})
    write_files(tmp_path / "unified", {"cgroup.procs": ""})
    mountinfo = (
        f"35 31 0:32 / {v1} rw,relatime - cgroup cgroup rw,memory\n"
        f"41 31 0:38 / {tmp_path / 'unified'} rw,relatime - cgroup2 cgroup2 rw\n"
    )
    assert find_memory_group("4:memory:/job\n0::/\n", mountinfo) == CgroupMemory(
        str(v1 / "job"), 1)
    assert find_memory_group("0::/\n", mountinfo) is None
    assert find_memory_group("", "") is None


def test_membership_lists_v1_controllers_and_the_v2_path() -> None:
    text = "12:memory:/job\n4:cpu,cpuacct:/job/cpu\n0::/unified/path\nbroken line\n"
    assert parse_membership(text) == (
        {"memory": "/job", "cpu": "/job/cpu", "cpuacct": "/job/cpu"}, "/unified/path")


def test_mountinfo_unescapes_octal_and_keeps_the_super_options() -> None:
    line = "30 22 0:26 /a\\040b /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory\n"
    (mount,) = parse_mountinfo(line + "garbage\n")
    assert (mount.root, mount.mount_point, mount.fstype) == ("/a b", "/sys/fs/cgroup/my mem",
                                                            "cgroup")
    assert mount.is_v1_memory


def test_the_cpu_quota_of_this_process_is_a_number_or_none() -> None:
    quota = cpu_quota()
    assert quota is None or quota > 0
    assert cpu_quota(2**22 + 12345) is None  # no such process


def test_an_invalid_version_is_refused() -> None:
    with pytest.raises(ValueError, match="1 or 2"):
        CgroupMemory.at("/sys/fs/cgroup", 3)


def test_a_reader_reads_what_a_sample_needs_from_files_kept_open(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_files(root, {"cgroup.controllers": "memory\n"})
    write_files(root / "job", {"memory.max": "536870912\n"})
    group = root / "job" / "app"
    write_files(group, V2_FILES)
    memory = CgroupMemory.at(str(group), 2)
    reader = memory.reader()
    whole = memory.read()
    try:
        # The same usage, limit and page cache; the peak and the counter are the end's.
        assert reader.read() == CgroupSnapshot(whole.usage_bytes, None, whole.limit_bytes,
                                               None, whole.inactive_file_bytes)
        write_files(group, {"memory.current": "1048576\n"})  # rewritten in place
        write_files(root / "job", {"memory.max": "268435456\n"})
        again = reader.read()
        assert (again.usage_bytes, again.limit_bytes) == (1048576, 268435456)
    finally:
        reader.close()
    write_files(group, {"memory.current": "2097152\n"})
    assert reader.read().usage_bytes == 2097152  # closed: opened again by the next reading
    reader.close()


@needs_cgroup
def test_a_reader_of_a_real_group_agrees_with_a_reading_by_path(
    memory_group: Callable[..., str]
) -> None:
    group = memory_group(64 * MIB)
    memory = CgroupMemory.at(group, cgroups.own_memory_group().version)
    reader = memory.reader()
    try:
        sample, whole = reader.read(), memory.read()
        assert sample.limit_bytes == whole.limit_bytes == 64 * MIB
        assert sample.usage_bytes is not None and sample.inactive_file_bytes is not None
        assert sample.peak_bytes is None and sample.oom_kills is None
        cgroups.remove(group)  # files held open do not keep a group from going
        assert reader.read() == CgroupSnapshot(None, None, None, None)
    finally:
        reader.close()
