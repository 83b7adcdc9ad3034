"""Control groups as the kernel shows them: which group a process is in, and its memory.

Owns: parsing ``/proc/<pid>/cgroup`` (membership) and ``mountinfo`` (where
each hierarchy is mounted); finding the directory of a group on cgroup v1 or
v2; reading a memory group (usage, peak, the effective limit, the OOM-kill
counter, the working set); and reading a group's CPU quota.
Must not know: the child, the watcher, or what the figures mean for a run.
Making a group for the child is ``child_cgroup``'s.

Cheap to import (no typing, re or dataclasses): the child's group is made
before the spawn. Nothing here raises at a reader: an unreadable file gives
None.
"""

from __future__ import annotations

import os

from . import procfs
from .values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional, Union

    ReadText = Callable[[str], Optional[str]]  # a file's text, or None

# cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 on
# x86-64 with 4 KiB pages); any value this large is not a limit anyone set.
V1_UNLIMITED = 1 << 62


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None


def _read_int(path: str) -> Optional[int]:
    return _as_int(_read_text(path))


def _as_int(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _keyed(text: Optional[str], key: str) -> Optional[int]:
    """The value of ``key`` in "key value" lines (memory.events, memory.stat, oom_control).

    Read by key, never by position: the kernel adds keys between versions.
    A missing key is unknown (None), not zero: an old kernel has not said
    that nothing happened.
    """
    if text is None:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _min_known(*values: Optional[int]) -> Optional[int]:
    known = [v for v in values if v is not None]
    return min(known) if known else None


# -- cgroups ------------------------------------------------------------------


@frozen
class CgroupSnapshot:
    """One reading of a memory cgroup; a field is None when its file could not be read."""

    usage_bytes: Optional[int]
    peak_bytes: Optional[int]
    # None when unlimited ("max" in v2, the huge sentinel in v1). The smallest
    # limit of the group and its ancestors: a container's group often has none
    # of its own while the pod's or task's group above it has one.
    limit_bytes: Optional[int]
    oom_kills: Optional[int]
    # Page cache the kernel can drop at once; usage minus this is the working
    # set, which is what nears the limit for real (the kubelet's measure).
    inactive_file_bytes: Optional[int] = None

    @property
    def working_set_bytes(self) -> Optional[int]:
        if self.usage_bytes is None:
            return None
        return max(0, self.usage_bytes - (self.inactive_file_bytes or 0))


@frozen
class CgroupMemory:
    """The memory files of one cgroup directory, v1 or v2."""

    path: str
    version: int

    @classmethod
    def at(cls, path: str, version: int) -> CgroupMemory:
        """The group at ``path``; ``ValueError`` for a version that is not 1 or 2."""
        if version not in (1, 2):
            raise ValueError(f"cgroup version must be 1 or 2, not {version!r}")
        return cls(path, version)

    @classmethod
    def of_process(cls, pid: Union[int, str] = "self") -> Optional[CgroupMemory]:
        """The memory cgroup ``pid`` is in, or None when there is no readable one."""
        membership = procfs.read_text(pid, "cgroup")
        mounts = procfs.read_text(pid, "mountinfo")
        if membership is None or mounts is None:
            return None
        return find_memory_group(membership, mounts)

    def read(self) -> CgroupSnapshot:
        """Read every memory file; never raises (an unreadable file gives a None field)."""
        return self._read(_read_text, whole=True)

    def reader(self) -> MemoryReader:
        """A reader for readings on a timer: files kept open, only what a sample needs."""
        return MemoryReader(self)

    def _read(self, text: ReadText, whole: bool) -> CgroupSnapshot:
        try:
            return self._read_v1(text, whole) if self.version == 1 else self._read_v2(text, whole)
        except Exception:  # a reading must never take the supervisor down
            return CgroupSnapshot(None, None, None, None)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _read_v1(self, text: ReadText, whole: bool) -> CgroupSnapshot:
        stat = text(self._file("memory.stat"))
        limit = _min_known(
            _as_int(text(self._file("memory.limit_in_bytes"))),
            # v1 only enforces a parent's limit if use_hierarchy is on; the
            # kernel then reports the effective one here.
            _keyed(stat, "hierarchical_memory_limit"),
        )
        if limit is not None and limit >= V1_UNLIMITED:
            limit = None
        return CgroupSnapshot(
            usage_bytes=_as_int(text(self._file("memory.usage_in_bytes"))),
            peak_bytes=_as_int(text(self._file("memory.max_usage_in_bytes"))) if whole else None,
            limit_bytes=limit,
            # The oom_kill line exists since Linux 4.13. In v1 it counts kills
            # of tasks in this group only, not in its descendants.
            oom_kills=_keyed(text(self._file("memory.oom_control")), "oom_kill") if whole else None,
            inactive_file_bytes=_keyed(stat, "total_inactive_file"),
        )

    def _read_v2(self, text: ReadText, whole: bool) -> CgroupSnapshot:
        return CgroupSnapshot(
            usage_bytes=_as_int(text(self._file("memory.current"))),
            # memory.peak exists since Linux 5.19.
            peak_bytes=_as_int(text(self._file("memory.peak"))) if whole else None,
            limit_bytes=self._v2_effective_limit(text),
            # Hierarchical: kills in descendant groups count too.
            oom_kills=_keyed(text(self._file("memory.events")), "oom_kill") if whole else None,
            inactive_file_bytes=_keyed(text(self._file("memory.stat")), "inactive_file"),
        )

    def _v2_effective_limit(self, text: ReadText) -> Optional[int]:
        # v2 has no hierarchical_memory_limit: walk up while the parent still
        # has a memory.max (the root group has none), keeping the smallest.
        limit: Optional[int] = None
        path = self.path
        while True:
            content = text(os.path.join(path, "memory.max"))
            if content is None:
                break
            value = content.strip()
            if value.isdigit():
                limit = _min_known(limit, int(value))
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        return limit


# A memory group's files are a few KiB at most (memory.stat); one that fills
# this in one read is read again by path, whole.
KEPT_READ_LIMIT = 16384


class MemoryReader:
    """One memory group read on a timer: its files kept open, only what a sample needs.

    ``read`` gives the usage, the page cache of the working set and the
    effective limit, at one ``pread`` per file instead of an open, reads and
    a close. The peak and the OOM-kill counter, wanted once at the end, are
    left None: ``CgroupMemory.read`` has them. ``close`` closes the files; a
    later ``read`` opens them again.
    """

    def __init__(self, group: CgroupMemory) -> None:
        self.group = group
        self._files: dict[str, procfs.OpenFile] = {}

    def read(self) -> CgroupSnapshot:
        return self.group._read(self._text, whole=False)

    def _text(self, path: str) -> Optional[str]:
        kept = self._files.get(path)
        if kept is None:
            kept = procfs.OpenFile.open(path)
            if kept is None:
                return None
            self._files[path] = kept
        data = kept.read(KEPT_READ_LIMIT)
        if data is None:  # the group is gone: by path, as without a reader
            del self._files[path]
            kept.close()
            return _read_text(path)
        if len(data) >= KEPT_READ_LIMIT:
            return _read_text(path)
        return data.decode("ascii", "replace")

    def close(self) -> None:
        for kept in self._files.values():
            kept.close()
        self._files.clear()


def find_memory_group(membership: str, mountinfo: str) -> Optional[CgroupMemory]:
    """The readable memory group named by /proc/<pid>/cgroup, through its mount table.

    v1 is preferred when both are listed: on a hybrid machine the v2
    hierarchy usually carries no memory controller.
    """
    v1, v2_path = parse_membership(membership)
    table = parse_mountinfo(mountinfo)
    v1_path = v1.get("memory")
    if v1_path is not None:
        found = locate(v1_path, [m for m in table if m.is_v1_memory], "memory.usage_in_bytes")
        if found is not None:
            return CgroupMemory(found, 1)
    if v2_path is not None:
        found = locate(v2_path, [m for m in table if m.fstype == "cgroup2"], "memory.current")
        if found is not None:
            return CgroupMemory(found, 2)
    return None


@frozen
class Mount:
    """One line of /proc/<pid>/mountinfo, the fields that find a cgroup."""

    root: str
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]

    @property
    def is_v1_memory(self) -> bool:
        return self.fstype == "cgroup" and "memory" in self.super_options


def parse_membership(text: str) -> tuple[dict[str, str], Optional[str]]:
    """({v1 controller: group path}, v2 group path) from /proc/<pid>/cgroup lines."""
    v1: dict[str, str] = {}
    v2: Optional[str] = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
            continue
        for controller in controllers.split(","):
            v1[controller] = path
    return v1, v2


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field) > i + 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fields[dash + 1],
                super_options=tuple(fields[dash + 3].split(",")),
            )
        )
    return mounts


def locate(group: str, mounts: list[Mount], probe: str) -> Optional[str]:
    """The directory of ``group`` under one of ``mounts`` that has a readable ``probe`` file."""
    group = os.path.normpath("/" + group.lstrip("/"))
    candidates: list[str] = []
    # The mount with the longest root that contains the group is the most
    # specific view of it (a container sees its own group mounted as "/").
    for mount in sorted(mounts, key=lambda m: len(m.root), reverse=True):
        root = os.path.normpath(mount.root)
        if group == root or group.startswith(root.rstrip("/") + "/"):
            relative = os.path.relpath(group, root)
            candidates.append(os.path.normpath(os.path.join(mount.mount_point, relative)))
    # A group outside every mount's root (a cgroup namespace shows such paths
    # as "/../.."): the mount itself is the closest group we can read.
    candidates.extend(m.mount_point for m in mounts)
    for directory in candidates:
        if os.access(os.path.join(directory, probe), os.R_OK):
            return directory
    return None


def cpu_quota(pid: Union[int, str] = "self") -> Optional[float]:
    """The CPUs the group of ``pid`` may use (quota / period), None when unlimited or unknown.

    The smallest quota of the group and its ancestors, as for memory: a
    container's CPU limit is often set on a group above the process's own.
    """
    membership = procfs.read_text(pid, "cgroup")
    mounts = procfs.read_text(pid, "mountinfo")
    if membership is None or mounts is None:
        return None
    v1, v2_path = parse_membership(membership)
    table = parse_mountinfo(mounts)
    found: list[float] = []
    if v1.get("cpu") is not None:
        v1_mounts = [m for m in table if m.fstype == "cgroup" and "cpu" in m.super_options]
        directory = locate(v1["cpu"], v1_mounts, "cpu.cfs_quota_us")
        for path in _ancestors(directory, v1_mounts):
            quota = _read_int(os.path.join(path, "cpu.cfs_quota_us"))
            period = _read_int(os.path.join(path, "cpu.cfs_period_us"))
            if quota is not None and period and quota > 0:
                found.append(quota / period)
    if v2_path is not None and not found:
        v2_mounts = [m for m in table if m.fstype == "cgroup2"]
        directory = locate(v2_path, v2_mounts, "cgroup.controllers")
        for path in _ancestors(directory, v2_mounts):
            words = (_read_text(os.path.join(path, "cpu.max")) or "").split()
            if len(words) == 2 and words[0].isdigit() and words[1].isdigit() and int(words[1]):
                found.append(int(words[0]) / int(words[1]))
    return min(found) if found else None


def _ancestors(directory: Optional[str], mounts: list[Mount]) -> list[str]:
    """``directory`` and its parents up to the mount point it is under."""
    if directory is None:
        return []
    tops = {os.path.normpath(m.mount_point) for m in mounts}
    path = os.path.normpath(directory)
    out = [path]
    while path not in tops and os.path.dirname(path) != path:
        path = os.path.dirname(path)
        out.append(path)
    return out
