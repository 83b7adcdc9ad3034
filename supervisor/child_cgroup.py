"""A cgroup of the child's own, with the memory and CPU limits a platform would give.

Owns: making the child's group(s), nested under the supervisor's (cgroup v2
where delegated and writable, v1 otherwise), with the limits written and no
swap; joining them from the forked child before exec; removing them once the
child has been reaped; and the one-line refusal (exit 2) when the machine
cannot do it, naming the ``docker run`` flags that impose the same limits.
Must not know: the event loop, the memory watcher or the report. The loop
makes the group before the spawn, puts ``ChildCgroup.join_in_child`` into the
child's ``before_exec``, hands ``ChildCgroup.memory`` to the memory watcher and
calls ``ChildCgroup.remove`` at the end.

Nothing here limits the supervisor itself: the stub must keep answering and
the report must still be written when the app hits its limit.
Cheap to import (no typing, re or dataclasses): it runs before the spawn.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time

from . import procfs
from .cgroups import CgroupMemory, locate, parse_membership, parse_mountinfo
from .config import CFS_PERIOD_US, MIN_CFS_QUOTA_US
from .errors import UsageError
from .values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

# The group of the child: one per supervisor, recognisable in a listing.
GROUP_PREFIX = "supervisor-child-"
# How long ``remove`` waits for killed processes to leave before giving up.
REMOVE_DEADLINE_S = 5.0

_MIB = 1024 * 1024
_GIB = 1024 * _MIB


def docker_equivalent(memory_limit: Optional[int], cpu_limit: Optional[float]) -> str:
    """The ``docker run`` flags that impose the same limits, for the refusal message."""
    flags: list[str] = []
    if memory_limit is not None:
        if memory_limit % _GIB == 0:
            flags.append(f"--memory {memory_limit // _GIB}g")
        elif memory_limit % _MIB == 0:
            flags.append(f"--memory {memory_limit // _MIB}m")
        else:
            flags.append(f"--memory {memory_limit}")
    if cpu_limit is not None:
        flags.append(f"--cpus {cpu_limit:g}")
    return "docker run " + " ".join(flags)


@frozen
class _Placement:
    """Where one controller's group for the child goes."""

    controller: str  # "memory" or "cpu"
    version: int
    parent: str  # the supervisor's own group directory on that hierarchy


def _own_groups() -> tuple[dict[str, str], Optional[str]]:
    """({v1 controller: group path}, v2 group path) of this process."""
    text = procfs.read_text("self", "cgroup")
    return parse_membership(text) if text is not None else ({}, None)


def _read_words(path: str) -> set[str]:
    try:
        with open(path) as f:
            return set(f.read().split())
    except OSError:
        return set()


def _find_placement(controller: str, probe_v1: str) -> Optional[_Placement]:
    """The hierarchy that carries ``controller`` for this process, v2 first when it has it.

    On a hybrid machine each controller lives on exactly one hierarchy: v2
    only offers it when no v1 mount holds it.
    """
    text = procfs.read_text("self", "mountinfo")
    if text is None:
        return None
    mounts = parse_mountinfo(text)
    v1_paths, v2_path = _own_groups()
    if v2_path is not None:
        v2_mounts = [m for m in mounts if m.fstype == "cgroup2"]
        directory = locate(v2_path, v2_mounts, "cgroup.controllers")
        if directory is not None and controller in _read_words(
            os.path.join(directory, "cgroup.controllers")
        ):
            return _Placement(controller, 2, directory)
    path = v1_paths.get(controller)
    if path is not None:
        v1_mounts = [
            m for m in mounts if m.fstype == "cgroup" and controller in m.super_options
        ]
        directory = locate(path, v1_mounts, probe_v1)
        if directory is not None:
            return _Placement(controller, 1, directory)
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _procs(group: str) -> list[int]:
    try:
        with open(os.path.join(group, "cgroup.procs")) as f:
            return [int(word) for word in f.read().split()]
    except (OSError, ValueError):
        return []


class ChildCgroup:
    """The child's own cgroup(s), with the limits set, nested under the supervisor's.

    One directory per hierarchy that carries a wanted controller: on cgroup v2
    a single group holds memory and CPU; on v1 the memory and cpu controllers
    each have their own tree. The supervisor never joins them.
    """

    def __init__(
        self,
        groups: tuple[str, ...],
        memory: Optional[CgroupMemory],
        memory_limit: Optional[int],
        cpu_limit: Optional[float],
    ) -> None:
        self.groups = groups
        self.memory = memory
        self.memory_limit = memory_limit
        self.cpu_limit = cpu_limit
        # Encoded now: the child, between fork and exec, must not allocate much.
        self._procs_files = tuple(
            os.fsencode(os.path.join(group, "cgroup.procs")) for group in groups
        )

    @classmethod
    def create(cls, memory_limit: Optional[int], cpu_limit: Optional[float]) -> ChildCgroup:
        """Make the child's group(s) and set the limits; ``UsageError`` when impossible.

        The message is one line: what could not be done, why, and the
        ``docker run`` flags that impose the same limits instead.
        """
        options = "/".join(
            name
            for name, value in (("--memory-limit", memory_limit), ("--cpu-limit", cpu_limit))
            if value is not None
        )
        instead = docker_equivalent(memory_limit, cpu_limit)

        def refuse(why: str) -> UsageError:
            return UsageError(
                f"{options}: cannot put the child in a cgroup of its own: {why}; "
                f"impose the limits on the container instead: {instead}"
            )

        if memory_limit is None and cpu_limit is None:
            return cls((), None, None, None)
        if not sys.platform.startswith("linux"):
            raise refuse("cgroups exist only on Linux")
        wanted: list[_Placement] = []
        for controller, probe, value in (
            ("memory", "memory.limit_in_bytes", memory_limit),
            ("cpu", "cpu.cfs_quota_us", cpu_limit),
        ):
            if value is None:
                continue
            placement = _find_placement(controller, probe)
            if placement is None:
                raise refuse(f"no {controller} controller is available to this process")
            wanted.append(placement)
        made: list[str] = []
        try:
            groups = cls._make_groups(wanted, memory_limit, cpu_limit, made)
        except UsageError:
            _remove_groups(made, REMOVE_DEADLINE_S)
            raise
        except OSError as exc:
            _remove_groups(made, REMOVE_DEADLINE_S)
            raise refuse(_explain(exc)) from None
        memory: Optional[CgroupMemory] = None
        for placement, group in zip(wanted, groups):
            if placement.controller == "memory":
                memory = CgroupMemory(group, placement.version)
        return cls(tuple(dict.fromkeys(groups)), memory, memory_limit, cpu_limit)

    @staticmethod
    def _make_groups(
        wanted: list[_Placement],
        memory_limit: Optional[int],
        cpu_limit: Optional[float],
        made: list[str],
    ) -> list[str]:
        """One group directory per placement (v2 placements share one); limits written."""
        name = f"{GROUP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        by_parent: dict[tuple[int, str], str] = {}
        groups: list[str] = []
        for placement in wanted:
            key = (placement.version, placement.parent)
            group = by_parent.get(key)
            if group is None:
                if placement.version == 2:
                    controllers = [p.controller for p in wanted if p.version == 2]
                    _delegate_v2(placement.parent, controllers)
                group = os.path.join(placement.parent, name)
                os.mkdir(group)
                made.append(group)
                by_parent[key] = group
            groups.append(group)
            if placement.controller == "memory" and memory_limit is not None:
                _set_memory_limit(group, placement.version, memory_limit)
            elif placement.controller == "cpu" and cpu_limit is not None:
                _set_cpu_limit(group, placement.version, cpu_limit)
        return groups

    def join_in_child(self) -> None:
        """Move the calling process into every group; for ``before_exec``/``preexec_fn``.

        Runs in the forked child before exec, so that every byte the app ever
        allocates is charged to its own group (v1 does not move charges made
        elsewhere). Writing "0" to cgroup.procs means "the writer itself" in v1
        and v2: no pid to format, nothing to allocate. Raises ``OSError``.
        """
        for path in self._procs_files:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def remove(self, deadline_s: float = REMOVE_DEADLINE_S) -> None:
        """SIGKILL whatever is left in the groups and remove them; never raises."""
        try:
            _remove_groups(list(self.groups), deadline_s)
        except Exception:  # cleanup must never take the report down with it
            pass


def _delegate_v2(parent: str, controllers: list[str]) -> None:
    """Make ``controllers`` available to children of ``parent`` (its subtree_control).

    cgroup v2 refuses controllers in the subtree of a group that holds
    processes itself. A container's entrypoint usually sits in such a group
    alone: the supervisor then moves itself into a leaf of its own, with no
    limit, and tries again, as container runtimes do for nested containers.
    """
    control = os.path.join(parent, "cgroup.subtree_control")
    missing = [c for c in controllers if c not in _read_words(control)]
    if not missing:
        return
    request = " ".join(f"+{c}" for c in missing)
    try:
        _write(control, request)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
    leaf = os.path.join(parent, "supervisor")
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf)
    _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    try:
        _write(control, request)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            others = [pid for pid in _procs(parent) if pid != os.getpid()]
            raise UsageError(
                f"--memory-limit/--cpu-limit: cannot enable {', '.join(missing)} under "
                f"{parent}: other processes share the supervisor's cgroup ({len(others)} of "
                "them); run the supervisor as the container's entrypoint, or impose the "
                "limits with docker run --memory/--cpus instead"
            ) from None
        raise


def _set_memory_limit(group: str, version: int, limit: int) -> None:
    if version == 2:
        _write(os.path.join(group, "memory.max"), str(limit))
        # Platforms give containers no swap: without this a laptop with swap
        # would page instead of killing, and the failure would not reproduce.
        swap = os.path.join(group, "memory.swap.max")
        if os.path.exists(swap):
            _write(swap, "0")
        return
    _write(os.path.join(group, "memory.limit_in_bytes"), str(limit))
    # Present only with swap accounting on. Set to the same value (it cannot be
    # lower), so that memory plus swap is capped where memory is: no swap.
    memsw = os.path.join(group, "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):
        with contextlib.suppress(OSError):
            _write(memsw, str(limit))


def _set_cpu_limit(group: str, version: int, cpus: float) -> None:
    quota = max(MIN_CFS_QUOTA_US, round(cpus * CFS_PERIOD_US))
    if version == 2:
        _write(os.path.join(group, "cpu.max"), f"{quota} {CFS_PERIOD_US}")
        return
    _write(os.path.join(group, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
    try:
        _write(os.path.join(group, "cpu.cfs_quota_us"), str(quota))
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            # v1 refuses a child quota above what an ancestor's quota allows.
            raise UsageError(
                f"--cpu-limit: {cpus:g} CPUs is more than the supervisor's own cgroup allows"
            ) from None
        raise


def _explain(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        who = "not root" if os.geteuid() != 0 else "no delegation to this process"
        return f"permission denied{where}: {who}"
    if exc.errno == errno.EROFS:
        return f"the cgroup filesystem is read-only{where}"
    return f"{exc.strerror or exc}{where}"


def _remove_groups(groups: list[str], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    me = os.getpid()
    for group in groups:
        while True:
            for pid in _procs(group):
                if pid != me:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            try:
                os.rmdir(group)
                break
            except FileNotFoundError:
                break
            except OSError:
                # EBUSY while killed processes are still on their way out.
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
