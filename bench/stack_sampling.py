"""stack_sampling: the CPU that reading the child's stack every second costs during start-up.

The child is a Python program that sleeps while "starting" (it never
becomes ready, so the supervisor samples it every ``--stack-interval``, 1 s,
the whole time). Two runs side by side over the same window:

* ``python3 -c sleep``: sampled (and import-profiled) by the supervisor;
* ``sh -c 'exec python3 -c sleep'``: the same process, which the supervisor
  does not take for Python, so neither sampled nor profiled: the floor.

The cost is the CPU of the supervisor and every process it reaped (py-spy
dumps, the app), from ``wait4`` once the supervisor has exited, minus the
floor, as a percentage of one core over the window. A second row gives one
``py-spy dump`` on its own (CPU per sample).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from typing import Optional

from common import PYTHON, Context, Row, Verdict, free_port, judge, median, spawn, unavailable

NAME = "stack sampling: CPU at 1 s while starting"
TARGET_PERCENT = 2.0
TARGET = f"<= {TARGET_PERCENT:g} % of a core"
SLEEP = "import time; time.sleep(600)"


def _py_spy() -> Optional[str]:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from supervisor.stacks import find_py_spy

    return find_py_spy(os.environ.get("PATH"))


def run(ctx: Context) -> list[Row]:
    py_spy = _py_spy()
    if py_spy is None:
        return [unavailable(NAME, "py-spy not installed", TARGET)]
    window = 6.0 if ctx.quick else 20.0
    sampled = [*ctx.supervisor.argv, "--port", str(free_port()), "--", PYTHON, "-c", SLEEP]
    floor = [*ctx.supervisor.argv, "--port", str(free_port()), "--", "sh", "-c",
             f"exec {PYTHON} -c '{SLEEP}'"]
    costs = _window_cpu({"sampled": sampled, "floor": floor}, ctx, window)
    rows = []
    if costs["sampled"] is None or costs["floor"] is None:
        rows.append(Row(name=NAME, ours="a run ended early", target=TARGET,
                        verdict=Verdict.FAIL, data={"cpu_s": costs}))
    else:
        percent = (costs["sampled"] - costs["floor"]) / window * 100
        rows.append(Row(
            name=NAME,
            ours=f"{percent:.2f} % over {window:.0f} s",
            peers=f"tree CPU {costs['sampled']:.3f} s sampled, {costs['floor']:.3f} s not",
            target=TARGET,
            verdict=judge(percent <= TARGET_PERCENT),
            data={"percent": percent, "cpu_s": costs, "window_s": window},
        ))
    per_dump = _one_dump_cpu(ctx, py_spy, 5 if ctx.quick else 15)
    if per_dump is not None:
        rows.append(Row(name="stack sampling: one py-spy dump",
                        ours=f"{per_dump * 1000:.1f} ms CPU",
                        peers=f"= {per_dump * 100:.2f} % of a core at 1 s",
                        data={"cpu_s": per_dump}))
    return rows


def _window_cpu(variants: dict[str, list[str]], ctx: Context, window: float,
                ) -> dict[str, Optional[float]]:
    """CPU of each supervisor and all it reaped, running ``window`` seconds side by side."""
    processes = {name: subprocess.Popen(argv, env=ctx.env, start_new_session=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                 for name, argv in variants.items()}
    time.sleep(window)
    out: dict[str, Optional[float]] = {}
    for name, process in processes.items():
        if process.poll() is not None:
            out[name] = None
            continue
        process.send_signal(signal.SIGTERM)  # forwarded; the app stops, then the supervisor
        out[name] = _wait_cpu(process, 30.0)
    return out


def _wait_cpu(process: subprocess.Popen[bytes], timeout: float) -> Optional[float]:
    """user+sys of ``process`` and its reaped descendants, via wait4."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return None


def _one_dump_cpu(ctx: Context, py_spy: str, count: int) -> Optional[float]:
    costs = []
    with spawn([PYTHON, "-c", SLEEP], ctx.env, stdin=subprocess.DEVNULL) as target:
        time.sleep(1.0)
        for _ in range(count):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = subprocess.run([py_spy, "dump", "--pid", str(target.pid), "--nonblocking",
                                     "--json"], capture_output=True, timeout=60)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if result.returncode == 0:
                costs.append(after.ru_utime + after.ru_stime
                             - before.ru_utime - before.ru_stime)
    return median(costs) if costs else None


if __name__ == "__main__":
    import common

    with common.context(quick="--quick" in sys.argv) as context:
        for row in run(context):
            print(f"{row.name}: {row.ours} | {row.peers} | {row.target} | {row.verdict.value}")
