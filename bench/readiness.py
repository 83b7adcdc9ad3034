"""readiness: how soon, and at what cost, the supervisor sees that the app is ready.

* ``epoll seen vs startup line``: uvicorn on a listener the bench bound
  (``--fd``), with a lifespan startup of 1 s. The bench polls what the
  supervisor polls (the listening socket in an epoll set of the server's
  tree, from /proc) every 5 ms while reading uvicorn's stderr; the figure is
  the time from "Application startup complete." to the socket being seen.
* ``one /proc check``: the cost of that check on uvicorn with 2 workers.
* ``poll-based server, accept probe``: a systemd-protocol server that waits
  with poll(2), which /proc cannot show; the supervisor's ``ready_after_s``
  (from its report) against the same server's first answer when run bare.
* ``startup timeout 1 s``: an app that hangs at import, under
  ``--startup-timeout 1s``: exec to the supervisor's exit (SIGABRT for the
  stack dump at 1 s, then SIGKILL 2 s later if the dump did not end it).

The apps are the test suite's children (``tests/children``).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from common import (
    LOCALHOST,
    PYTHON,
    Budget,
    Context,
    Row,
    Verdict,
    exit_time,
    free_port,
    judge,
    median,
    ms,
    p90,
    ratio,
    spawn,
    unavailable,
)
from web import get_once

TESTS_CHILDREN = Path(__file__).resolve().parent.parent / "tests" / "children"
NAMES = (
    ("readiness: epoll seen vs startup line", ""),
    ("readiness: one /proc check, 2 workers", "<= 10 ms"),
    ("readiness: poll-based server, accept probe", ""),
    ("readiness: startup timeout 1 s, exec to exit", "< 3 s"),
)
CHECK_TARGET_S = 0.010
TIMEOUT_EXIT_TARGET_S = 3.0


def _proc_readiness() -> Optional[tuple[Callable[[int], list[int]],
                                        Callable[[list[int], int], bool]]]:
    try:
        from supervisor.readiness import descendants, socket_in_epoll
    except ImportError:
        return None
    return descendants, socket_in_epoll


def run(ctx: Context) -> list[Row]:
    if not (TESTS_CHILDREN / "app_slow_start.py").exists():
        return [unavailable(name, "tests/children not found", target) for name, target in NAMES]
    return [_epoll_vs_log(ctx), _check_cost(ctx), _accept_probe(ctx), _startup_timeout(ctx)]


def _uvicorn_on_fd(ctx: Context, sock: socket.socket, *extra: str) -> list[str]:
    return [PYTHON, "-m", "uvicorn", "app_slow_start:app", "--app-dir", str(TESTS_CHILDREN),
            "--fd", str(sock.fileno()), *extra]


def _epoll_vs_log(ctx: Context) -> Row:
    name, target = NAMES[0]
    functions = _proc_readiness()
    if functions is None:
        return unavailable(name, "supervisor.readiness has no socket_in_epoll", target)
    descendants, socket_in_epoll = functions
    deltas: list[float] = []
    for _ in Budget(2 if ctx.quick else 8, 30 if ctx.quick else 90):
        with socket.socket() as listener:
            listener.bind((LOCALHOST, 0))
            listener.listen(128)
            inode = os.fstat(listener.fileno()).st_ino
            env = {**ctx.env, "APP_STARTUP_S": "1", "PYTHONUNBUFFERED": "1"}
            with spawn(_uvicorn_on_fd(ctx, listener), env, pass_fds=(listener.fileno(),),
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE) as process:
                assert process.stderr is not None
                fd = process.stderr.fileno()
                os.set_blocking(fd, False)
                log, logged_at, ready_at = b"", None, None
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and (logged_at is None or ready_at is None):
                    if select.select([fd], [], [], 0.005)[0]:
                        log += os.read(fd, 65536)
                        if logged_at is None and b"Application startup complete." in log:
                            logged_at = time.monotonic()
                    if ready_at is None and socket_in_epoll(descendants(process.pid), inode):
                        ready_at = time.monotonic()
                    if process.poll() is not None:
                        break
                if logged_at is not None and ready_at is not None:
                    deltas.append(ready_at - logged_at)
    if not deltas:
        return Row(name=name, ours="never seen ready", target=target, verdict=Verdict.FAIL)
    absolute = [abs(d) for d in deltas]
    return Row(name=name, ours=f"{ms(median(absolute))} apart (p90 {ms(p90(absolute))}, "
               f"n={len(deltas)})", peers="uvicorn's own log line",
               data={"ready_minus_log_s": deltas})


def _check_cost(ctx: Context) -> Row:
    name, target = NAMES[1]
    functions = _proc_readiness()
    if functions is None:
        return unavailable(name, "supervisor.readiness has no socket_in_epoll", target)
    descendants, socket_in_epoll = functions
    with socket.socket() as listener:
        listener.bind((LOCALHOST, 0))
        listener.listen(128)
        inode = os.fstat(listener.fileno()).st_ino
        env = {**ctx.env, "APP_STARTUP_S": "0"}
        with spawn(_uvicorn_on_fd(ctx, listener, "--workers", "2"), env,
                   pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not socket_in_epoll(
                    descendants(process.pid), inode):
                time.sleep(0.02)
            tree = descendants(process.pid)
            timings = []
            for _ in range(50 if ctx.quick else 200):
                started = time.perf_counter()
                socket_in_epoll(descendants(process.pid), inode)
                timings.append(time.perf_counter() - started)
    cost = median(timings)
    return Row(name=name, ours=f"{ms(cost)} (p90 {ms(p90(timings))}, {len(tree)} processes)",
               peers="every ~20 ms during startup only", target=target,
               verdict=judge(cost <= CHECK_TARGET_S), data={"check_s": timings})


def _accept_probe(ctx: Context) -> Row:
    name, target = NAMES[2]
    server = TESTS_CHILDREN / "e2e_poll_server.py"
    if not server.exists():
        return unavailable(name, "tests/children/e2e_poll_server.py not found", target)
    ours: list[float] = []
    bare: list[float] = []
    for index in Budget(2 if ctx.quick else 5, 40 if ctx.quick else 120):
        report = ctx.workdir / f"readiness-accept-{index}.json"
        port = free_port()
        argv = [*ctx.supervisor.argv, "--report-file", str(report), "--handoff", "systemd",
                "--host", LOCALHOST, "--port", str(port), "--", PYTHON, str(server)]
        log = ctx.workdir / f"readiness-accept-{index}.err"
        with open(log, "wb") as stderr, spawn(argv, ctx.env, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL,
                                              stderr=stderr) as process:
            # The app may answer (the stub stepped aside) a moment before it is seen ready.
            if _wait_app(port, 30.0) and _wait_log(log, b"ready after", 30.0):
                process.terminate()
                exit_time(process, 30.0)
        try:
            ready = json.loads(report.read_text()).get("ready_after_s")
        except (OSError, ValueError):
            ready = None
        if ready is not None:
            ours.append(float(ready))
        bare_answer = _bare_first_answer(ctx, server)
        if bare_answer is not None:
            bare.append(bare_answer)
    if not ours:
        return Row(name=name, ours="never seen ready", target=target, verdict=Verdict.FAIL)
    return Row(
        name=name,
        ours=f"ready after {ms(median(ours))} (n={len(ours)})",
        peers=f"bare server answers after {ms(median(bare))}" if bare else "",
        ratio=f"{ratio(median(ours), median(bare)):.2f}x bare" if bare else "",
        data={"ready_after_s": ours, "bare_first_answer_s": bare},
    )


def _wait_app(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = get_once(port, "/healthz", timeout=1.0)
        if answer is not None and b'"app": true' in answer.body:
            return True
        time.sleep(0.005)
    return False


def _wait_log(path: Path, text: bytes, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_bytes():
            return True
        time.sleep(0.01)
    return False


def _bare_first_answer(ctx: Context, server: Path) -> Optional[float]:
    """The same server given a socket by systemd's protocol directly: exec to first answer."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOCALHOST, 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        script = (f"import os, sys; os.dup2({fd}, 3); os.environ['LISTEN_FDS'] = '1'; "
                  "os.environ['LISTEN_PID'] = str(os.getpid()); "
                  f"os.execv(sys.executable, [sys.executable, {str(server)!r}])")
        began = time.monotonic()
        with spawn([PYTHON, "-c", script], ctx.env, pass_fds=(fd,),
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL):
            if not _wait_app(port, 30.0):
                return None
            return time.monotonic() - began


def _startup_timeout(ctx: Context) -> Row:
    name, target = NAMES[3]
    hang = TESTS_CHILDREN / "e2e_hang.py"
    if not hang.exists():
        return unavailable(name, "tests/children/e2e_hang.py not found", target)
    took: list[float] = []
    for _ in Budget(2 if ctx.quick else 5, 40 if ctx.quick else 90):
        port = free_port()
        argv = [*ctx.supervisor.argv, "--startup-timeout", "1s", "--host", LOCALHOST,
                "--port", str(port), "--", PYTHON, "-m", "uvicorn", "e2e_hang:app",
                "--app-dir", str(TESTS_CHILDREN), "--host", LOCALHOST, "--port", str(port)]
        began = time.monotonic()
        with spawn(argv, ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL) as process:
            ended = exit_time(process, 30.0)
        if ended is not None:
            took.append(ended - began)
    if not took:
        return Row(name=name, ours="never exited", target=target, verdict=Verdict.FAIL)
    value = median(took)
    return Row(name=name, ours=f"{value:.2f} s (p90 {p90(took):.2f} s, n={len(took)})",
               peers="SIGKILL would come at 3 s", target=target,
               verdict=judge(value < TIMEOUT_EXIT_TARGET_S), data={"exit_s": took})
