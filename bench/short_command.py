"""short_command: the whole life of a one-shot command, from exec to the supervisor's exit.

``supervisor -- true`` against ``python3 -c pass`` (the floor of any tool
written in Python) and ``tini -s -- true``: the exit path (cause, report,
block) must not cost a one-shot command much more than the interpreter's own
start. The variants run round-robin so that a noisy moment hits them alike.
Run alone: ``python3 bench/short_command.py [--quick]``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PYTHON,
    Budget,
    Context,
    Row,
    exit_time,
    fmt_ratio,
    free_port,
    judge,
    median,
    ms,
    p90,
    ratio,
    spawn,
    unavailable,
)

# What the supervisor may add to `python3 -c pass` for a command that does nothing.
TARGET_OVER_PYTHON_S = 0.030


def run(ctx: Context) -> list[Row]:
    true = shutil.which("true") or "/bin/true"
    # A port of its own: a one-shot command still gets the stub, and 8000 may be taken.
    port = str(free_port())
    variants: dict[str, list[str]] = {
        "supervisor": [*ctx.supervisor.argv, "--port", port, "--", true],
        "python3 -c pass": [PYTHON, "-c", "pass"],
        "direct": [true],
    }
    tini = ctx.peers.get("tini")
    if tini is not None:
        variants["tini"] = [*tini.argv, true]
    runs = 10 if ctx.quick else 60
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for argv in variants.values():  # warm the page cache, not measured
        _one_run(ctx, argv)
    for _ in Budget(runs, 20 if ctx.quick else 90):
        for name, argv in variants.items():
            took = _one_run(ctx, argv)
            if took is not None:
                samples[name].append(took)
    return [_row(ctx, samples)]


def _one_run(ctx: Context, argv: list[str]) -> Optional[float]:
    started = time.monotonic()
    with spawn(argv, ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL) as process:
        ended = exit_time(process, 30.0)
        if ended is None or process.returncode != 0:
            return None
    return ended - started


def _row(ctx: Context, samples: dict[str, list[float]]) -> Row:
    name = "short command: supervisor -- true, exec to exit"
    target = f"<= {TARGET_OVER_PYTHON_S * 1000:.0f} ms over python3 -c pass"
    ours = samples["supervisor"]
    floor = samples["python3 -c pass"]
    if not ours or not floor:
        return unavailable(name, "the supervisor or python3 did not run `true` to its end",
                           target)
    added = median(ours) - median(floor)
    peers = [f"python3 -c pass {ms(median(floor))}"]
    for peer in ("tini", "direct"):
        if samples.get(peer):
            peers.append(f"{peer} {ms(median(samples[peer]))}")
        elif peer in ctx.missing:
            peers.append(f"{peer}: {ctx.missing[peer]}")
    tini = samples.get("tini")
    return Row(
        name=name,
        ours=f"{ms(median(ours))} (p90 {ms(p90(ours))}, n={len(ours)}; "
             f"{ms(added)} over python3 -c pass)",
        peers=" · ".join(peers),
        ratio=fmt_ratio(ratio(median(ours), median(tini)), "tini") if tini else "",
        target=target,
        verdict=judge(added <= TARGET_OVER_PYTHON_S),
        data={name: {"median_s": median(values), "p90_s": p90(values), "n": len(values)}
              for name, values in samples.items() if values},
    )


def main() -> int:
    import common

    quick = "--quick" in sys.argv[1:]
    # As run.py does (and as `pip install` of a wheel does): cached bytecode.
    import compileall

    import supervisor

    compileall.compile_dir(str(Path(supervisor.__file__).parent), quiet=1)
    with common.context(quick) as ctx:
        row = run(ctx)[0]
    print(f"{row.name}\n  ours:   {row.ours}\n  peers:  {row.peers}\n"
          f"  ratio:  {row.ratio}\n  target: {row.target}\n  verdict: {row.verdict.value}")
    return 1 if row.verdict.value == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
