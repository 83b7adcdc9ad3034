"""The platform's conditions imposed on the child: limits, environment, no network.

Owns: parsing an env file and building the child's environment from it; a
cgroup of the child's own, nested under the supervisor's, with the memory and
CPU limits a platform would give (cgroup v2 where delegated and writable, v1
otherwise), joined by the child before exec and removed afterwards; a network
namespace with only loopback up; and the one-line refusals (exit 2) when the
machine cannot do any of this, naming what to use instead.

Must not know: the event loop, the health stub, the report or the platforms'
presets. The loop creates what it needs before the child starts, puts
``ChildCgroup.join_in_child`` and ``enter_new_network_namespace`` into the
child's ``before_exec``, hands ``ChildCgroup.memory`` to the memory watcher and
calls ``ChildCgroup.remove`` once the child has been reaped.

Nothing here limits the supervisor itself: the stub must keep answering and
the report must still be written when the app hits its limit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import signal
import socket
import struct
import sys
import time

from .config import CFS_PERIOD_US, MIN_CFS_QUOTA_US
from .errors import UsageError
from .values import frozen

# Kept cheap to import (no typing, re, dataclasses): the loop may import this
# module before it spawns the child. ``memory`` (dataclasses) is imported
# only when a cgroup is made.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional

    from .memory import CgroupMemory

# What a minimal image (Debian, Alpine, the python images) puts on PATH: enough
# to find the interpreter and the console scripts a clean environment still needs.
MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The group of the child: one per supervisor, recognisable in a listing.
GROUP_PREFIX = "supervisor-child-"
# How long ``remove`` waits for killed processes to leave before giving up.
REMOVE_DEADLINE_S = 5.0

_MIB = 1024 * 1024
_GIB = 1024 * _MIB


# -- the environment ------------------------------------------------------------


# Escapes understood inside double quotes; any other backslash is kept as written.
_DOUBLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(path: str) -> dict[str, str]:
    """The variables of a dotenv file, in the form people keep.

    Understood: blank lines and ``#`` comments; an ``export`` prefix; spaces
    around ``=``; ``KEY=`` for an empty value; single quotes (taken literally);
    double quotes (``\\n``, ``\\t``, ``\\r``, ``\\"``, ``\\\\``, ``\\$`` escapes); quoted
    values spanning several lines; unquoted values ending at `` #`` (a comment).
    ``$VAR`` is not expanded: the file says exactly what the child gets, as
    Docker's ``--env-file`` does. A later line wins over an earlier one.

    Raises ``UsageError`` naming the file and the line for anything else.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UsageError(f"--env-file: {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--env-file: {path}: is a directory, expected a file") from None
    except OSError as exc:
        raise UsageError(f"--env-file: {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"--env-file: {path} line {line}: not valid UTF-8") from None
    # A byte order mark, as some Windows editors write.
    text = text.removeprefix("\ufeff")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    values: dict[str, str] = {}
    index = 0
    while index < len(lines):
        number = index + 1
        name, value, index = _parse_assignment(path, lines, index)
        if name is None:
            continue
        if "\x00" in value:
            raise UsageError(f"--env-file: {path} line {number}: a value cannot hold a NUL byte")
        values[name] = value
    return values


def _parse_assignment(
    path: str, lines: list[str], index: int
) -> tuple[Optional[str], str, int]:
    """(name, value, index of the next line) for the assignment at ``lines[index]``.

    The name is None for a blank or comment line.
    """
    number = index + 1

    def fail(why: str) -> UsageError:
        return UsageError(f"--env-file: {path} line {number}: {why}")

    line = lines[index].strip()
    if not line or line.startswith("#"):
        return None, "", index + 1
    if line.startswith("export") and line[6:7] in (" ", "\t"):
        line = line[6:].lstrip()
    name, equals, rest = line.partition("=")
    name = name.strip()
    if not equals:
        raise fail("expected NAME=VALUE")
    if not _is_name(name):
        raise fail(f"{name!r} is not a variable name (letters, digits and _, not first a digit)")
    rest = rest.lstrip()
    if not rest or rest[0] not in "'\"":
        return name, _strip_comment(rest).rstrip(), index + 1
    quote = rest[0]
    body = rest[1:]
    pieces: list[str] = []
    while True:
        end = _closing_quote(body, quote)
        if end >= 0:
            pieces.append(body[:end])
            after = body[end + 1 :].strip()
            if after and not after.startswith("#"):
                raise fail(f"unexpected text after the closing quote: {after!r}")
            break
        # The value goes on over the next line.
        pieces.append(body + "\n")
        index += 1
        if index >= len(lines):
            raise fail(f"the quoted value is never closed (missing {quote})")
        body = lines[index]
    raw = "".join(pieces)
    value = raw if quote == "'" else _unescape_double(raw)
    return name, value, index + 1


def _is_name(name: str) -> bool:
    """A portable variable name: ASCII letters, digits and _, not first a digit."""
    return (
        bool(name)
        and name.isascii()
        and not name[0].isdigit()
        and all(c.isalnum() or c == "_" for c in name)
    )


def _strip_comment(value: str) -> str:
    """An unquoted value up to a comment: a # after whitespace, as in a shell."""
    for i in range(1, len(value)):
        if value[i] == "#" and value[i - 1].isspace():
            return value[:i]
    return value


def _closing_quote(text: str, quote: str) -> int:
    """Index of the quote that closes ``text``, or -1; backslash escapes only in double quotes."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and quote == '"':
            i += 2
            continue
        if char == quote:
            return i
        i += 1
    return -1


def _unescape_double(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in _DOUBLE_ESCAPES:
            out.append(_DOUBLE_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def reproduce_environment(
    base: Mapping[str, str], file_values: Mapping[str, str], clean: bool
) -> dict[str, str]:
    """The child's environment: ``base`` updated with the file, or with ``clean`` the file alone.

    A clean environment still needs a PATH to find the command: a minimal one
    is given unless the file sets its own. The supervisor's own defaults
    (PYTHONUNBUFFERED and friends) are added later by ``child.child_environment``.
    """
    if clean:
        env = {"PATH": MINIMAL_PATH}
        env.update(file_values)
        return env
    env = dict(base)
    env.update(file_values)
    return env


# -- refusals ----------------------------------------------------------------------


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


# -- the child's cgroup -------------------------------------------------------------


@frozen
class _Placement:
    """Where one controller's group for the child goes."""

    controller: str  # "memory" or "cpu"
    version: int
    parent: str  # the supervisor's own group directory on that hierarchy


def _own_groups(proc: str = "/proc") -> tuple[dict[str, str], Optional[str]]:
    """({v1 controller: group path}, v2 group path) of this process, from /proc/self/cgroup."""
    try:
        with open(os.path.join(proc, "self", "cgroup")) as f:
            text = f.read()
    except OSError:
        return {}, None
    from .memory import parse_membership

    return parse_membership(text)


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
    from .memory import _locate, _parse_mountinfo

    try:
        with open("/proc/self/mountinfo") as f:
            mounts = _parse_mountinfo(f.read())
    except OSError:
        return None
    v1_paths, v2_path = _own_groups()
    if v2_path is not None:
        v2_mounts = [m for m in mounts if m.fstype == "cgroup2"]
        directory = _locate(v2_path, v2_mounts, "cgroup.controllers")
        if directory is not None and controller in _read_words(
            os.path.join(directory, "cgroup.controllers")
        ):
            return _Placement(controller, 2, directory)
    path = v1_paths.get(controller)
    if path is not None:
        v1_mounts = [
            m for m in mounts if m.fstype == "cgroup" and controller in m.super_options
        ]
        directory = _locate(path, v1_mounts, probe_v1)
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
        from .memory import CgroupMemory

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


# -- no network ------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
# struct ifreq: a 16-byte name, then a union whose first member here is a short.
_IFREQ = struct.Struct("16sh22x")


@functools.lru_cache(maxsize=1)
def _unshare_function() -> Callable[[int], None]:
    """``os.unshare`` (Python 3.12+), or the C library's, loaded once in the parent."""
    native = getattr(os, "unshare", None)
    if native is not None:
        return native  # type: ignore[no-any-return]
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    call = libc.unshare
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def unshare(flags: int) -> None:
        if call(flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return unshare


def enter_new_network_namespace() -> None:
    """Move the calling process into a new network namespace with only ``lo``, up.

    For ``before_exec``: the child then reaches nothing but itself, as on a
    platform without outbound access, while a listening socket it inherited
    from the supervisor's namespace keeps accepting clients from outside.
    ``lo`` is brought up with the SIOCSIFFLAGS ioctl (no ``ip`` binary needed);
    the socket for it must be made after unshare, in the new namespace.
    Raises ``OSError``.
    """
    _unshare_function()(CLONE_NEWNET)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = bytearray(_IFREQ.pack(b"lo", 0))
        fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
        _, flags = _IFREQ.unpack(bytes(request))
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def check_can_unshare_network() -> None:
    """``UsageError`` now, before any child starts, when ``--no-network`` cannot work.

    Tried for real in a short-lived forked process: capabilities alone do not
    tell (seccomp profiles and user namespaces decide too).
    """
    refusal = (
        "--no-network: cannot give the child a network namespace of its own: {why}; "
        "it needs root (CAP_SYS_ADMIN; in Docker, --cap-add SYS_ADMIN), or test with "
        "docker run --network none instead (which also closes the public port)"
    )
    if not sys.platform.startswith("linux"):
        raise UsageError(refusal.format(why="network namespaces exist only on Linux"))
    unshare = _unshare_function()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked probe
        code = 0
        try:
            os.close(read_fd)
            unshare(CLONE_NEWNET)
        except OSError as exc:
            code = exc.errno or errno.EPERM
        except BaseException:
            code = errno.EPERM
        finally:
            os.write(write_fd, bytes([code & 0xFF]))
            os._exit(0)
    os.close(write_fd)
    try:
        answer = os.read(read_fd, 1)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    code = answer[0] if answer else errno.EPERM
    if code:
        raise UsageError(refusal.format(why=os.strerror(code)))


__all__ = [
    "MINIMAL_PATH",
    "ChildCgroup",
    "check_can_unshare_network",
    "docker_equivalent",
    "enter_new_network_namespace",
    "parse_env_file",
    "reproduce_environment",
]

