"""startup: from exec of the supervisor (or a peer) to the moment its child runs.

The child is the C probe, which prints CLOCK_MONOTONIC as its first act; the
bench reads time.monotonic() (the same clock) just before Popen. Variants run
round-robin so that a noisy moment of the machine hits all of them alike.
Also: what ``python -X importtime`` says the supervisor imports, and whether
anything heavy is imported before the child is spawned.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

from common import (
    PYTHON,
    Budget,
    Context,
    Row,
    fmt_ratio,
    judge,
    median,
    ms,
    p90,
    ratio,
    read_ns,
    spawn,
    unavailable,
    wait_exit,
)

TARGET_S = 0.025
# The target assumes a bare `python3 -c pass` of about 10 ms. Where site and its
# .pth files make the interpreter itself slower, what the supervisor adds on top
# of that floor is judged: at most 15 ms.
LEAN_FLOOR_S = 0.010
# Modules that cost tens of milliseconds each and must wait until needed.
HEAVY = ("psutil", "httpx", "sentry_sdk", "asyncio", "uvicorn", "h11", "anyio")
_IMPORT_LINE = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\|(\s*)(\S+)\s*$")


def run(ctx: Context) -> list[Row]:
    if ctx.probe is None:
        return [unavailable("startup: exec to child exec", ctx.probe_error)]
    probe = str(ctx.probe)
    # The bare interpreter is the floor for any supervisor written in Python.
    bare_python = [
        PYTHON, "-c", "import os, time; os.write(1, b'%d\\n' % time.monotonic_ns())"
    ]
    variants: dict[str, list[str]] = {
        "supervisor": [*ctx.supervisor.argv, "--", probe, "stamp"],
        "python -m supervisor": [PYTHON, "-m", "supervisor", "--", probe, "stamp"],
        "direct": [probe, "stamp"],
        "python3 -c": bare_python,
    }
    for tool in ctx.peer_tools():
        variants[tool.name] = [*tool.argv, probe, "stamp"]

    runs = 8 if ctx.quick else 40
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for argv in variants.values():  # warm the page cache, not measured
        _one_start(ctx, argv)
    for _ in Budget(runs, 15 if ctx.quick else 60):
        for name, argv in variants.items():
            took = _one_start(ctx, argv)
            if took is not None:
                samples[name].append(took)

    rows = [_startup_row(ctx, samples)]
    rows.append(_info_row("startup: python -m supervisor", samples["python -m supervisor"]))
    rows.append(_info_row("startup: bare python3 -c (floor)", samples["python3 -c"]))
    rows.extend(_import_rows(ctx))
    return rows


def _one_start(ctx: Context, argv: list[str]) -> Optional[float]:
    read_fd, write_fd = os.pipe()
    try:
        started = time.monotonic()
        with spawn(argv, ctx.env, stdin=subprocess.DEVNULL, stdout=write_fd,
                   stderr=subprocess.DEVNULL) as process:
            os.close(write_fd)
            write_fd = -1
            child_ran = read_ns(read_fd, 10.0)
            wait_exit(process, 10.0)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    return None if child_ran is None else child_ran - started


def _startup_row(ctx: Context, samples: dict[str, list[float]]) -> Row:
    name = "startup: exec to child exec"
    ours = samples["supervisor"]
    if not ours:
        return unavailable(name, "the supervisor never started the child", "<= 25 ms")
    peers = []
    for peer in ("tini", "dumb-init", "direct"):
        if samples.get(peer):
            peers.append(f"{peer} {ms(median(samples[peer]))}")
        elif peer in ctx.missing:
            peers.append(f"{peer}: {ctx.missing[peer]}")
    tini = samples.get("tini")
    against = fmt_ratio(ratio(median(ours), median(tini)), "tini") if tini else ""
    floor = median(samples["python3 -c"]) if samples.get("python3 -c") else LEAN_FLOOR_S
    added = median(ours) - floor
    return Row(
        name=name,
        ours=f"{ms(median(ours))} (p90 {ms(p90(ours))}, n={len(ours)}; "
             f"{ms(added)} over bare python3)",
        peers=" · ".join(peers),
        ratio=against,
        target="<= 25 ms (<= 15 ms over python3)",
        verdict=judge(median(ours) <= TARGET_S or added <= TARGET_S - LEAN_FLOOR_S),
        data={
            name: {"median_s": median(values), "p90_s": p90(values), "n": len(values)}
            for name, values in samples.items()
            if values
        },
    )


def _info_row(name: str, values: list[float]) -> Row:
    if not values:
        return unavailable(name, "did not run")
    return Row(
        name=name,
        ours=f"{ms(median(values))} (p90 {ms(p90(values))})",
        data={"median_s": median(values), "p90_s": p90(values), "n": len(values)},
    )


# -- import cost -------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    name: str
    self_us: int
    cumulative_us: int
    top_level: bool


def _parse_importtime(lines: list[str]) -> list[Imported]:
    found = []
    for line in lines:
        match = _IMPORT_LINE.match(line)
        if match:
            found.append(
                Imported(
                    name=match.group(4),
                    self_us=int(match.group(1)),
                    cumulative_us=int(match.group(2)),
                    # Nesting is shown by indentation after the bar: one space is top.
                    top_level=len(match.group(3)) <= 1,
                )
            )
    return found


def _heavy(imports: list[Imported]) -> list[str]:
    names = {item.name.split(".")[0] for item in imports}
    return [name for name in HEAVY if name in names]


def _import_rows(ctx: Context) -> list[Row]:
    help_run = subprocess.run(
        [PYTHON, "-X", "importtime", "-m", "supervisor", "--help"],
        capture_output=True, text=True, env=dict(ctx.env), timeout=30,
    )
    imports = _parse_importtime(help_run.stderr.splitlines())
    # Lines before the package's own are the interpreter's start-up (site, runpy).
    first = next((index for index, item in enumerate(imports)
                  if item.name == "supervisor"), len(imports))
    attributable = [item for item in imports[first:] if item.top_level]
    total_ms = sum(item.cumulative_us for item in attributable) / 1000
    own_ms = sum(item.self_us for item in imports if item.name.startswith("supervisor")) / 1000
    top = sorted(attributable, key=lambda item: item.cumulative_us, reverse=True)[:3]
    heavy = _heavy(imports)
    rows = [
        Row(
            name="import: -m supervisor --help",
            ours=f"{total_ms:.1f} ms (own modules {own_ms:.1f})",
            peers="top: " + ", ".join(f"{item.name} {item.cumulative_us / 1000:.1f} ms"
                                      for item in top),
            target="no " + "/".join(HEAVY[:4]),
            verdict=judge(not heavy),
            data={"supervisor_ms": total_ms, "own_modules_ms": own_ms,
                  "top": [(item.name, item.cumulative_us) for item in top], "heavy": heavy},
        )
    ]
    rows.append(_before_spawn_row(ctx))
    return rows


def _before_spawn_row(ctx: Context) -> Row:
    """Imports up to the child's exec, from one pipe that both streams share.

    The supervisor writes importtime lines to stderr as it imports; the child
    writes its timestamp to the same pipe (stdout is inherited). Every line
    before the timestamp was imported before the child ran.
    """
    name = "import: before spawn"
    assert ctx.probe is not None
    read_fd, write_fd = os.pipe()
    argv = [PYTHON, "-X", "importtime", "-m", "supervisor", "--", str(ctx.probe), "stamp"]
    try:
        with spawn(argv, ctx.env, stdin=subprocess.DEVNULL, stdout=write_fd,
                   stderr=write_fd) as process:
            os.close(write_fd)
            write_fd = -1
            wait_exit(process, 20.0)
            chunks = []
            os.set_blocking(read_fd, False)
            while True:
                try:
                    chunk = os.read(read_fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    marker = next((index for index, line in enumerate(lines) if line.strip().isdigit()), None)
    if marker is None:
        return unavailable(name, "the child's mark was not seen")
    before = _parse_importtime(lines[:marker])
    after = _parse_importtime(lines[marker + 1 :])
    heavy_before = _heavy(before)
    heavy_after = _heavy(after)
    before_ms = sum(item.self_us for item in before) / 1000
    # What the supervisor itself pulls in, not the interpreter's start-up (site, runpy).
    first = next((index for index, item in enumerate(before)
                  if item.name == "supervisor"), len(before))
    slowest = sorted(before[first:], key=lambda item: item.self_us, reverse=True)[:3]
    own_ms = sum(item.self_us for item in before[first:]) / 1000
    ours = f"{len(before) - first} modules, {own_ms:.1f} ms (all {before_ms:.1f})"
    peers = "heavy: " + (", ".join(heavy_before) or "none") + " · slowest: " + ", ".join(
        f"{item.name} {item.self_us / 1000:.1f}" for item in slowest
    )
    if heavy_after:
        peers += " · after: " + ", ".join(heavy_after)
    return Row(
        name=name,
        ours=ours,
        peers=peers,
        target="none of " + "/".join(HEAVY[:4]),
        verdict=judge(not heavy_before),
        data={"modules_before": len(before), "ms_before": before_ms,
              "supervisor_modules_before": len(before) - first, "supervisor_ms_before": own_ms,
              "heavy_before": heavy_before, "heavy_after": heavy_after,
              "slowest_before": [(item.name, item.self_us) for item in slowest]},
    )

