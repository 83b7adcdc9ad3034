"""rss: the supervisor's own memory (VmRSS, VmHWM) while its child runs.

Read from /proc/<pid>/status of the supervisor process (not its child) after
it has settled, with a sleeping child and with a real uvicorn app. The peers
run the same children at the same time, so they see the same machine.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack
from typing import Optional

from common import (
    PYTHON,
    Context,
    Row,
    free_port,
    judge,
    proc_status_kib,
    ratio,
    spawn,
    unavailable,
)
from web import uvicorn_argv, wait_for

TARGET_KIB = 16 * 1024
# The target assumes a bare python3 of about 8.4 MiB (FACTS); where this
# machine's site and .pth files make the interpreter itself larger, what the
# supervisor holds above a bare python3 is judged instead.
LEAN_PYTHON_KIB = int(8.4 * 1024)
# The child sleeps for longer than the measurement, and no longer: bounded.
SLEEP_CHILD = ["sleep", "120"]


def _mib(kib: Optional[int]) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def run(ctx: Context) -> list[Row]:
    settle = 1.5 if ctx.quick else 3.0
    return [_sleeping(ctx, settle), _uvicorn(ctx, settle)]


def _wrappers(ctx: Context) -> dict[str, list[str]]:
    wrappers = {"supervisor": [*ctx.supervisor.argv, "--"]}
    for tool in ctx.peer_tools():
        wrappers[tool.name] = list(tool.argv)
    return wrappers


def _sleeping(ctx: Context, settle: float) -> Row:
    name = "rss: supervisor, sleeping child"
    with ExitStack() as stack:
        pids = {
            tool: stack.enter_context(
                spawn([*prefix, *SLEEP_CHILD], ctx.env, stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ).pid
            for tool, prefix in _wrappers(ctx).items()
        }
        # The floor for anything written in Python on this machine (site, .pth files).
        pids["bare python3"] = stack.enter_context(
            spawn([PYTHON, "-c", "import time; time.sleep(120)"], ctx.env,
                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
        ).pid
        time.sleep(settle)
        figures = {tool: _memory(pid) for tool, pid in pids.items()}
    return _row(ctx, name, figures)


def _uvicorn(ctx: Context, settle: float) -> Row:
    name = "rss: supervisor, uvicorn child"
    with ExitStack() as stack:
        pids: dict[str, int] = {}
        ports: dict[str, int] = {}
        for tool, prefix in [*_wrappers(ctx).items(), ("uvicorn itself", [])]:
            port = free_port()
            ports[tool] = port
            pids[tool] = stack.enter_context(
                spawn([*prefix, *uvicorn_argv(port)], ctx.env, stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ).pid
        pids["bare python3"] = stack.enter_context(
            spawn([PYTHON, "-c", "import time; time.sleep(120)"], ctx.env,
                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
        ).pid
        answered = {tool: wait_for(port, "/healthz", 30.0, body_has=b"app")
                    for tool, port in ports.items()}
        if answered["supervisor"] is None:
            return unavailable(name, "the app never answered under the supervisor", "<= 16 MiB")
        time.sleep(settle)
        figures = {tool: _memory(pid) for tool, pid in pids.items()}
    return _row(ctx, name, figures)


def _memory(pid: int) -> tuple[Optional[int], Optional[int]]:
    return proc_status_kib(pid, "VmRSS"), proc_status_kib(pid, "VmHWM")


def _row(ctx: Context, name: str,
         figures: dict[str, tuple[Optional[int], Optional[int]]]) -> Row:
    rss_kib, hwm_kib = figures.pop("supervisor")
    if rss_kib is None:
        return unavailable(name, "the supervisor had exited", "<= 16 MiB")
    peers = [f"{tool} {_mib(rss)}" for tool, (rss, _) in figures.items()]
    peers.extend(f"{tool}: {why}" for tool, why in ctx.missing.items())
    tini = figures.get("tini", (None, None))[0]
    bare = figures.get("bare python3", (None, None))[0]
    added = rss_kib - bare if bare else None
    within = rss_kib <= TARGET_KIB or (
        added is not None and added <= TARGET_KIB - LEAN_PYTHON_KIB
    )
    return Row(
        name=name,
        ours=f"VmRSS {_mib(rss_kib)} (HWM {_mib(hwm_kib)})"
             + (f"; {_mib(added)} over bare python3" if added is not None else ""),
        peers=" · ".join(peers),
        ratio=f"{ratio(rss_kib, tini):.1f}x tini" if tini else "",
        target="<= 16 MiB (<= 7.6 MiB over python3)",
        verdict=judge(within),
        data={"supervisor": {"vmrss_kib": rss_kib, "vmhwm_kib": hwm_kib},
              **{tool: {"vmrss_kib": rss, "vmhwm_kib": hwm}
                 for tool, (rss, hwm) in figures.items()}},
    )
