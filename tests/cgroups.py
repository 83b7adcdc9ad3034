"""Memory cgroups for tests: nested under the current one, made and removed.

Owns: finding the writable memory controller this process is in (from
/proc/self/cgroup and the mount table, independently of the module under
test), creating a child group with a limit, putting a process into it before
exec, and removing it afterwards, killing whatever is left inside; and the
``spawn`` and ``memory_group`` fixtures built on that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest


@dataclass(frozen=True)
class Hierarchy:
    version: int
    own_group: str  # the directory of the group this process is in


def _mounts() -> list[tuple[str, str, str, list[str]]]:
    """(root, mount point, fstype, super options) of each cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            fstype = fields[dash + 1]
            if fstype in ("cgroup", "cgroup2"):
                out.append((fields[3], fields[4], fstype, fields[dash + 3].split(",")))
    return out


def _own_memory_group() -> Optional[Hierarchy]:
    v1_path = v2_path = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy == "0" and not controllers:
                v2_path = path
            elif "memory" in controllers.split(","):
                v1_path = path
    for root, point, fstype, options in _mounts():
        if fstype == "cgroup" and "memory" in options and v1_path is not None:
            directory = os.path.join(point, os.path.relpath(v1_path, root))
            if os.path.exists(os.path.join(directory, "memory.limit_in_bytes")):
                return Hierarchy(1, os.path.normpath(directory))
        if fstype == "cgroup2" and v2_path is not None:
            directory = os.path.join(point, os.path.relpath(v2_path, root))
            with (
                contextlib.suppress(OSError),
                open(os.path.join(directory, "cgroup.subtree_control")) as f,
            ):
                if "memory" in f.read().split():
                    return Hierarchy(2, os.path.normpath(directory))
    return None


def unusable_reason() -> Optional[str]:
    """Why this machine cannot host a test memory cgroup, or None when it can."""
    if os.geteuid() != 0:
        return "creating memory cgroups needs root"
    found = _own_memory_group()
    if found is None:
        return "no memory cgroup controller for this process"
    if not os.access(found.own_group, os.W_OK):
        return f"memory cgroup {found.own_group} is not writable"
    return None


def own_memory_group() -> Hierarchy:
    found = _own_memory_group()
    assert found is not None, unusable_reason()
    return found


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _procs(group: str) -> list[int]:
    try:
        with open(os.path.join(group, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def join(group: str) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the new process into ``group`` before exec.

    cgroup v1 leaves memory already charged where it was, so a process must
    be in the group before it allocates anything that should count.
    """

    def preexec() -> None:
        _write(os.path.join(group, "cgroup.procs"), "0")

    return preexec


@contextlib.contextmanager
def memory_cgroup(
    limit_bytes: Optional[int], parent: Optional[str] = None, deadline_s: float = 10.0
) -> Iterator[str]:
    """Create a memory cgroup nested under ``parent`` (default: this process's own group).

    Yields the new group's directory. On exit, every process left in it is
    SIGKILLed and the directory removed, polling until the kernel lets it go
    or ``deadline_s`` passes.
    """
    hierarchy = own_memory_group()
    base = parent if parent is not None else hierarchy.own_group
    group = os.path.join(base, f"supervisor-test-{uuid.uuid4().hex[:12]}")
    os.mkdir(group)
    try:
        if limit_bytes is not None:
            if hierarchy.version == 1:
                _write(os.path.join(group, "memory.limit_in_bytes"), str(limit_bytes))
                # No swap to escape into, where the machine has swap accounting.
                with contextlib.suppress(OSError):
                    _write(os.path.join(group, "memory.memsw.limit_in_bytes"), str(limit_bytes))
            else:
                _write(os.path.join(group, "memory.max"), str(limit_bytes))
                with contextlib.suppress(OSError):
                    _write(os.path.join(group, "memory.swap.max"), "0")
        yield group
    finally:
        remove(group, deadline_s)


def remove(group: str, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        for pid in _procs(group):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError:
            # EBUSY while killed processes are still leaving.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def write_files(directory: Path, files: dict[str, str]) -> None:
    """Files as a cgroup directory holds them, for readers tested off a real hierarchy."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


# -- fixtures (import them by name into a test module) --------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a child script in its own session; kill its whole group at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *argv: str, group: Optional[str] = None, stdout: int = subprocess.PIPE
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=stdout,
            start_new_session=True,
            preexec_fn=join(group) if group is not None else None,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def memory_group() -> Iterator[Callable[..., str]]:
    """Make memory cgroups nested under this process's own; remove them at teardown."""
    with contextlib.ExitStack() as stack:

        def make(limit_bytes: Optional[int], parent: Optional[str] = None) -> str:
            return stack.enter_context(memory_cgroup(limit_bytes, parent=parent))

        yield make
