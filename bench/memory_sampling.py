"""memory_sampling: the supervisor's CPU cost while it samples a 5-process child tree.

The child is a shell with four sleeping children (five processes, all idle),
so whatever CPU the supervisor uses is its own loop and its memory sampling.
CPU time is read from /proc/<pid>/task/*/schedstat (nanoseconds) before and
after a window that starts once start-up is over, and shown as a percentage
of one core. tini runs the same tree at the same time as the floor.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

from common import (
    Context,
    Row,
    Verdict,
    cpu_seconds,
    judge,
    proc_status_kib,
    spawn,
    unavailable,
    unknown_option,
)

NAME = "memory sampling: CPU at 0.5 s"
TARGET_PERCENT = 0.3
TARGET = f"<= {TARGET_PERCENT} % of a core"
# Five processes, idle, bounded in time even if the bench were killed.
TREE = ["sh", "-c", "sleep 120 & sleep 120 & sleep 120 & sleep 120 & wait"]
SETTLE_S = 2.0


def run(ctx: Context) -> list[Row]:
    window = 5.0 if ctx.quick else 20.0
    sampling = ctx.supports("--memory-interval")
    variants: dict[str, list[str]] = {"supervisor": [*ctx.supervisor.argv, "--", *TREE]}
    if sampling:
        variants["sampling"] = [*ctx.supervisor.argv, "--memory-interval", "0.5", "--", *TREE]
    tini = ctx.peers.get("tini")
    if tini is not None:
        variants["tini"] = [*tini.argv, *TREE]

    with ExitStack() as stack:
        processes: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        for name, argv in variants.items():
            logs[name] = ctx.workdir / f"memory-sampling-{name}.err"
            log = stack.enter_context(open(logs[name], "wb"))
            processes[name] = stack.enter_context(
                spawn(argv, ctx.env, stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=log)
            )
        time.sleep(SETTLE_S)
        before = {name: cpu_seconds(process.pid) for name, process in processes.items()}
        began = time.monotonic()
        time.sleep(window)
        after = {name: cpu_seconds(process.pid) for name, process in processes.items()}
        elapsed = time.monotonic() - began
        rss = {name: proc_status_kib(process.pid, "VmRSS")
               for name, process in processes.items()}
        exited = {name: process.poll() for name, process in processes.items()}

    percent = {
        name: _percent(before[name], after[name], elapsed) if exited[name] is None else None
        for name in variants
    }
    floor = f"tini {percent['tini']:.3f} %" if percent.get("tini") is not None else (
        f"tini: {ctx.missing.get('tini', 'missing')}")

    rows = []
    if not sampling:
        rows.append(unavailable(NAME, "not available yet (no --memory-interval)", TARGET))
    elif exited["sampling"] is not None and unknown_option(logs["sampling"].read_bytes()):
        rows.append(unavailable(NAME, "not available yet (--memory-interval refused)", TARGET))
    elif percent["sampling"] is None:
        rows.append(Row(name=NAME, ours=f"supervisor exited ({exited['sampling']})",
                        target=TARGET, verdict=Verdict.FAIL))
    else:
        value = percent["sampling"]
        rows.append(Row(
            name=NAME,
            ours=f"{value:.3f} % over {elapsed:.0f} s (VmRSS {_mib(rss['sampling'])})",
            peers=floor,
            target=TARGET,
            verdict=judge(value <= TARGET_PERCENT),
            data={"percent": percent, "window_s": elapsed, "vmrss_kib": rss},
        ))
    idle = percent["supervisor"]
    rows.append(Row(
        name="cpu: supervisor, default flags",
        ours="exited early" if idle is None
        else f"{idle:.3f} % over {elapsed:.0f} s (VmRSS {_mib(rss['supervisor'])})",
        peers=floor,
        data={"percent": percent, "window_s": elapsed, "vmrss_kib": rss},
    ))
    return rows


def _percent(before: Optional[float], after: Optional[float], elapsed: float) -> Optional[float]:
    if before is None or after is None or elapsed <= 0:
        return None
    return (after - before) / elapsed * 100


def _mib(kib: Optional[int]) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"
