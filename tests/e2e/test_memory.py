"""The memory watcher over real processes and real memory cgroups.

cgroup v1 tests create groups nested under this process's own (tests/cgroups.py)
and remove them; v2 is tested on v2 file contents where the machine has no
usable v2 memory controller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

import psutil
import pytest

from supervisor.cgroups import CgroupMemory
from supervisor.memory import (
    MemoryFacts,
    MemoryWarning,
    MemoryWatcher,
    Timeline,
)
from tests import cgroups
from tests.cgroups import memory_group, spawn, write_files
from tests.conftest import wait_for

__all__ = ["memory_group", "spawn"]  # fixtures, used by name

MIB = 1024 * 1024
CHILDREN = Path(__file__).resolve().parent.parent / "children"
PYTHON = sys.executable
CGROUP_UNUSABLE = cgroups.unusable_reason()
needs_cgroup = pytest.mark.skipif(CGROUP_UNUSABLE is not None, reason=str(CGROUP_UNUSABLE))


def reap(process: subprocess.Popen[bytes], timeout: float = 30.0) -> tuple[int, int]:
    """Wait for ``process`` with wait4; return (wait status, ru_maxrss in bytes)."""
    result: list[tuple[int, int]] = []

    def done() -> bool:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            result.append((status, usage.ru_maxrss * 1024))  # Linux reports KiB
            process.returncode = os.waitstatus_to_exitcode(status)
        return bool(pid)

    wait_for(done, timeout, what=f"pid {process.pid} to end")
    return result[0]


def killed_by_sigkill(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def script(name: str, *args: str) -> tuple[str, ...]:
    return (PYTHON, str(CHILDREN / name), *args)


def read_line(process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    import select

    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no line from pid {process.pid} within {timeout} s"
    return process.stdout.readline().decode()


def tree_rss(pid: int) -> tuple[int, set[int]]:
    """The tree's RSS as psutil sees it, process by process."""
    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    return sum(p.memory_info().rss for p in tree), {p.pid for p in tree}


# -- OOM attribution ---------------------------------------------------------------


def watch_until_exit(
    watcher: MemoryWatcher, process: subprocess.Popen[bytes], timeout: float = 30.0
) -> tuple[int, int, list[MemoryWarning]]:
    """Sample every 10 ms until the child ends; (status, ru_maxrss bytes, warnings)."""
    warnings: list[MemoryWarning] = []
    result: list[tuple[int, int]] = []

    def ended() -> bool:
        warning = watcher.sample()
        if warning is not None:
            warnings.append(warning)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            result.append((status, usage.ru_maxrss * 1024))
            process.returncode = os.waitstatus_to_exitcode(status)
        return bool(pid)

    wait_for(ended, timeout, what=f"pid {process.pid} to end")
    return result[0][0], result[0][1], warnings


@needs_cgroup
def test_a_real_oom_kill_in_a_96_mb_group_is_attributed(
    spawn: Callable[..., subprocess.Popen[bytes]], memory_group: Callable[..., str]
) -> None:
    limit = 96 * MIB
    group = memory_group(limit)
    cgroup = CgroupMemory.at(group, cgroups.own_memory_group().version)
    watcher = MemoryWatcher(0.5, 0.9, cgroup=cgroup)
    process = spawn(*script("mem_grow.py", "--step-mb", "8"), group=group)
    watcher.start(process.pid, time.monotonic())
    status, max_rss, _ = watch_until_exit(watcher, process)
    assert killed_by_sigkill(status)
    assert cgroup.read().oom_kills == 1
    facts = watcher.finish(max_rss, killed_by_sigkill(status))
    assert facts.oom_evidence == "cgroup oom_kill counter rose by 1"
    assert facts.oom_kills == 1
    assert facts.cgroup_limit_bytes == limit
    assert facts.cgroup_peak_bytes is not None and facts.cgroup_peak_bytes >= 0.95 * limit
    # RSS also counts shared library pages charged to other groups, and wait4's
    # peak counts pages the kernel was still reclaiming when the killer came
    # (151 MiB was seen once in a 96 MiB group): it can pass the limit.
    assert facts.peak_rss_bytes is not None
    assert 0.8 * limit <= facts.peak_rss_bytes <= 2 * limit
    assert facts.cgroup_version == cgroup.version
    print(facts.sparkline())


@needs_cgroup
def test_a_plain_kill_9_without_pressure_has_no_oom_evidence(
    spawn: Callable[..., subprocess.Popen[bytes]], memory_group: Callable[..., str]
) -> None:
    group = memory_group(256 * MIB)
    cgroup = CgroupMemory.at(group, cgroups.own_memory_group().version)
    watcher = MemoryWatcher(0.5, 0.9, cgroup=cgroup)
    process = spawn(*script("mem_grow.py", "--step-mb", "8", "--max-mb", "24"), group=group)
    watcher.start(process.pid, time.monotonic())
    wait_for(lambda: read_line(process) == "holding\n", what="the child to hold its memory")
    assert watcher.sample() is None
    process.kill()
    status, max_rss = reap(process)
    assert killed_by_sigkill(status)
    facts = watcher.finish(max_rss, True)
    assert facts.oom_evidence is None
    assert facts.oom_kills == 0
    assert facts.peak_rss_bytes is not None and facts.peak_rss_bytes >= 24 * MIB


def test_usage_at_the_limit_is_the_evidence_when_the_kernel_keeps_no_counter(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    # v1 files as a kernel before 4.13 writes them: memory.oom_control has no
    # oom_kill line. The group was far from its limit before the run.
    limit = 96 * MIB
    group = tmp_path / "job"
    before = {
        "memory.usage_in_bytes": f"{8 * MIB}\n",
        "memory.max_usage_in_bytes": f"{8 * MIB}\n",
        "memory.limit_in_bytes": f"{limit}\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",
        "memory.stat": f"cache 0\nrss {8 * MIB}\nhierarchical_memory_limit {limit}\n",
    }
    write_files(group, before)
    process = spawn("sleep", "30")
    watcher = MemoryWatcher(0.5, 0.9, cgroup=CgroupMemory.at(str(group), 1))
    watcher.start(process.pid, time.monotonic())
    watcher.sample()
    write_files(group, {"memory.usage_in_bytes": "0\n", "memory.max_usage_in_bytes": f"{limit}\n"})
    process.kill()
    status, max_rss = reap(process)
    facts = watcher.finish(max_rss, killed_by_sigkill(status))
    assert facts.oom_kills is None
    assert facts.oom_evidence == f"peak {limit} reached the limit {limit}"
    # A peak that was already at the limit before the run says nothing.
    write_files(group, before | {"memory.max_usage_in_bytes": f"{limit}\n"})
    again = MemoryWatcher(0.5, 0.9, cgroup=CgroupMemory.at(str(group), 1))
    again.start(os.getpid(), time.monotonic())
    assert again.finish(None, True).oom_evidence is None
    # Not SIGKILL: no evidence, whatever the files say.
    assert watcher.finish(max_rss, False).oom_evidence is None


# -- peaks and the tree ---------------------------------------------------------------


@needs_cgroup
def test_a_300_mb_spike_freed_at_once_is_in_the_peak(
    spawn: Callable[..., subprocess.Popen[bytes]], memory_group: Callable[..., str]
) -> None:
    group = memory_group(1024 * MIB)
    cgroup = CgroupMemory.at(group, cgroups.own_memory_group().version)
    watcher = MemoryWatcher(0.5, 0.9, cgroup=cgroup)
    process = spawn(*script("mem_spike.py", "--mb", "300"), group=group)
    started = time.monotonic()
    watcher.start(process.pid, started)
    watcher.sample()
    status, max_rss = reap(process)
    assert os.waitstatus_to_exitcode(status) == 0
    facts = watcher.finish(max_rss, False)
    assert max_rss >= 300 * MIB
    assert facts.peak_rss_bytes is not None and facts.peak_rss_bytes >= 300 * MIB
    assert facts.cgroup_peak_bytes is not None and facts.cgroup_peak_bytes >= 300 * MIB
    assert facts.oom_evidence is None and facts.oom_kills == 0


def test_a_four_process_tree_is_sampled_as_the_sum(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    process = spawn(*script("mem_tree.py", "--children", "3", "--mb", "20"))
    pids = {int(p) for p in read_line(process).split()[1:]}
    assert len(pids) == 4
    watcher = MemoryWatcher(0.5, 0.9)
    watcher.start(process.pid, time.monotonic())
    watcher.sample()
    sample = watcher.last_sample
    expected, seen = tree_rss(process.pid)
    assert sample is not None and sample.tree_rss_bytes is not None
    assert set(watcher.tree_pids) == pids == seen
    assert sample.processes == 4
    assert sample.tree_rss_bytes >= 3 * 20 * MIB
    assert abs(sample.tree_rss_bytes - expected) <= 0.05 * expected


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_uvicorn_with_three_workers_is_sampled_as_one_tree(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    process = spawn(
        PYTHON, "-m", "uvicorn", "mem_app:app", "--app-dir", str(CHILDREN),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "3", "--log-level", "warning",
        stdout=subprocess.DEVNULL,
    )  # fmt: skip

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_for(answers, what="uvicorn to answer")
    watcher = MemoryWatcher(0.5, 0.9)
    watcher.start(process.pid, time.monotonic())
    workers = psutil.Process(process.pid).children()
    wait_for(lambda: len([w for w in workers if w.is_running()]) >= 3, what="3 workers")
    # Workers settle after their first request; compare once two samples agree.
    values: list[int] = []

    def steady() -> bool:
        watcher.sample()
        sample = watcher.last_sample
        assert sample is not None and sample.tree_rss_bytes is not None
        values.append(sample.tree_rss_bytes)
        return len(values) > 1 and abs(values[-1] - values[-2]) <= 0.01 * values[-1]

    wait_for(steady, what="the tree's RSS to settle")
    expected, seen = tree_rss(process.pid)
    assert {process.pid, *(w.pid for w in workers)} <= set(watcher.tree_pids) == seen
    assert abs(values[-1] - expected) <= 0.05 * expected


# -- the early warning ---------------------------------------------------------------


@needs_cgroup
def test_the_warning_fires_once_at_the_threshold(
    spawn: Callable[..., subprocess.Popen[bytes]], memory_group: Callable[..., str]
) -> None:
    limit = 128 * MIB
    group = memory_group(limit)
    cgroup = CgroupMemory.at(group, cgroups.own_memory_group().version)
    watcher = MemoryWatcher(0.5, 0.9, cgroup=cgroup)
    threshold = 0.9 * limit
    # 2 MiB every 50 ms up to 112 MiB: past 90 % of 128 MiB with the
    # interpreter's own pages, short of the limit.
    process = spawn(
        *script("mem_grow.py", "--step-mb", "2", "--interval", "0.05", "--max-mb", "112"),
        group=group,
    )
    watcher.start(process.pid, time.monotonic())
    usages: list[int] = []
    warnings: list[tuple[int, MemoryWarning]] = []
    held_since: list[float] = []

    def held_a_while() -> bool:
        warning = watcher.sample()
        sample = watcher.last_sample
        assert sample is not None and sample.cgroup is not None
        usage = sample.cgroup.working_set_bytes
        assert usage is not None
        if warning is not None:
            warnings.append((len(usages), warning))
        usages.append(usage)
        if usage >= threshold and not held_since:
            held_since.append(time.monotonic())
        return bool(held_since) and time.monotonic() - held_since[0] > 1.0

    wait_for(held_a_while, what="usage to pass 90 % of the limit")
    assert process.poll() is None, "the child was meant to stay below the limit"
    assert len(warnings) == 1
    index, warning = warnings[0]
    assert usages[index - 1] < threshold <= warning.usage_bytes == usages[index]
    assert warning.usage_bytes < threshold + 8 * MIB
    assert warning.limit_bytes == limit
    assert warning.fraction == pytest.approx(warning.usage_bytes / limit)
    assert warning.growth_bytes_per_s is not None and warning.growth_bytes_per_s > 5 * MIB
    assert "of 128 MiB" in warning.message()
    print(warning.message())


# -- repeated sampling (its cost is measured in bench/memory_sampling.py) ------------


def test_a_five_process_tree_sampled_a_hundred_times_stays_on(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    process = spawn(*script("mem_tree.py", "--children", "4", "--mb", "1"))
    assert len(read_line(process).split()) == 6
    watcher = MemoryWatcher(0.5, 0.9)
    watcher.start(process.pid, time.monotonic())
    for _ in range(100):
        watcher.sample()
        assert watcher.last_sample is not None and watcher.last_sample.processes == 5
    assert watcher.disabled_reason is None


def files_held() -> dict[int, str]:
    """This process's open fds: {fd: what it points to}."""
    held = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            held[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return held


def statm_files_held(before: dict[int, str]) -> set[str]:
    """The /proc/<pid>/statm files this process holds open that it did not ``before``."""
    return {path for fd, path in files_held().items()
            if path.startswith("/proc/") and path.endswith("/statm") and before.get(fd) != path}


def test_a_process_replaced_in_the_tree_is_followed_and_no_file_outlives_the_watch(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    # A shell with one sleep; a line on stdin replaces it with another.
    process = spawn("sh", "-c", "sleep 300 & echo $!; read x; kill $!; wait $!; "
                                "sleep 300 & echo $!; wait")
    first = int(read_line(process))
    before = files_held()
    watcher = MemoryWatcher(0.5, 0.9)
    watcher.start(process.pid, time.monotonic())
    wait_for(lambda: watcher.sample() is None and set(watcher.tree_pids) == {process.pid, first},
             what="the shell and its sleep in the tree")
    # The files of the tree are kept open between samples, and only those.
    assert statm_files_held(before) == {f"/proc/{pid}/statm" for pid in (process.pid, first)}
    assert process.stdin is not None
    process.stdin.write(b"next\n")
    process.stdin.flush()
    second = int(read_line(process))

    def replaced() -> bool:
        watcher.sample()
        sample = watcher.last_sample
        if (sample is None or sample.processes != 2 or sample.tree_rss_bytes is None
                or set(watcher.tree_pids) != {process.pid, second}):
            return False
        # The same sum as psutil's, once the new sleep has exec'd and settled.
        expected, _ = tree_rss(process.pid)
        return abs(sample.tree_rss_bytes - expected) <= 0.05 * expected

    wait_for(replaced, what="the new sleep to be sampled in place of the old one")
    assert statm_files_held(before) == {f"/proc/{pid}/statm" for pid in (process.pid, second)}
    watcher.finish(None, False)
    assert files_held() == before  # the files kept open for sampling, closed


def test_sampling_on_linux_needs_no_psutil() -> None:
    # /proc gives the tree and its RSS directly; psutil would cost ~35 ms and MiBs.
    code = (
        "import os, sys\n"
        "from supervisor.memory import MemoryWatcher\n"
        "watcher = MemoryWatcher(0.5, 0.9)\n"
        "watcher.start(os.getpid(), 0.0)\n"
        "watcher.sample()\n"
        "assert watcher.last_sample.tree_rss_bytes > 0\n"
        "assert 'psutil' not in sys.modules, 'psutil was imported'\n"
    )
    subprocess.run([PYTHON, "-c", code], check=True, cwd=str(CHILDREN.parent.parent))


# -- never raising ------------------------------------------------------------------


def test_sampling_a_child_that_has_gone_returns_nothing_and_keeps_going(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    process = spawn("true")
    watcher = MemoryWatcher(0.5, 0.9)
    watcher.start(process.pid, time.monotonic())
    reap(process)
    assert watcher.sample() is None
    assert watcher.disabled_reason is None
    assert watcher.last_sample is not None and watcher.last_sample.tree_rss_bytes is None
    facts = watcher.finish(None, False)
    assert facts.samples == () and facts.peak_rss_bytes is None


def test_an_error_while_sampling_disables_the_watcher_with_a_reason() -> None:
    calls: list[float] = []

    def clock() -> float:
        calls.append(0.0)
        if len(calls) > 1:
            raise OSError("clock gone")
        return 0.0

    watcher = MemoryWatcher(0.5, 0.9, clock=clock)
    watcher.start(os.getpid(), clock())
    assert watcher.sample() is None
    assert watcher.disabled_reason is not None and "clock gone" in watcher.disabled_reason
    assert watcher.sample() is None
    assert len(calls) == 2  # disabled: no further attempt


def test_sample_before_start_is_nothing() -> None:
    assert MemoryWatcher(0.5, 0.9).sample() is None


# -- the timeline and the human line ------------------------------------------------


def test_the_timeline_stays_bounded_and_keeps_the_peak() -> None:
    timeline = Timeline()
    week = 7 * 24 * 3600 * 2  # a week at 2 samples a second: about 1 s here
    spike = 3 * 24 * 3600 * 2
    for i in range(week):
        timeline.add(i / 2, 5_000_000 if i == spike else 1000 + i % 7)
    points = timeline.points()
    assert len(points) <= 240
    # Thinning merges neighbours into the earlier time and the larger value.
    assert points[0][0] == 0.0
    assert max(v for _, v in points) == 5_000_000
    times = [t for t, _ in points]
    assert times == sorted(times)
    # The most recent samples are at full rate.
    assert times[-1] == (week - 1) / 2
    assert times[-1] - times[-100] == pytest.approx(99 / 2)


def test_sparkline_names_peak_and_limit_in_mib() -> None:
    samples = tuple((i * 0.5, (i + 1) * 64 * MIB) for i in range(8))
    facts = MemoryFacts(511 * MIB, None, 512 * MIB, 1, samples, "x", 1)
    line = facts.sparkline()
    assert line == "▁▂▃▄▅▆▇█ peak 511 MiB of 512 MiB"
    assert "\n" not in line
    # RSS counts shared pages charged elsewhere: the cgroup's peak is the one
    # the limit is about, so it is named too.
    with_cgroup = MemoryFacts(530 * MIB, 512 * MIB, 512 * MIB, 1, samples, "x", 1)
    assert with_cgroup.sparkline().endswith(" peak 530 MiB, cgroup peak 512 MiB of 512 MiB")
    # A spike that sampling missed leaves the bars below the peak.
    missed = MemoryFacts(1024 * MIB, None, None, None, samples, None, None)
    assert missed.sparkline() == "▁▁▂▂▃▃▄▄ peak 1024 MiB, no limit"
    # Scaled to the limit: 43 MiB of 512 MiB is a low bar, not a full one.
    small = MemoryFacts(43 * MIB, None, 512 * MIB, 0, ((0.0, 40 * MIB), (1.0, 43 * MIB)), None, 1)
    assert small.sparkline() == "▁▁ peak 43 MiB of 512 MiB"
    no_limit = MemoryFacts(3 * MIB, None, None, None, (), None, None)
    assert no_limit.sparkline() == "peak 3.0 MiB, no limit"
    wide = MemoryFacts(10 * MIB, None, None, None, tuple((i, i) for i in range(500)), None, 2)
    assert len(wide.sparkline(width=40).split(" ")[0]) == 40


def test_report_has_the_spec_fields() -> None:
    facts = MemoryFacts(5, 6, 7, 0, ((0.0, 5), (0.5, 4)), None, 1)
    assert facts.as_report() == {
        "peak_rss_bytes": 5,
        "cgroup_peak_bytes": 6,
        "cgroup_limit_bytes": 7,
        "oom_kills": 0,
        "samples": [[0.0, 5], [0.5, 4]],
        "oom_evidence": None,
        "cgroup_version": 1,
    }


def test_warning_message_says_usage_limit_and_rate() -> None:
    warning = MemoryWarning(460 * MIB, 512 * MIB, 460 / 512, 2 * MIB)
    assert warning.message() == (
        "memory at 90% of the limit: 460 MiB of 512 MiB, growing +2.0 MiB/s"
        " (limit in about 26 s at this rate)"
    )
    assert (
        MemoryWarning(500 * MIB, 512 * MIB, 0.98, 4 * MIB)
        .message()
        .endswith(" (limit in about 3.0 s at this rate)")
    )
    assert "growing" not in MemoryWarning(460 * MIB, 512 * MIB, 0.9, None).message()
