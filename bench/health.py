"""health: the port answering at once, and no cost once the app owns the socket.

``supervisor --host 127.0.0.1 --port P -- python -m uvicorn app:app --port P``
binds P itself, answers /healthz from its stub and hands the socket to uvicorn.
Measured against the same uvicorn command run bare:

* exec to the first /healthz 200 (polled every millisecond on fresh connections);
* with an app whose import takes 3 s: first answer, and when the app itself answers;
* the stub's requests per second (wrk) while the app is still importing;
* after hand-off, keep-alive latency (one connection, requests interleaved in
  blocks between the two servers) and throughput (wrk, runs alternated).

Rows say "not available yet" while the supervisor has no ``--port``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common import (
    LOCALHOST,
    Budget,
    Context,
    Row,
    Verdict,
    free_port,
    judge,
    median,
    ms,
    p90,
    ratio,
    spawn,
    unavailable,
    unknown_option,
)
from web import Connection, get_once, uvicorn_argv

FIRST_TARGET_S = 0.040
LATENCY_TARGET = 1.05
THROUGHPUT_TARGET = 0.98
SLOW_IMPORT_S = 3.0
APP_MARK = b'"from":"app"'

NAMES = (
    ("health: exec to first /healthz 200", "<= 40 ms"),
    ("health: 3 s import, first answer", ""),
    ("health: stub req/s during startup", ""),
    ("health: keep-alive p50 after hand-off", f"<= {LATENCY_TARGET}x bare"),
    ("health: wrk throughput after hand-off", f">= {THROUGHPUT_TARGET}x bare"),
    ("health: early request rejected (503)", ""),
)


class NotYet(Exception):
    """The supervisor refused a flag this benchmark needs."""


@dataclass(frozen=True)
class Started:
    process: subprocess.Popen[bytes]
    port: int
    began: float
    log: Path


def run(ctx: Context) -> list[Row]:
    if not ctx.supports("--port"):
        return [unavailable(name, "not available yet (no --port)", target)
                for name, target in NAMES]
    try:
        return [
            _first_answer(ctx),
            _slow_import(ctx),
            _stub_rate(ctx),
            *_after_handoff(ctx),
            _early_reject(ctx),
        ]
    except NotYet as refused:
        return [unavailable(name, f"not available yet ({refused})", target)
                for name, target in NAMES]


# -- starting the servers ------------------------------------------------------


def _supervised_argv(ctx: Context, port: int, *options: str) -> list[str]:
    argv = [*ctx.supervisor.argv, "--host", LOCALHOST, "--port", str(port), *options]
    if ctx.supports("--health-path"):
        argv += ["--health-path", "/healthz"]
    return [*argv, "--", *uvicorn_argv(port)]


def _start(ctx: Context, stack: ExitStack, supervised: bool, import_sleep: float = 0.0,
           tag: str = "run", options: tuple[str, ...] = ()) -> Started:
    port = free_port()
    argv = _supervised_argv(ctx, port, *options) if supervised else uvicorn_argv(port)
    env = dict(ctx.env)
    if import_sleep:
        env["BENCH_IMPORT_SLEEP"] = str(import_sleep)
    log = ctx.workdir / f"health-{tag}-{'sup' if supervised else 'bare'}.err"
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stack.callback(os.close, handle)
    began = time.monotonic()
    process = stack.enter_context(spawn(argv, env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=handle))
    return Started(process, port, began, log)


def _wait_answer(started: Started, seconds: float, body_has: bytes = b"") -> Optional[float]:
    """Poll /healthz until 200 (with ``body_has``); None if the server died or time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = get_once(started.port, "/healthz", timeout=1.0)
        if response is not None and response.status == 200 and body_has in response.body:
            return time.monotonic()
        if started.process.poll() is not None:
            if unknown_option(started.log.read_bytes()):
                raise NotYet(started.log.read_text(errors="replace").strip()[-80:])
            return None
        time.sleep(0.001)
    return None


# -- the rows ---------------------------------------------------------------------


def _first_answer(ctx: Context) -> Row:
    name, target = NAMES[0]
    runs = 5 if ctx.quick else 20
    ours: list[float] = []
    bare: list[float] = []
    for index in Budget(runs, 30 if ctx.quick else 90):
        for supervised, into in ((True, ours), (False, bare)):
            with ExitStack() as stack:
                started = _start(ctx, stack, supervised, tag=f"first{index}")
                answered = _wait_answer(started, 15.0)
                if answered is not None:
                    into.append(answered - started.began)
    if not ours:
        return Row(name=name, ours="never answered", target=target, verdict=Verdict.FAIL)
    return Row(
        name=name,
        ours=f"{ms(median(ours))} (p90 {ms(p90(ours))}, n={len(ours)})",
        peers=f"bare uvicorn {ms(median(bare))}" if bare else "bare uvicorn never answered",
        ratio=f"{ratio(median(ours), median(bare)):.2f}x bare" if bare else "",
        target=target,
        verdict=judge(median(ours) <= FIRST_TARGET_S),
        data={"supervisor_s": ours, "bare_s": bare},
    )


def _slow_import(ctx: Context) -> Row:
    name, _ = NAMES[1]
    runs = 1 if ctx.quick else 3
    first: list[float] = []
    app_ready: list[float] = []
    bare: list[float] = []
    for index in Budget(runs, 40):
        with ExitStack() as stack:
            started = _start(ctx, stack, True, SLOW_IMPORT_S, tag=f"slow{index}")
            answered = _wait_answer(started, 10.0)
            ready = _wait_answer(started, 20.0, APP_MARK)
            if answered is not None:
                first.append(answered - started.began)
            if ready is not None:
                app_ready.append(ready - started.began)
        with ExitStack() as stack:
            started = _start(ctx, stack, False, SLOW_IMPORT_S, tag=f"slow{index}")
            answered = _wait_answer(started, 20.0)
            if answered is not None:
                bare.append(answered - started.began)
    if not first:
        return Row(name=name, ours="never answered", verdict=Verdict.FAIL)
    ready_text = f"app {median(app_ready):.2f} s" if app_ready else "app never answered"
    return Row(
        name=name,
        ours=f"{ms(median(first))} (then {ready_text})",
        peers=f"bare uvicorn {median(bare):.2f} s" if bare else "bare uvicorn never answered",
        ratio=f"{ratio(median(first), median(bare)):.3f}x bare" if bare else "",
        data={"first_s": first, "app_ready_s": app_ready, "bare_s": bare},
    )


def _wrk(port: int, path: str, seconds: float, connections: int = 32) -> Optional[float]:
    """Requests per second from wrk, or None when wrk is not there or failed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    try:
        result = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s",
             f"http://{LOCALHOST}:{port}{path}"],
            capture_output=True, text=True, timeout=seconds + 30,
        )
    except subprocess.TimeoutExpired:
        return None
    match = re.search(r"Requests/sec:\s*([\d.]+)", result.stdout)
    return float(match.group(1)) if match else None


def _stub_rate(ctx: Context) -> Row:
    name, _ = NAMES[2]
    if shutil.which("wrk") is None:
        return unavailable(name, "wrk not installed (apt-get install wrk)")
    window = 1.0 if ctx.quick else 2.0
    with ExitStack() as stack:
        # The import outlasts the measurement, so only the stub answers.
        started = _start(ctx, stack, True, window + 4.0, tag="stub")
        if _wait_answer(started, 10.0) is None:
            return Row(name=name, ours="never answered", verdict=Verdict.FAIL)
        rate = _wrk(started.port, "/healthz", window, connections=16)
        still_stub = get_once(started.port, "/healthz")
    if rate is None:
        return Row(name=name, ours="wrk failed", verdict=Verdict.FAIL)
    note = "" if still_stub is not None and APP_MARK not in still_stub.body else " (app took over)"
    return Row(name=name, ours=f"{rate:,.0f} req/s{note}", peers="wrk -c16, 127.0.0.1",
               data={"requests_per_s": rate})


def _after_handoff(ctx: Context) -> list[Row]:
    latency_name, latency_target = NAMES[3]
    wrk_name, wrk_target = NAMES[4]
    with ExitStack() as stack:
        ours = _start(ctx, stack, True, tag="handoff")
        bare = _start(ctx, stack, False, tag="handoff")
        if _wait_answer(ours, 30.0, APP_MARK) is None or _wait_answer(bare, 30.0) is None:
            return [
                Row(name=latency_name, ours="the app never took over", target=latency_target,
                    verdict=Verdict.FAIL),
                unavailable(wrk_name, "the app never took over", wrk_target),
            ]
        latency = _latency_row(ctx, ours.port, bare.port)
        throughput = _throughput_row(ctx, ours.port, bare.port)
    return [latency, throughput]


def _latency_row(ctx: Context, ours_port: int, bare_port: int) -> Row:
    name, target = NAMES[3]
    blocks, per_block = (5, 100) if ctx.quick else (15, 200)
    samples: dict[int, list[float]] = {ours_port: [], bare_port: []}
    connections = {port: Connection(port, 5.0) for port in samples}
    try:
        for connection in connections.values():  # warm-up, not measured
            for _ in range(50):
                connection.get("/")
        for _ in Budget(blocks, 60):
            for port, connection in connections.items():
                for _ in range(per_block):
                    sent = time.perf_counter()
                    connection.get("/")
                    samples[port].append(time.perf_counter() - sent)
    finally:
        for connection in connections.values():
            connection.close()
    ours, bare = median(samples[ours_port]), median(samples[bare_port])
    value = ratio(ours, bare)
    return Row(
        name=name,
        ours=f"{ms(ours)} (p90 {ms(p90(samples[ours_port]))}, n={len(samples[ours_port])})",
        peers=f"bare uvicorn {ms(bare)} (p90 {ms(p90(samples[bare_port]))})",
        ratio=f"{value:.2f}x bare",
        target=target,
        verdict=judge(value <= LATENCY_TARGET),
        data={"supervisor_p50_s": ours, "bare_p50_s": bare},
    )


def _throughput_row(ctx: Context, ours_port: int, bare_port: int) -> Row:
    name, target = NAMES[4]
    if shutil.which("wrk") is None:
        return unavailable(name, "wrk not installed (apt-get install wrk)", target)
    # Two servers measured in turn on a shared 2-core machine: five alternated
    # rounds and medians, or the machine's drift decides the verdict.
    rounds, seconds = (1, 2.0) if ctx.quick else (5, 3.0)
    rates: dict[int, list[float]] = {ours_port: [], bare_port: []}
    for _ in Budget(rounds, 90):
        for port in rates:  # alternated, so drifts of the machine hit both
            rate = _wrk(port, "/", seconds)
            if rate is not None:
                rates[port].append(rate)
    if not rates[ours_port] or not rates[bare_port]:
        return Row(name=name, ours="wrk failed", target=target, verdict=Verdict.FAIL)
    ours, bare = median(rates[ours_port]), median(rates[bare_port])
    value = ratio(ours, bare)
    return Row(
        name=name,
        ours=f"{ours:,.0f} req/s",
        peers=f"bare uvicorn {bare:,.0f} req/s",
        ratio=f"{value:.3f}x bare",
        target=target,
        verdict=judge(value >= THROUGHPUT_TARGET),
        data={"supervisor_rps": rates[ours_port], "bare_rps": rates[bare_port]},
    )


def _early_reject(ctx: Context) -> Row:
    """``--early-requests reject``: a request for the app while it imports gets 503 at once.

    Timed on fresh connections, alternated with /healthz from the same stub.
    """
    name, _ = NAMES[5]
    if not ctx.supports("--early-requests"):
        return unavailable(name, "not available yet (no --early-requests)")
    rejected: list[float] = []
    health: list[float] = []
    statuses: set[int] = set()
    with ExitStack() as stack:
        started = _start(ctx, stack, True, SLOW_IMPORT_S + 30.0, tag="reject",
                         options=("--early-requests", "reject"))
        if _wait_answer(started, 15.0) is None:
            return Row(name=name, ours="never answered", verdict=Verdict.FAIL)
        for _ in Budget(10 if ctx.quick else 40, 20):
            for path, into in (("/early", rejected), ("/healthz", health)):
                sent = time.perf_counter()
                response = get_once(started.port, path, timeout=5.0)
                if response is not None:
                    into.append(time.perf_counter() - sent)
                    if path == "/early":
                        statuses.add(response.status)
    if not rejected:
        return Row(name=name, ours="no answer", verdict=Verdict.FAIL)
    return Row(
        name=name,
        ours=f"{ms(median(rejected))} (p90 {ms(p90(rejected))}, n={len(rejected)}, "
        f"status {'/'.join(str(s) for s in sorted(statuses))})",
        peers=f"stub /healthz {ms(median(health))}" if health else "",
        ratio=f"{ratio(median(rejected), median(health)):.2f}x /healthz" if health else "",
        data={"early_s": rejected, "healthz_s": health},
    )
