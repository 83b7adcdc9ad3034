"""sigterm: from kill(SIGTERM) on the supervisor (or a peer) to the child's handler.

The child is the C probe in ``onterm`` mode: it says "ready", then waits; its
SIGTERM handler prints CLOCK_MONOTONIC. The bench reads time.monotonic()
just before kill() on the process it started, after a short settle so the
supervisor is in its steady loop, as it is when a platform stops a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Optional

from common import (
    Budget,
    Context,
    Row,
    Verdict,
    fmt_ratio,
    judge,
    median,
    ms,
    p90,
    ratio,
    read_line,
    read_ns,
    spawn,
    unavailable,
    wait_exit,
)

NAME = "sigterm: forward to child"
# Long enough for the supervisor to finish post-spawn work (imports, first reap).
SETTLE_S = 0.05


def run(ctx: Context) -> list[Row]:
    if ctx.probe is None:
        return [unavailable(NAME, ctx.probe_error, "<= 2x tini")]
    probe = str(ctx.probe)
    variants: dict[str, list[str]] = {
        "supervisor": [*ctx.supervisor.argv, "--", probe, "onterm"],
        "direct": [probe, "onterm"],
    }
    for tool in ctx.peer_tools():
        variants[tool.name] = [*tool.argv, probe, "onterm"]

    runs = 8 if ctx.quick else 40
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in Budget(runs, 15 if ctx.quick else 60):
        for name, argv in variants.items():
            took = _one_signal(ctx, argv)
            if took is not None:
                samples[name].append(took)

    ours = samples["supervisor"]
    if not ours:
        return [unavailable(NAME, "the child never saw SIGTERM", "<= 2x tini")]
    tini = samples.get("tini")
    peers = []
    for peer in ("tini", "dumb-init", "direct"):
        if samples.get(peer):
            peers.append(f"{peer} {ms(median(samples[peer]))}")
        elif peer in ctx.missing:
            peers.append(f"{peer}: {ctx.missing[peer]}")
    data = {
        name: {"median_s": median(values), "p90_s": p90(values), "n": len(values)}
        for name, values in samples.items()
        if values
    }
    if tini:
        value = ratio(median(ours), median(tini))
        shown, verdict = fmt_ratio(value, "tini"), judge(value <= 2.0)
    else:
        shown, verdict = "no tini to compare", Verdict.UNAVAILABLE
    return [
        Row(
            name=NAME,
            ours=f"{ms(median(ours))} (p90 {ms(p90(ours))}, n={len(ours)})",
            peers=" · ".join(peers),
            ratio=shown,
            target="<= 2x tini",
            verdict=verdict,
            data=data,
        )
    ]


def _one_signal(ctx: Context, argv: list[str]) -> Optional[float]:
    read_fd, write_fd = os.pipe()
    try:
        with spawn(argv, ctx.env, stdin=subprocess.DEVNULL, stdout=write_fd,
                   stderr=subprocess.DEVNULL) as process:
            os.close(write_fd)
            write_fd = -1
            if read_line(read_fd, 10.0) != b"ready":
                return None
            time.sleep(SETTLE_S)
            sent = time.monotonic()
            os.kill(process.pid, signal.SIGTERM)
            handled = read_ns(read_fd, 5.0)
            wait_exit(process, 5.0)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    return None if handled is None else handled - sent
