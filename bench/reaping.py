"""reaping: a thousand orphans, as PID 1 in a PID namespace, to zero zombies.

``unshare --pid --fork --mount-proc TOOL -- python orphans.py 1000``: the
test suite's child forks an intermediate that forks 1,000 grandchildren and
exits at once, so that they are re-parented to PID 1 (the supervisor, tini or
dumb-init); each sleeps 0.2 s and exits. The figure is the time from the
child's "orphaned" line to PID 1 having no zombie and no child but the app.
The 0.2 s sleep is in every figure; the ratio is against tini as PID 1.
Needs root and util-linux ``unshare``; the row says so otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from common import (
    PYTHON,
    Budget,
    Context,
    Row,
    Verdict,
    fmt_ratio,
    judge,
    median,
    p90,
    ratio,
    read_line,
    spawn,
    unavailable,
    wait_exit,
)

NAME = "reaping: 1000 orphans as PID 1"
TARGET = "<= 1.5 s"
TARGET_S = 1.5
ORPHANS = Path(__file__).resolve().parent.parent / "tests" / "children" / "orphans.py"
UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc")


def run(ctx: Context) -> list[Row]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return [unavailable(NAME, "needs root and util-linux unshare", TARGET)]
    if not ORPHANS.exists():
        return [unavailable(NAME, "tests/children/orphans.py not found", TARGET)]
    variants = {"supervisor": [*ctx.supervisor.argv, "--"]}
    for tool in ctx.peer_tools():
        variants[tool.name] = list(tool.argv)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in Budget(2 if ctx.quick else 5, 60 if ctx.quick else 180):
        for name, argv in variants.items():  # interleaved: a noisy moment hits all
            took = _one_run(ctx, argv)
            if took is not None:
                samples[name].append(took)
    ours = samples["supervisor"]
    if not ours:
        return [Row(name=NAME, ours="zombies never cleared", target=TARGET,
                    verdict=Verdict.FAIL)]
    peers = [f"{name} {median(values):.2f} s" for name, values in samples.items()
             if name != "supervisor" and values]
    tini = samples.get("tini")
    return [
        Row(
            name=NAME,
            ours=f"{median(ours):.2f} s (p90 {p90(ours):.2f} s, n={len(ours)})",
            peers=" · ".join(peers) or "no peer ran",
            ratio=fmt_ratio(ratio(median(ours), median(tini)), "tini") if tini else "",
            target=TARGET,
            verdict=judge(median(ours) <= TARGET_S),
            data={name: values for name, values in samples.items()},
        )
    ]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(part) for part in handle.read().split())
        except (OSError, ValueError):
            continue
    return found


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _one_run(ctx: Context, tool_argv: list[str]) -> Optional[float]:
    argv = [*UNSHARE, *tool_argv, PYTHON, str(ORPHANS), "1000"]
    read_fd, write_fd = os.pipe()
    try:
        with spawn(argv, ctx.env, stdin=subprocess.DEVNULL, stdout=write_fd,
                   stderr=subprocess.DEVNULL) as process:
            os.close(write_fd)
            write_fd = -1
            if read_line(read_fd, 60.0) != b"orphaned":
                return None
            orphaned_at = time.monotonic()
            inside = _children(process.pid)  # unshare's child: PID 1 of the namespace
            if not inside:
                return None
            pid1 = inside[0]
            deadline = orphaned_at + 60.0
            cleared: Optional[float] = None
            while time.monotonic() < deadline:
                children = _children(pid1)
                if len(children) == 1 and not _is_zombie(children[0]):
                    cleared = time.monotonic()
                    break
                time.sleep(0.002)
            os.kill(pid1, signal.SIGTERM)
            wait_exit(process, 10.0)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    return None if cleared is None else cleared - orphaned_at
