"""Memory of the child: its process tree, its cgroup, its peak and its end.

Owns: sampling the RSS of the child's whole process tree (summed by
``process_tree``) and its memory cgroup (read by ``cgroups``); the
bounded timeline of samples and its one-line picture; the one early warning
when usage nears the limit; and the evidence that the kernel's OOM killer
ended the child.
Must not know: the event loop, signals, the report file or Sentry. The loop
calls ``start``, ``sample`` on a timer and ``finish`` once; what it does with
the values it gets back is its business. Nothing here raises at the loop: a
failure turns sampling off and says why in ``disabled_reason``.
"""

from __future__ import annotations

import time
from collections import deque

from .cgroups import CgroupMemory, CgroupSnapshot, MemoryReader
from .process_tree import REDISCOVER_EVERY_S, ProcessTree
from .values import frozen

# Held for the app's whole life: neither typing nor dataclasses (with inspect
# and ast, about 1 MiB of the supervisor's memory) is imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

MIB = 1024 * 1024
# The growth rate in a warning is measured over this window: long enough to
# smooth one allocation, short enough to describe what is happening now.
GROWTH_WINDOW_S = 5.0
# Full-rate samples kept before older ones are thinned.
DEFAULT_MAX_SAMPLES = 240
BLOCKS = "▁▂▃▄▅▆▇█"


def _max_known(*values: Optional[int]) -> Optional[int]:
    known = [v for v in values if v is not None]
    return max(known) if known else None


# -- values -------------------------------------------------------------------


def _mib(value: int) -> str:
    mib = value / MIB
    return f"{mib:.1f}" if mib < 10 else f"{mib:.0f}"


@frozen
class MemorySample:
    """One sample: the tree's RSS and the cgroup's reading at ``at_s`` seconds since start."""

    at_s: float
    tree_rss_bytes: Optional[int]
    processes: int
    cgroup: Optional[CgroupSnapshot]


@frozen
class MemoryWarning:
    usage_bytes: int
    limit_bytes: int
    fraction: float
    growth_bytes_per_s: Optional[float]

    def message(self) -> str:
        text = (
            f"memory at {self.fraction:.0%} of the limit: "
            f"{_mib(self.usage_bytes)} MiB of {_mib(self.limit_bytes)} MiB"
        )
        if self.growth_bytes_per_s is not None:
            text += f", growing {self.growth_bytes_per_s / MIB:+.1f} MiB/s"
            if self.growth_bytes_per_s > 0:
                left = max(0.0, (self.limit_bytes - self.usage_bytes) / self.growth_bytes_per_s)
                digits = 1 if left < 10 else 0
                text += f" (limit in about {left:.{digits}f} s at this rate)"
        return text


@frozen
class MemoryFacts:
    """What the run's memory looked like, decided once after the child was reaped."""

    peak_rss_bytes: Optional[int]
    cgroup_peak_bytes: Optional[int]
    cgroup_limit_bytes: Optional[int]
    oom_kills: Optional[int]  # OOM kills in the cgroup during the run
    samples: tuple[tuple[float, int], ...]  # (seconds since start, tree RSS bytes), bounded
    # Why the SIGKILL was the OOM killer's, in words; None when it was not
    # SIGKILL or nothing says so. Cause "oom_killed" needs it non-None.
    oom_evidence: Optional[str]
    cgroup_version: Optional[int]

    def as_report(self) -> dict[str, object]:
        return {
            "peak_rss_bytes": self.peak_rss_bytes,
            "cgroup_peak_bytes": self.cgroup_peak_bytes,
            "cgroup_limit_bytes": self.cgroup_limit_bytes,
            "oom_kills": self.oom_kills,
            "samples": [[at, value] for at, value in self.samples],
            "oom_evidence": self.oom_evidence,
            "cgroup_version": self.cgroup_version,
        }

    def sparkline(self, width: int = 40) -> str:
        """One line: the sampled tree RSS as block characters, then peak and limit in MiB.

        The bars are scaled to the limit when there is one (43 MiB of 512 MiB
        is a low bar), else to the peak. The cgroup's peak is named beside the
        RSS peak when known: it is what the limit applies to, while RSS also
        counts shared library pages that are charged elsewhere and can pass it.
        """
        peak = self.peak_rss_bytes
        label = f"peak {_mib(peak)} MiB" if peak is not None else "peak unknown"
        if self.cgroup_peak_bytes is not None and self.cgroup_limit_bytes is not None:
            label += f", cgroup peak {_mib(self.cgroup_peak_bytes)} MiB"
        if self.cgroup_limit_bytes is not None:
            label += f" of {_mib(self.cgroup_limit_bytes)} MiB"
        else:
            label += ", no limit"
        bars = _bars(self.samples, width, self.cgroup_limit_bytes or peak)
        return f"{bars} {label}" if bars else label


def _bars(samples: tuple[tuple[float, int], ...], width: int, top: Optional[int]) -> str:
    if not samples or width <= 0:
        return ""
    # Bucket by time, not by index: older samples are thinned, so indexes are
    # not evenly spaced. Each bucket shows its largest value.
    start, end = samples[0][0], samples[-1][0]
    span = end - start
    count = min(width, len(samples))
    buckets: list[Optional[int]] = [None] * count
    for at, value in samples:
        index = min(count - 1, int((at - start) / span * count)) if span > 0 else 0
        current = buckets[index]
        buckets[index] = value if current is None else max(current, value)
    # Scale to the limit, else to the true peak: a spike that sampling missed
    # then shows as bars well below the label, which is the honest picture.
    scale = max(max(v for _, v in samples), top or 0, 1)
    out: list[str] = []
    last = 0
    for bucket in buckets:
        if bucket is not None:
            last = bucket
        level = min(len(BLOCKS) - 1, max(0, -(-last * len(BLOCKS) // scale) - 1))
        out.append(BLOCKS[level])
    return "".join(out)


class Timeline:
    """A bounded series of (seconds, bytes): recent samples at full rate, older ones thinned.

    When full, the older half is halved by merging neighbours into one point
    that keeps the larger value, so peaks survive the thinning. Each thinning
    makes older history sparser again: a week-long run stays within
    ``capacity`` points, roughly log-spaced into the past.
    """

    def __init__(self, capacity: int = DEFAULT_MAX_SAMPLES) -> None:
        if capacity < 4:
            raise ValueError("a timeline needs room for at least 4 samples")
        self._capacity = capacity
        self._points: list[tuple[float, int]] = []

    def add(self, at_s: float, value: int) -> None:
        self._points.append((round(at_s, 3), value))
        if len(self._points) > self._capacity:
            half = len(self._points) // 2
            older = self._points[:half]
            merged = [(older[i][0], max(v for _, v in older[i : i + 2])) for i in range(0, half, 2)]
            self._points = merged + self._points[half:]

    def points(self) -> tuple[tuple[float, int], ...]:
        return tuple(self._points)

    def __len__(self) -> int:
        return len(self._points)


# -- the watcher ----------------------------------------------------------------


def _limit_margin(limit: int) -> int:
    # Usage stops a few pages short of the limit when the kernel gives up, and
    # v1's usage is approximate (per-CPU charge batches): 1 % of the limit,
    # between 1 and 16 MiB.
    return min(max(limit // 100, MIB), 16 * MIB)


class MemoryWatcher:
    """Samples the child's memory on the loop's timer and says how the run ended.

    ``cgroup`` is the group to read; None means the child's own (found from
    /proc/<pid>/cgroup at ``start``, which is the supervisor's own unless the
    child was placed in a group of its own), and no group at all when none is
    readable.
    """

    def __init__(
        self,
        interval_s: float,
        warn_fraction: float,
        clock: Callable[[], float] = time.monotonic,
        cgroup: Optional[CgroupMemory] = None,
        max_samples: int = DEFAULT_MAX_SAMPLES,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("memory interval must be positive")
        if not 0 < warn_fraction <= 1:
            raise ValueError("memory warning fraction must be in (0, 1]")
        self.interval_s = interval_s
        self.warn_fraction = warn_fraction
        self.cgroup = cgroup
        self.disabled_reason: Optional[str] = None
        self._clock = clock
        self._timeline = Timeline(max_samples)
        self._tree: Optional[ProcessTree] = None
        self._reader: Optional[MemoryReader] = None  # the group, read at each sample
        self._started_at = 0.0
        self._baseline: Optional[CgroupSnapshot] = None
        self._last: Optional[MemorySample] = None
        self._max_tree_rss: Optional[int] = None
        self._max_cgroup_usage: Optional[int] = None
        self._max_working_set: Optional[int] = None
        self._recent: deque[tuple[float, int]] = deque()
        self._warned = False

    @property
    def last_sample(self) -> Optional[MemorySample]:
        return self._last

    @property
    def tree_pids(self) -> tuple[int, ...]:
        """The processes the last sample covered (the child first)."""
        return self._tree.pids if self._tree is not None else ()

    def start(self, child_pid: int, started_at: float) -> None:
        """Begin watching ``child_pid``; ``started_at`` is its spawn time on ``clock``."""
        self._started_at = started_at
        try:
            if self.cgroup is None:
                self.cgroup = CgroupMemory.of_process(child_pid) or CgroupMemory.of_process()
            # The counter before the run: a kill before it is not this child's.
            # Read first, so that ``finish`` can still judge if sampling fails.
            self._baseline = self.cgroup.read() if self.cgroup is not None else None
            self._reader = self.cgroup.reader() if self.cgroup is not None else None
            # Not Linux: psutil (~35 ms to import) comes with the first sample,
            # one interval after the spawn, never before the app's start.
            self._tree = ProcessTree(child_pid, round(REDISCOVER_EVERY_S / self.interval_s))
        except Exception as exc:  # watching is optional, the app is not
            self.disabled_reason = f"memory sampling off: {type(exc).__name__}: {exc}"

    def sample(self) -> Optional[MemoryWarning]:
        """Take one sample; return the warning the first time usage crosses the threshold."""
        if self.disabled_reason is not None or self._tree is None:
            return None
        try:
            return self._sample()
        except Exception as exc:  # a sampling bug must not end the supervisor
            self.disabled_reason = f"memory sampling stopped: {type(exc).__name__}: {exc}"
            self._close()
            return None

    def _close(self) -> None:
        # The files kept open for sampling; the end reads the group by path.
        if self._tree is not None:
            self._tree.close()
        if self._reader is not None:
            self._reader.close()

    def _sample(self) -> Optional[MemoryWarning]:
        assert self._tree is not None
        now = self._clock()
        at_s = now - self._started_at
        tree_rss, processes = self._tree.rss()
        snapshot = self._reader.read() if self._reader is not None else None
        self._last = MemorySample(at_s, tree_rss, processes, snapshot)
        if tree_rss is not None:
            self._timeline.add(at_s, tree_rss)
            self._max_tree_rss = _max_known(self._max_tree_rss, tree_rss)
        if snapshot is None or snapshot.usage_bytes is None:
            return None
        self._max_cgroup_usage = _max_known(self._max_cgroup_usage, snapshot.usage_bytes)
        usage = snapshot.working_set_bytes
        assert usage is not None
        self._max_working_set = _max_known(self._max_working_set, usage)
        self._recent.append((now, usage))
        while len(self._recent) > 2 and now - self._recent[0][0] > GROWTH_WINDOW_S:
            self._recent.popleft()
        limit = snapshot.limit_bytes
        if self._warned or limit is None or usage < self.warn_fraction * limit:
            return None
        self._warned = True
        return MemoryWarning(usage, limit, usage / limit, self._growth())

    def _growth(self) -> Optional[float]:
        first_at, first = self._recent[0]
        last_at, last = self._recent[-1]
        if last_at - first_at <= 0:
            return None
        return (last - first) / (last_at - first_at)

    def status(self) -> str:
        """A short line on memory so far, for the termination log."""
        peak = self._max_tree_rss
        limit = self._last.cgroup.limit_bytes if self._last and self._last.cgroup else None
        text = f"memory peak {_mib(peak)} MiB" if peak is not None else "memory peak unknown"
        return text + (f" of {_mib(limit)} MiB" if limit is not None else "")

    def finish(self, max_rss_bytes: Optional[int], killed_by_sigkill: bool) -> MemoryFacts:
        """The run's memory facts; ``max_rss_bytes`` is wait4's ru_maxrss, in bytes."""
        self._close()
        try:
            return self._finish(max_rss_bytes, killed_by_sigkill)
        except Exception:  # the report must still be written
            return MemoryFacts(max_rss_bytes, None, None, None, self._timeline.points(), None, None)

    def _finish(self, max_rss_bytes: Optional[int], killed_by_sigkill: bool) -> MemoryFacts:
        final = self.cgroup.read() if self.cgroup is not None else None
        baseline = self._baseline
        oom_kills: Optional[int] = None
        if (
            final is not None
            and baseline is not None
            and final.oom_kills is not None
            and baseline.oom_kills is not None
        ):
            oom_kills = final.oom_kills - baseline.oom_kills
        # ru_maxrss is exact for the largest single process of the tree but
        # counts what it shared with the supervisor at fork (a `true` spawned
        # from Python reports the supervisor's RSS); samples see the whole
        # tree but miss short spikes. The larger of the two is the peak.
        peak_rss = _max_known(max_rss_bytes, self._max_tree_rss)
        limit = final.limit_bytes if final is not None else None
        if limit is None and baseline is not None:
            limit = baseline.limit_bytes
        cgroup_peak: Optional[int] = None
        if final is not None:
            # Without memory.peak (v2 before 5.19), the largest usage seen.
            cgroup_peak = final.peak_bytes
            if cgroup_peak is None:
                cgroup_peak = _max_known(self._max_cgroup_usage, final.usage_bytes)
        evidence = None
        if killed_by_sigkill:
            evidence = self._evidence(oom_kills, limit, final)
        return MemoryFacts(
            peak_rss_bytes=peak_rss,
            cgroup_peak_bytes=cgroup_peak,
            cgroup_limit_bytes=limit,
            oom_kills=oom_kills,
            samples=self._timeline.points(),
            oom_evidence=evidence,
            cgroup_version=self.cgroup.version if self.cgroup is not None else None,
        )

    def _evidence(
        self, oom_kills: Optional[int], limit: Optional[int], final: Optional[CgroupSnapshot]
    ) -> Optional[str]:
        if oom_kills is not None:
            # The kernel's own count, charged to the victim's group for any
            # OOM kill (limit or whole machine): when it is readable it is the
            # answer. A group full of page cache sits at its limit without
            # danger, so usage alone must not turn a plain kill -9 into an OOM.
            return f"cgroup oom_kill counter rose by {oom_kills}" if oom_kills > 0 else None
        if limit is None or final is None:
            return None
        # No counter (Linux before 4.13, or an unreadable file): the limit was
        # reached is the best evidence left.
        reach = limit - _limit_margin(limit)
        usage = _max_known(self._max_working_set, final.working_set_bytes)
        if usage is not None and usage >= reach:
            return f"usage {usage} reached the limit {limit}"
        # The group's peak covers its whole life: only count it when it was
        # below the limit before this run.
        before = self._baseline.peak_bytes if self._baseline is not None else None
        peak = final.peak_bytes
        if peak is not None and peak >= reach and (before is None or before < reach):
            return f"peak {peak} reached the limit {limit}"
        return None
