"""relay: how much the supervisor slows a child that writes a lot to stderr.

The child is the C probe in ``spam`` mode: it prints its start time on
stdout, then writes COUNT blocks of SIZE bytes to stderr, then its end time.
It runs three ways: writing directly to the sink, through the supervisor,
and through ``cat`` (the simplest relay there is). Two sinks:

* a pipe read by the C probe in ``drain`` mode, as a container runtime reads
  a container's output: the time runs from the child's start to the moment
  the last of its bytes reached the reader (the supervisor's report, which
  follows, is not counted);
* /dev/null: the time runs from the child's start to its last write
  returning. A slow relay shows here too, because a full pipe blocks the
  child's writes; what the relay still holds at the end is at most its pipe.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Optional

from common import (
    Budget,
    Context,
    Row,
    Verdict,
    judge,
    median,
    p90,
    ratio,
    read_ns,
    spawn,
    unavailable,
    wait_exit,
)

SMALL_TARGET = 1.6
BULK_TARGET_GBPS = 1.0
RELAYS = ("direct", "supervisor", "cat")
SINKS = ("pipe", "devnull")
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Timing:
    total: float  # child's start to the sink having everything
    writer: float  # child's start to its last write returning


Samples = dict[tuple[str, str], list[Timing]]


@dataclass(frozen=True)
class Shape:
    label: str
    count: int
    size: int

    @property
    def total(self) -> int:
        return self.count * self.size


def run(ctx: Context) -> list[Row]:
    if ctx.probe is None:
        return [unavailable("relay", ctx.probe_error)]
    reps = 2 if ctx.quick else 5
    small = Shape("100 B", 300_000 if ctx.quick else 2_000_000, 100)
    bulk = Shape("64 KiB", 4096 if ctx.quick else 16384, 65536)
    rows = []
    for shape in (small, bulk):
        samples = _measure(ctx, shape, reps)
        for sink in SINKS:
            rows.append(_small_row(shape, sink, samples) if shape is small
                        else _bulk_row(shape, sink, samples))
    return rows


def _measure(ctx: Context, shape: Shape, reps: int) -> Samples:
    samples: Samples = {
        (relay, sink): [] for relay in RELAYS for sink in SINKS
    }
    budget_s = 40.0 if ctx.quick else 150.0
    for _ in Budget(reps, budget_s):
        for sink in SINKS:
            for relay in RELAYS:
                took = _one(ctx, relay, sink, shape)
                if took is not None:
                    samples[(relay, sink)].append(took)
    return samples


def _one(ctx: Context, relay: str, sink: str, shape: Shape) -> Optional[Timing]:
    assert ctx.probe is not None
    probe = str(ctx.probe)
    spam = [probe, "spam", str(shape.count), str(shape.size)]
    quiet = {"stdin": subprocess.DEVNULL}
    with ExitStack() as stack:
        owned: list[int] = []  # fds the bench must close once children have them
        stack.callback(_close_all, owned)
        stamp_read, stamp_write = os.pipe()
        stack.callback(os.close, stamp_read)
        owned.append(stamp_write)
        drain_read: Optional[int] = None
        if sink == "pipe":
            data_read, data_write = os.pipe()
            drain_read, drain_write = os.pipe()
            stack.callback(os.close, drain_read)
            owned.extend((data_read, drain_write))
            stack.enter_context(spawn([probe, "drain", str(shape.total)], ctx.env,
                                      stdin=data_read, stdout=drain_write))
            sink_fd = data_write
        else:
            sink_fd = os.open(os.devnull, os.O_WRONLY)
        owned.append(sink_fd)

        if relay == "direct":
            last = stack.enter_context(spawn(spam, ctx.env, stdout=stamp_write,
                                             stderr=sink_fd, **quiet))
        elif relay == "supervisor":
            last = stack.enter_context(spawn([*ctx.supervisor.argv, "--", *spam], ctx.env,
                                             stdout=stamp_write, stderr=sink_fd, **quiet))
        else:
            middle_read, middle_write = os.pipe()
            owned.extend((middle_read, middle_write))
            stack.enter_context(spawn(spam, ctx.env, stdout=stamp_write, stderr=middle_write,
                                      **quiet))
            last = stack.enter_context(spawn(["cat"], ctx.env, stdin=middle_read,
                                             stdout=sink_fd, stderr=subprocess.DEVNULL))
        _close_all(owned)

        started = read_ns(stamp_read, 30.0)
        wrote = read_ns(stamp_read, RUN_TIMEOUT_S)
        ended = wrote
        if drain_read is not None:
            # Printed at EOF, i.e. after the supervisor's exit; the value is
            # the moment the child's last byte arrived.
            ended = read_ns(drain_read, RUN_TIMEOUT_S)
        wait_exit(last, 30.0)
    if started is None or ended is None or wrote is None:
        return None
    return Timing(total=ended - started, writer=wrote - started)


def _close_all(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"


def _totals(samples: Samples, relay: str, sink: str) -> list[float]:
    return [timing.total for timing in samples[(relay, sink)]]


def _small_row(shape: Shape, sink: str, samples: Samples) -> Row:
    name = f"relay: {shape.count:,} x {shape.label} -> {sink}"
    ours, direct, cat = (_totals(samples, relay, sink)
                         for relay in ("supervisor", "direct", "cat"))
    if not ours or not direct:
        return unavailable(name, "runs did not complete", f"<= {SMALL_TARGET}x direct")
    ours_ratio = ratio(median(ours), median(direct))
    peers = f"direct {_fmt_s(median(direct))}"
    if cat:
        peers += f" · cat {_fmt_s(median(cat))} ({ratio(median(cat), median(direct)):.1f}x)"
    # Into /dev/null a direct write costs nothing at all, while under any relay
    # the app writes into a pipe: that row shows the floor of relaying, and the
    # pipe row (what a container runtime gives the app) carries the target.
    judged = sink == "pipe"
    return Row(
        name=name,
        ours=f"{_fmt_s(median(ours))} (p90 {_fmt_s(p90(ours))}, n={len(ours)}"
        f"{_writer_note(samples, sink)})",
        peers=peers,
        ratio=f"{ours_ratio:.2f}x direct",
        target=f"<= {SMALL_TARGET}x direct" if judged else "",
        verdict=judge(ours_ratio <= SMALL_TARGET) if judged else Verdict.INFO,
        data=_data(shape, sink, samples),
    )


def _bulk_row(shape: Shape, sink: str, samples: Samples) -> Row:
    name = f"relay: {shape.count:,} x {shape.label} -> {sink}"
    ours, direct, cat = (_totals(samples, relay, sink)
                         for relay in ("supervisor", "direct", "cat"))
    if not ours:
        return unavailable(name, "runs did not complete", f">= {BULK_TARGET_GBPS} GB/s")
    gbps = shape.total / median(ours) / 1e9
    peers = []
    if direct:
        peers.append(f"direct {shape.total / median(direct) / 1e9:.2f} GB/s")
    if cat:
        peers.append(f"cat {shape.total / median(cat) / 1e9:.2f} GB/s")
    return Row(
        name=name,
        ours=f"{gbps:.2f} GB/s ({_fmt_s(median(ours))} for {shape.total / 2**20:.0f} MiB"
        f"{_writer_note(samples, sink)})",
        peers=" · ".join(peers),
        ratio=f"{ratio(median(ours), median(direct)):.2f}x direct" if direct else "",
        target=f">= {BULK_TARGET_GBPS:g} GB/s",
        verdict=judge(gbps >= BULK_TARGET_GBPS),
        data=_data(shape, sink, samples),
    )


def _data(shape: Shape, sink: str, samples: Samples) -> dict[str, object]:
    data: dict[str, object] = {"count": shape.count, "size": shape.size, "sink": sink}
    for relay in RELAYS:
        timings = samples[(relay, sink)]
        if timings:
            totals = [timing.total for timing in timings]
            data[relay] = {
                "median_s": median(totals),
                "p90_s": p90(totals),
                "writer_median_s": median([timing.writer for timing in timings]),
                "n": len(totals),
            }
    return data


def _writer_note(samples: Samples, sink: str) -> str:
    """When the reader got the last byte long after the child finished, say so."""
    timings = samples[("supervisor", sink)]
    if sink != "pipe" or not timings:
        return ""
    total = median([timing.total for timing in timings])
    writer = median([timing.writer for timing in timings])
    return f"; child done in {_fmt_s(writer)}" if total > 1.5 * writer else ""
