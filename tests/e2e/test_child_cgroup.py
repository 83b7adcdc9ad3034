"""The child's own cgroup with real limits: a real OOM kill, a real CPU quota, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from supervisor.child_cgroup import ChildCgroup, docker_equivalent
from tests import cgroups
from tests.conftest import child, wait_for
from tests.reproduce_support import processes, run_as_nobody

__all__ = ["processes"]  # a fixture, used by name

PYTHON = sys.executable
MIB = 1024 * 1024


def test_the_refusal_names_the_docker_flags_that_impose_the_same_limits() -> None:
    assert docker_equivalent(512 * MIB, 0.25) == "docker run --memory 512m --cpus 0.25"
    assert docker_equivalent(2 << 30, None) == "docker run --memory 2g"


CGROUP_SKIP = cgroups.unusable_reason()
needs_cgroups = pytest.mark.skipif(CGROUP_SKIP is not None, reason=str(CGROUP_SKIP))


@pytest.fixture
def make_cgroup() -> Iterator[Callable[..., ChildCgroup]]:
    made: list[ChildCgroup] = []

    def make(memory_limit: Optional[int] = None, cpu_limit: Optional[float] = None) -> ChildCgroup:
        group = ChildCgroup.create(memory_limit, cpu_limit)
        made.append(group)
        return group

    yield make
    for group in made:
        group.remove()
        assert not any(os.path.exists(path) for path in group.groups)


def own_cgroup_lines() -> str:
    return Path("/proc/self/cgroup").read_text()


@needs_cgroups
def test_memory_limit_oom_kills_the_child_not_the_supervisor(
    make_cgroup: Callable[..., ChildCgroup], processes: list[subprocess.Popen[bytes]]
) -> None:
    before = own_cgroup_lines()
    group = make_cgroup(memory_limit=256 * MIB)
    assert group.memory is not None
    assert own_cgroup_lines() == before  # the supervisor stays where it was
    baseline = group.memory.read().oom_kills or 0
    process = subprocess.Popen([PYTHON, child("repro_alloc.py"), "300"],
                               preexec_fn=group.join_in_child, stdout=subprocess.PIPE)
    processes.append(process)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert b"allocated" not in out
    after = group.memory.read()
    assert (after.oom_kills or 0) > baseline
    assert after.limit_bytes == 256 * MIB
    assert os.getpid() not in _procs(group)


@needs_cgroups
def test_memory_limit_lets_a_child_below_it_finish(
    make_cgroup: Callable[..., ChildCgroup]
) -> None:
    group = make_cgroup(memory_limit=256 * MIB)
    result = subprocess.run([PYTHON, child("repro_alloc.py"), "64"],
                            preexec_fn=group.join_in_child, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"allocated 64 MiB\n"


@needs_cgroups
def test_cpu_limit_gives_the_child_a_quarter_of_a_core(
    make_cgroup: Callable[..., ChildCgroup]
) -> None:
    group = make_cgroup(cpu_limit=0.25)
    result = subprocess.run([PYTHON, child("repro_busy.py"), "2"],
                            preexec_fn=group.join_in_child, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    cpu, wall = (float(x) for x in result.stdout.split())
    share = cpu / wall
    assert 0.15 <= share <= 0.40, f"{cpu:.2f} CPU-s over {wall:.2f} s = {share:.0%}"


@needs_cgroups
def test_remove_kills_leftovers_and_leaves_no_directory(
    processes: list[subprocess.Popen[bytes]]
) -> None:
    group = ChildCgroup.create(128 * MIB, 0.5)
    assert len(group.groups) >= 1 and all(os.path.isdir(g) for g in group.groups)
    process = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"],
                               preexec_fn=group.join_in_child)
    processes.append(process)
    wait_for(lambda: process.pid in _procs(group), what="the child in its group")
    group.remove()
    assert process.wait(10) == -signal.SIGKILL
    assert not any(os.path.exists(path) for path in group.groups)
    group.remove()  # a second time: nothing to do, and no exception


def _procs(group: ChildCgroup) -> list[int]:
    pids: list[int] = []
    for path in group.groups:
        try:
            pids += [int(x) for x in Path(path, "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            pass
    return pids


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_without_privilege_the_cgroup_is_refused_with_what_to_use_instead() -> None:
    def create() -> None:
        ChildCgroup.create(512 * MIB, 0.25)

    message = run_as_nobody(create)
    assert message.startswith("--memory-limit/--cpu-limit: cannot put the child in a cgroup")
    assert "docker run --memory 512m --cpus 0.25" in message
    assert "\n" not in message
