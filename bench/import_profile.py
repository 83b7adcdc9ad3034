"""import_profile: what the import profile costs the relay and the app's start-up.

Three figures:

* the relay's filter on its own, in process: 1 MiB reads of 100-byte lines
  (no import line among them, the steady state of a running app) through
  ``ImportLineFilter``, in GB/s;
* the relay through the real supervisor, with the filter and without: the
  C probe writes 100-byte blocks to stderr, started through ``python3 -c
  os.execv(...)`` so that the supervisor takes the child for Python (filter
  on), or with ``PYTHONPROFILEIMPORTTIME`` set empty by the user (filter
  off, and Python prints nothing); wall time of the whole run, stderr to
  /dev/null;
* a bare uvicorn app (no supervisor), from exec to its port answering, with
  ``PYTHONPROFILEIMPORTTIME=1`` and without: the interpreter's own cost of
  timing and printing every import.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Optional

from common import (
    CHILDREN_DIR,
    LOCALHOST,
    PYTHON,
    Budget,
    Context,
    Row,
    free_port,
    judge,
    median,
    spawn,
    unavailable,
    wait_exit,
)

RELAY_TARGET = 1.10
STARTUP_TARGET = 1.10
FILTER_TARGET_GBPS = 1.0


def run(ctx: Context) -> list[Row]:
    return [_filter_row(ctx), _relay_row(ctx), _startup_row(ctx)]


def _filter_row(ctx: Context) -> Row:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from supervisor.relay import ImportLineFilter

    line = b"INFO:     127.0.0.1:50312 - \"GET /items/42 HTTP/1.1\" 200 OK" + b" " * 38 + b"\n"
    chunk = bytearray(line * ((1 << 20) // len(line)))
    rounds = 200 if ctx.quick else 1000
    passed = [0]

    def emit(piece: bytes | memoryview) -> None:
        passed[0] += len(piece)

    line_filter = ImportLineFilter(lambda _: None)
    started = time.perf_counter()
    for _ in range(rounds):
        line_filter.feed(chunk, len(chunk), emit)
    elapsed = time.perf_counter() - started
    gbps = passed[0] / elapsed / 1e9
    return Row(name="import profile: relay filter alone", ours=f"{gbps:.2f} GB/s",
               peers="100-byte lines, 1 MiB reads", target=f">= {FILTER_TARGET_GBPS:g} GB/s",
               verdict=judge(gbps >= FILTER_TARGET_GBPS), data={"gbps": gbps})


def _relay_row(ctx: Context) -> Row:
    name = "import profile: relay with the filter"
    if ctx.probe is None:
        return unavailable(name, ctx.probe_error)
    count = 300_000 if ctx.quick else 1_000_000
    exec_probe = (f"import os; os.execv({str(ctx.probe)!r}, "
                  f"[{str(ctx.probe)!r}, 'spam', '{count}', '100'])")
    argv = [*ctx.supervisor.argv, "--port", str(free_port()), "--", PYTHON, "-c", exec_probe]
    times: dict[str, list[float]] = {"filter": [], "none": []}
    for _ in Budget(3 if ctx.quick else 5, 60 if ctx.quick else 180):
        for variant in times:
            env = dict(ctx.env)
            if variant == "none":
                env["PYTHONPROFILEIMPORTTIME"] = ""  # the user's: no profile, no filter
            took = _timed_run(argv, env)
            if took is not None:
                times[variant].append(took)
    if not times["filter"] or not times["none"]:
        return unavailable(name, "a run did not finish")
    with_filter, without = median(times["filter"]), median(times["none"])
    value = with_filter / without
    megabytes = count * 100 / 1e6
    return Row(name=name, ours=f"{with_filter:.2f} s for {megabytes:.0f} MB",
               peers=f"without {without:.2f} s", ratio=f"{value:.2f}x without",
               target=f"<= {RELAY_TARGET:.2f}x", verdict=judge(value <= RELAY_TARGET),
               data={"times": times})


def _timed_run(argv: list[str], env: dict[str, str]) -> Optional[float]:
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink, spawn(argv, env, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL,
                                               stderr=sink) as process:
        if wait_exit(process, 120) is None:
            return None
    return time.perf_counter() - started


def _startup_row(ctx: Context) -> Row:
    name = "import profile: uvicorn start-up"
    runs = 5 if ctx.quick else 15
    times: dict[str, list[float]] = {"profile": [], "plain": []}
    for _ in Budget(runs, 60 if ctx.quick else 240):
        for variant in times:
            env = dict(ctx.env)
            env.pop("PYTHONPROFILEIMPORTTIME", None)
            if variant == "profile":
                env["PYTHONPROFILEIMPORTTIME"] = "1"
            took = _until_answer(env)
            if took is not None:
                times[variant].append(took)
    if not times["profile"] or not times["plain"]:
        return unavailable(name, "uvicorn did not answer")
    profiled, plain = median(times["profile"]), median(times["plain"])
    value = profiled / plain
    return Row(name=name, ours=f"{profiled * 1000:.0f} ms with PYTHONPROFILEIMPORTTIME",
               peers=f"{plain * 1000:.0f} ms without", ratio=f"{value:.2f}x without",
               target=f"<= {STARTUP_TARGET:.2f}x", verdict=judge(value <= STARTUP_TARGET),
               data={"times": times})


def _until_answer(env: dict[str, str]) -> Optional[float]:
    """Exec of bare uvicorn to its port accepting a connection."""
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", "app:app", "--app-dir", str(CHILDREN_DIR),
            "--host", LOCALHOST, "--port", str(port), "--log-level", "warning"]
    started = time.perf_counter()
    with spawn(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL) as process:
        deadline = started + 30
        while time.perf_counter() < deadline and process.poll() is None:
            try:
                with socket.create_connection((LOCALHOST, port), timeout=1):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.002)
    return None


if __name__ == "__main__":
    import common

    with common.context(quick="--quick" in sys.argv) as context:
        for row in run(context):
            print(f"{row.name}: {row.ours} | {row.peers} | {row.ratio} | {row.target} | "
                  f"{row.verdict.value}")
