"""Run every benchmark and print one table: ``python3 bench/run.py [--quick] [--only N,M]``.

Each benchmark compares the supervisor with its peers (tini, dumb-init, the
command run directly, bare uvicorn) in the same run, so that the ratios hold
on a shared, noisy machine where single times do not.
Exit status: 0 when every row with a target passed (or could not run yet), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

# Run as a script: the bench's modules sit next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import health
import import_profile
import memory_sampling
import readiness
import reaping
import redact
import relay
import rss
import sentry
import short_command
import sigterm
import stack_sampling
import startup
from common import Context, Row, Verdict

BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "startup": startup.run,
    "sigterm": sigterm.run,
    "rss": rss.run,
    "relay": relay.run,
    "memory_sampling": memory_sampling.run,
    "health": health.run,
    "readiness": readiness.run,
    "reaping": reaping.run,
    "sentry": sentry.run,
    "redact": redact.run,
    "short_command": short_command.run,
    "import_profile": import_profile.run,
    "stack_sampling": stack_sampling.run,
}
COLUMNS = ("benchmark", "ours", "peers", "ratio", "target", "verdict")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="few repetitions: a smoke run in about a minute")
    parser.add_argument("--only", default="",
                        help="comma-separated benchmarks: " + ", ".join(BENCHMARKS))
    parser.add_argument("--json", dest="json_path", type=Path, help="save the results here")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; "
                     f"known: {', '.join(BENCHMARKS)}")

    began = time.monotonic()
    # As `pip install` of a wheel does: cached bytecode. An editable install
    # under PYTHONDONTWRITEBYTECODE would recompile the package at every start.
    import compileall

    import supervisor

    compileall.compile_dir(str(Path(supervisor.__file__).parent), quiet=1)
    with common.context(args.quick) as ctx:
        machine = _machine(ctx)
        for key, value in machine.items():
            print(f"{key + ':':<12} {value}")
        print(flush=True)
        results: dict[str, list[Row]] = {}
        for name in chosen:
            started = time.monotonic()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = _run_one(name, ctx)
            print(f"  {name}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - began
    rows = [row for name in chosen for row in results[name]]
    print(_table(rows))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s"
          f"{' (quick: few repetitions, figures are rough)' if args.quick else ''}")
    if args.json_path is not None:
        _save(args.json_path, machine, results, elapsed, args.quick)
    return 1 if any(row.verdict is Verdict.FAIL for row in rows) else 0


def _run_one(name: str, ctx: Context) -> list[Row]:
    try:
        return BENCHMARKS[name](ctx)
    except Exception as error:  # one broken benchmark must not hide the others
        traceback.print_exc()
        return [Row(name=name, ours=f"bench error: {type(error).__name__}: {error}"[:120],
                    verdict=Verdict.FAIL)]


def _version(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0] if text else "?"


def _machine(ctx: Context) -> dict[str, str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    peers = []
    for name, tool in ctx.peers.items():
        if tool is None:
            peers.append(f"{name}: {ctx.missing.get(name, 'missing')}")
        else:
            flag = "--version"
            peers.append(f"{name} {_version([tool.argv[0], flag]).split()[-1]}")
    uvicorn = _version([common.PYTHON, "-c", "import uvicorn; print(uvicorn.__version__)"])
    return {
        "machine": f"nproc {affinity} (cpus {os.cpu_count()}), load {os.getloadavg()[0]:.2f}",
        "python": f"{platform.python_version()} ({common.PYTHON})",
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "supervisor": " ".join(ctx.supervisor.argv) + " "
        + _version([*ctx.supervisor.argv, "--version"]),
        "peers": ", ".join(peers) + f", uvicorn {uvicorn}",
        "mode": "quick" if ctx.quick else "full",
    }


def _table(rows: list[Row]) -> str:
    cells = [COLUMNS] + [
        (row.name, row.ours, row.peers, row.ratio, row.target, row.verdict.value)
        for row in rows
    ]
    widths = [max(len(line[index]) for line in cells) for index in range(len(COLUMNS))]
    lines = []
    for number, line in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _save(path: Path, machine: dict[str, str], results: dict[str, list[Row]],
          elapsed: float, quick: bool) -> None:
    payload = {
        "machine": machine,
        "quick": quick,
        "elapsed_s": round(elapsed, 1),
        "benchmarks": {
            name: [
                {"name": row.name, "ours": row.ours, "peers": row.peers, "ratio": row.ratio,
                 "target": row.target, "verdict": row.verdict.value, "data": dict(row.data)}
                for row in rows
            ]
            for name, rows in results.items()
        },
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    sys.exit(main())
